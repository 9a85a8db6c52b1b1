/**
 * LiveCodeBench's pieces against independent expectations: the prompt text of lcb_runner's generic
 * chat format, release → files, output comparison by its checker's rules (numbers checked against
 * Python's own Decimal), the last python block, private tests encoded by Python itself (base64 of
 * zlib of pickle) and decoded here without unpickling anything but a string, and rows read in a
 * date window with their tests read back on demand.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  compareOutput,
  decodeTests,
  extractPython,
  lcbMessages,
  parseDecimal,
  readLcbRows,
  releaseFiles,
  scanJsonl,
  unpickleString,
} from '../src/eval/livecodebench.ts';
import { hasPython, python, sandboxExclusive } from './helpers/python.ts';

describe('eval: livecodebench', () => {
  sandboxExclusive();
  it("prompts in lcb_runner's generic chat format, with and without starter code", () => {
    const [sys, user] = lcbMessages('Add two numbers.', '');
    assert.deepEqual(sys, {
      role: 'system',
      content:
        'You are an expert Python programmer. You will be given a question (problem specification) and will generate a correct Python program that matches the specification and passes all tests.',
    });
    assert.equal(
      user.content,
      '### Question:\nAdd two numbers.\n\n### Format: Read the inputs from stdin solve the problem and write the answer to stdout ' +
        '(do not directly test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, it reads the inputs, ' +
        'runs the algorithm and writes output to STDOUT.\n```python\n# YOUR CODE HERE\n```\n\n### Answer: (use the provided format with backticks)\n\n',
    );
    const [, withStarter] = lcbMessages(
      'Two sum.',
      'class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ',
    );
    assert.equal(
      withStarter.content,
      '### Question:\nTwo sum.\n\n### Format: You will use the following starter code to write the solution to the problem and enclose your code within delimiters.\n' +
        '```python\nclass Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        \n```\n\n### Answer: (use the provided format with backticks)\n\n',
    );
  });

  it("maps releases to the dataset's files as its loading script does", () => {
    assert.deepEqual(releaseFiles('release_v1'), ['test.jsonl']);
    assert.deepEqual(releaseFiles('release_v3'), ['test.jsonl', 'test2.jsonl', 'test3.jsonl']);
    assert.deepEqual(releaseFiles('v1'), ['test.jsonl']);
    assert.deepEqual(releaseFiles('v5'), ['test5.jsonl']);
    assert.deepEqual(releaseFiles('v2_v4'), ['test2.jsonl', 'test3.jsonl', 'test4.jsonl']);
    assert.equal(releaseFiles('release_latest'), null);
    assert.throws(() => releaseFiles('v3_v1'), /--release must be/);
    assert.throws(() => releaseFiles('latest'), /--release must be/);
  });

  it('compares output as its checker does: stripped lines, then numbers as Decimals', () => {
    const ok: [string, string][] = [
      ['3\n', '3'],
      ['  3  \n\n', '3'],
      ['3\n4', '3\n4\n'],
      ['1 2', '1  2'],
      ['1.0', '1'],
      ['1e2', '100'],
      ['-0', '0'],
      ['0.50 2', '.5 2.0'],
      ['inf', 'Infinity'],
      ['nan', 'nan'],
      ['1_000', '1000'],
      ['3\r\n4\r\n', '3\n4'],
      ['Yes', 'Yes'],
      ['', ''],
    ];
    const wrong: [string, string, RegExp][] = [
      ['abc', 'abd', /line 1/],
      ['Yes', 'YES', /line 1/],
      ['3\n\n4', '3\n4', /3 output lines, expected 2/],
      ['0.1', '0.10000000000000001', /line 1/],
      ['nan', 'NaN', /line 1/],
      ['1 2 3', '1 2', /line 1/],
      ['1\n2', '1\n3', /line 2/],
      ['', '3', /line 1/],
    ];
    for (const [g, e] of ok) assert.equal(compareOutput(g, e), null, `${JSON.stringify(g)} vs ${JSON.stringify(e)}`);
    for (const [g, e, why] of wrong)
      assert.match(compareOutput(g, e) ?? 'equal', why, `${JSON.stringify(g)} vs ${JSON.stringify(e)}`);
  });

  it("reads numbers as Python's Decimal does (checked against Python)", function () {
    if (!hasPython) this.skip();
    const lits = [
      '1',
      '1.0',
      '-0',
      '+0.000',
      '.5',
      '5.',
      '1e3',
      '1E+3',
      '10e-1',
      '1_000',
      '1__0',
      '_1',
      '1_',
      'inf',
      '-Infinity',
      'INF',
      'nan',
      'sNaN',
      'NaN12',
      '0x10',
      '1.2.3',
      '',
      '.',
      'e5',
      '1e',
      '١',
      '12345678901234567890.12345678901234567890',
      '1e999999',
      '3.14159',
    ];
    const parsed = JSON.parse(
      python(
        'import json, sys\nfrom decimal import Decimal\nout = []\nfor s in json.load(sys.stdin):\n    try:\n        Decimal(s); out.append(True)\n    except Exception:\n        out.append(False)\nprint(json.dumps(out))',
        JSON.stringify(lits),
      ),
    ) as boolean[];
    // ASCII digits only here: a non-ASCII digit ('١') is the one literal Python takes and we refuse
    assert.deepEqual(
      lits.map((s) => parseDecimal(s) !== null),
      parsed.map((p, i) => (lits[i] === '١' ? false : p)),
    );
    const pairs: [string, string][] = [
      ['1', '1.000'],
      ['-0', '0.0'],
      ['1e3', '1000'],
      ['0.1', '0.10000000000000001'],
      ['inf', '-inf'],
      ['Infinity', 'inf'],
      ['nan', 'nan'],
      ['2.50', '2.5'],
      ['100', '1e2'],
      ['7', '-7'],
    ];
    const equal = JSON.parse(
      python(
        'import json, sys\nfrom decimal import Decimal\nprint(json.dumps([Decimal(a) == Decimal(b) for a, b in json.load(sys.stdin)]))',
        JSON.stringify(pairs),
      ),
    ) as boolean[];
    // the checker takes equal text first, then Decimal equality
    assert.deepEqual(
      pairs.map(([a, b]) => compareOutput(a, b) === null),
      equal.map((e, i) => e || pairs[i][0] === pairs[i][1]),
    );
  });

  it('takes the last complete python block', () => {
    assert.equal(extractPython('```python\na = 1\n```\ntext\n```python\nb = 2\n```'), 'b = 2');
    assert.equal(extractPython('```python\na = 1\n```\n```\nplain\n```'), 'a = 1'); // a tagged block wins over a later plain one
    assert.equal(extractPython('```\nplain\n```\n```text\nout\n```'), 'plain'); // another language is not a program
    assert.equal(extractPython('```py\nx = 1\n```\n```python\ny = 2\n'), 'x = 1'); // an unclosed block is not a program
    assert.equal(extractPython('  ```Python3\n  z = 3\n  ```'), '  z = 3'); // indented fences
    assert.equal(extractPython('````python\nq = 4\n````'), 'q = 4');
    assert.equal(extractPython('no code at all'), null);
    assert.equal(extractPython('```python\n```'), ''); // an empty program (it will fail its tests)
  });

  it('decodes private tests encoded by Python (base64 of zlib of pickle) and refuses other pickles', function () {
    if (!hasPython) this.skip();
    const tests = [
      { input: '1 2\n', output: '3\n', testtype: 'stdin' },
      { input: 'é' + 'x'.repeat(300), output: '✓', testtype: 'stdin' },
    ];
    // protocols 1–5, then a large string (BINUNICODE at the default protocol), then a pickle that would call a function
    const big = [{ input: 'y'.repeat(70_000), output: '1', testtype: 'functional' }];
    const [p1, p2, p3, p4, p5, encBig, evilText] = python(
      'import base64, json, os, pickle, sys, zlib\n' +
        'small, big = json.load(sys.stdin)\nenc = lambda s, p=None: base64.b64encode(zlib.compress(pickle.dumps(s, protocol=p))).decode()\n' +
        'print("\\n".join([enc(small, p) for p in range(1, 6)] + [enc(big), base64.b64encode(pickle.dumps(os.system)).decode()]))',
      JSON.stringify([JSON.stringify(tests), JSON.stringify(big)]),
    )
      .trim()
      .split('\n');
    for (const [i, enc] of [p1, p2, p3, p4, p5].entries())
      assert.deepEqual(decodeTests(enc, 'private_test_cases'), tests, `protocol ${i + 1}`);
    assert.deepEqual(decodeTests(encBig, 'x'), big);
    assert.deepEqual(decodeTests(JSON.stringify(tests), 'x'), tests);
    // refused, not run
    const evil = Buffer.from(evilText, 'base64');
    assert.throws(() => unpickleString(evil), /only a pickled string is accepted/);
    assert.throws(
      () => decodeTests('bm90IHpsaWI=', 'private_test_cases'),
      /private_test_cases is neither JSON nor base64 of zlib/,
    );
  });

  it('reads rows in a date window (the end at 00:00, as its loader), and their tests only when asked', async function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-lcb-'));
    try {
      const row = (id: string, date: string, extra: Record<string, unknown> = {}) => ({
        question_title: `T${id}`,
        question_content: `Q${id}`,
        platform: 'atcoder',
        question_id: id,
        contest_id: 'c',
        contest_date: date,
        starter_code: '',
        difficulty: 'easy',
        public_test_cases: JSON.stringify([{ input: '1\n', output: '1\n', testtype: 'stdin' }]),
        private_test_cases: '[]',
        metadata: '{}',
        ...extra,
      });
      const file = path.join(dir, 'test.jsonl');
      const rows = [
        row('a', '2023-05-01T00:00:00'),
        row('b', '2023-09-01T00:00:00', {
          starter_code: 'class Solution:\n    def f(self, x: int) -> int:\n        ',
          metadata: JSON.stringify({ func_name: 'f' }),
          public_test_cases: JSON.stringify([{ input: '2', output: '4', testtype: 'functional' }]),
          private_test_cases: JSON.stringify([{ input: '3', output: '6', testtype: 'functional' }]),
        }),
        row('c', '2024-01-01T00:00:00'),
        row('d', '2024-01-01T12:00:00'),
      ];
      fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
      const got = await readLcbRows([file], { start: '2023-06-01', end: '2024-01-01' });
      assert.deepEqual(
        got.map((r) => r.info.question_id),
        ['b', 'c'],
      );
      assert.equal(got[0].info.func_name, 'f');
      assert.match(got[0].messages[1].content, /### Format: You will use the following starter code/);
      assert.deepEqual(got[0].tests(), {
        func_name: 'f',
        tests: [
          { input: '2', output: '4', testtype: 'functional' },
          { input: '3', output: '6', testtype: 'functional' },
        ],
      });
      // the tests are read from the file when asked: a changed file shows
      assert.equal((await readLcbRows([file], {})).length, 4);
      // lines found across chunk boundaries, at the right byte offsets
      const seen: [string, number, number][] = [];
      await scanJsonl(file, (line, offset, length) => seen.push([line, offset, length]), 7);
      const text = fs.readFileSync(file);
      assert.equal(seen.length, 4);
      for (const [line, offset, length] of seen)
        assert.equal(text.subarray(offset, offset + length).toString('utf8'), line);
      // bad rows are named by file and line
      fs.writeFileSync(file, JSON.stringify(row('a', '2023-05-01')) + '\n{"question_content": 1}\n');
      await assert.rejects(
        readLcbRows([file], {}),
        /test\.jsonl:2: a livecodebench row needs a string "question_content"/,
      );
      fs.writeFileSync(file, JSON.stringify(row('a', '2023-05-01', { private_test_cases: 'garbage!' })) + '\n');
      const [bad] = await readLcbRows([file], {});
      assert.throws(() => bad.tests(), /test\.jsonl:1: private_test_cases is neither JSON nor base64/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
