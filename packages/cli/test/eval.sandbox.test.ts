/**
 * The sandbox and `eval score` for code and GPQA: a file of hand-made completions (right and
 * wrong programs, an infinite loop, a sleep, an exception, a 64 GB allocation, two code blocks,
 * no code, functional LeetCode-style tests, a program printing HF_TOKEN while the user's token is
 * set, an output flood, a fork bomb, a network call) re-scored in-process, each verdict checked;
 * then what the sandbox promises: an empty environment, a removed work folder, nothing left
 * running, and the protections it reports.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { rescore } from '../src/eval/rescore.ts';
import { Sandbox } from '../src/eval/sandbox.ts';
import type { Execution } from '../src/eval/scorers.ts';
import { hasPython, NO_PYTHON, sandboxExclusive } from './helpers/python.ts';

const py = (code: string) => `Here is my solution.\n\n\`\`\`python\n${code}\n\`\`\`\n`;
const stdin = (pairs: [string, string][]) => ({
  tests: pairs.map(([input, output]) => ({ input, output, testtype: 'stdin' })),
});
const addTests = stdin([
  ['1 2\n', '3\n'],
  ['10 -4\n', '6\n'],
  ['5 5\n', '10\n'],
]);
const SECRET = 'hf_sandboxTestSecretToken123';

interface Case {
  name: string;
  completion: string;
  answer: unknown;
  correct: boolean;
  status: Execution['status'];
  detail?: RegExp;
}

const CASES: Case[] = [
  {
    name: 'correct',
    completion: py('a, b = map(int, input().split())\nprint(a + b)'),
    answer: addTests,
    correct: true,
    status: 'passed',
  },
  {
    name: 'wrong',
    completion: py('a, b = map(int, input().split())\nprint(a - b)'),
    answer: addTests,
    correct: false,
    status: 'wrong_answer',
    detail: /test 1\/3: wrong answer at line 1: "-1" ≠ "3"/,
  },
  {
    name: 'wrong on a private test',
    completion: py('a, b = map(int, input().split())\nprint(a + abs(b))'),
    answer: addTests,
    correct: false,
    status: 'wrong_answer',
    detail: /test 2\/3/,
  },
  {
    name: 'infinite loop',
    completion: py('while True:\n    pass'),
    answer: addTests,
    correct: false,
    status: 'timeout',
  },
  {
    name: 'sleeps',
    completion: py('import time\ntime.sleep(1000)'),
    answer: addTests,
    correct: false,
    status: 'timeout',
    detail: /wall-clock/,
  },
  {
    name: 'exception',
    completion: py('a, b = map(int, input().split())\nraise ValueError("no luck")'),
    answer: addTests,
    correct: false,
    status: 'runtime_error',
    detail: /ValueError \(line 2\): no luck/,
  },
  {
    name: '64 GB allocation',
    completion: py('buf = bytearray(64 * 2**30)\nprint(3)'),
    answer: addTests,
    correct: false,
    status: 'memory',
    detail: /MemoryError/,
  },
  {
    name: 'two code blocks, the last right',
    completion: py('print(0)') + '\nOn second thought:\n\n' + py('a, b = map(int, input().split())\nprint(a + b)'),
    answer: addTests,
    correct: true,
    status: 'passed',
  },
  {
    name: 'two code blocks, the last wrong',
    completion: py('a, b = map(int, input().split())\nprint(a + b)') + '\nOr shorter:\n\n' + py('print(3)'),
    answer: addTests,
    correct: false,
    status: 'wrong_answer',
    detail: /test 2\/3/,
  },
  {
    name: 'no code',
    completion: 'The answer is to add the numbers. print(a + b)',
    answer: addTests,
    correct: false,
    status: 'no_code',
  },
  {
    name: 'unclosed block (cut at max tokens)',
    completion: '```python\nprint(3)\n',
    answer: addTests,
    correct: false,
    status: 'no_code',
  },
  {
    name: 'functional, right (a tuple counts as a list)',
    completion: py(
      'class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n                return (seen[target - x], i)\n            seen[x] = i',
    ),
    answer: {
      func_name: 'twoSum',
      tests: [
        { input: '[2, 7, 11, 15]\n9', output: '[0, 1]', testtype: 'functional' },
        { input: '[3, 2, 4]\n6', output: '[1, 2]', testtype: 'functional' },
      ],
    },
    correct: true,
    status: 'passed',
  },
  {
    name: 'functional, wrong',
    completion: py('class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]'),
    answer: {
      func_name: 'twoSum',
      tests: [
        { input: '[2, 7, 11, 15]\n9', output: '[0, 1]', testtype: 'functional' },
        { input: '[3, 2, 4]\n6', output: '[1, 2]', testtype: 'functional' },
      ],
    },
    correct: false,
    status: 'wrong_answer',
    detail: /test 2\/2: returned \[0, 1\], expected \[1, 2\]/,
  },
  {
    name: 'functional, the method missing',
    completion: py('class Solution:\n    def other(self):\n        return 1'),
    answer: { func_name: 'twoSum', tests: [{ input: '[1]\n1', output: '[0, 0]', testtype: 'functional' }] },
    correct: false,
    status: 'runtime_error',
    detail: /AttributeError/,
  },
  {
    name: 'prints HF_TOKEN while the user has one',
    completion: py('import os\nprint(os.environ.get("HF_TOKEN"))'),
    answer: stdin([['', 'None\n']]),
    correct: true,
    status: 'passed',
  },
  {
    name: 'output flood',
    completion: py('while True:\n    print("x" * 4096)'),
    answer: addTests,
    correct: false,
    status: 'output_limit',
  },
  {
    name: 'numbers compared as numbers',
    completion: py('print("3.000")\nprint("1e3  -0")'),
    answer: stdin([['', '3\n1000 0\n']]),
    correct: true,
    status: 'passed',
  },
  {
    name: 'a line too many',
    completion: py('print(3)\nprint()\nprint(4)'),
    answer: stdin([['', '3\n']]),
    correct: false,
    status: 'wrong_answer',
    detail: /3 output lines, expected 1/,
  },
  {
    name: 'exit() after the answer',
    completion: py('print(3)\nexit()\nprint(4)'),
    answer: stdin([['', '3\n']]),
    correct: true,
    status: 'passed',
  },
];

describe('eval: the sandbox and eval score (livecodebench, gpqa)', function () {
  sandboxExclusive();
  this.timeout(120_000);
  let sandbox: Sandbox;
  const savedToken = process.env.HF_TOKEN;

  before(function () {
    if (!hasPython) {
      console.log(`      ${NO_PYTHON}`);
      this.skip();
    }
    sandbox = new Sandbox({ timeoutSeconds: 0.5, wallSeconds: 2, workers: 4 });
    process.env.HF_TOKEN = SECRET;
  });
  after(() => {
    if (savedToken === undefined) delete process.env.HF_TOKEN;
    else process.env.HF_TOKEN = savedToken;
  });

  it('gives the right verdict on each hand-made case', async () => {
    const t0 = performance.now();
    const text = CASES.map((c) => JSON.stringify({ completion: c.completion, answer: c.answer })).join('\n') + '\n';
    const out = (await rescore(text, 'cases.jsonl', 'livecodebench', sandbox)).map(
      (l) => JSON.parse(l) as { correct: boolean; extracted: string | null; reason?: string; execution: Execution },
    );
    console.log(`      ${CASES.length} cases scored in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    assert.equal(out.length, CASES.length);
    CASES.forEach((c, i) => {
      const v = out[i];
      assert.equal(v.execution.status, c.status, `${c.name}: ${v.execution.status} (${v.execution.detail})`);
      assert.equal(v.correct, c.correct, c.name);
      if (c.detail) assert.match(v.execution.detail ?? '', c.detail, c.name);
      if (c.status === 'no_code') assert.equal(v.extracted, null, c.name);
      else
        assert.ok(
          v.extracted && c.completion.includes(v.extracted),
          `${c.name}: the program is a block of the completion`,
        );
    });
    // the last block of two is the one that ran
    assert.equal(out[8].extracted, 'print(3)');
    assert.ok(!JSON.stringify(out).includes(SECRET), 'the token is nowhere in the output');
  });

  it('keeps to its promises: empty environment, a fresh folder removed afterwards, nothing left running', async () => {
    const before = new Set(fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('moi-sandbox-')));
    const r = await sandbox.run(
      'import os, json, subprocess, time\n' +
        'kid = subprocess.Popen(["sleep", "1000"])\n' + // left running: must not outlive the test
        'print(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "files": sorted(os.listdir("."))}))',
      { mode: 'stdin', input: '', expectedBytes: 100 },
    );
    assert.equal(r.status, 'ok', r.detail);
    const seen = JSON.parse(r.stdout) as { env: Record<string, string>; cwd: string; files: string[] };
    assert.deepEqual(Object.keys(seen.env).sort(), ['HOME', 'LANG', 'PATH', 'TMPDIR']);
    assert.equal(seen.env.HOME, seen.cwd);
    assert.deepEqual(seen.files, ['solution.py']);
    assert.ok(!fs.existsSync(seen.cwd), 'the work folder is removed');
    const after = fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('moi-sandbox-') && !before.has(f));
    assert.deepEqual(after, [], 'no folder left behind');
    await new Promise((r) => setTimeout(r, 200));
    const left = spawnSync('pgrep', ['-f', '^sleep 1000$'], { encoding: 'utf8' });
    assert.equal(left.stdout.trim(), '', "the program's child was killed with it");
    // the run's metadata says what protected the host
    const p = await sandbox.protections();
    assert.deepEqual(p.env, ['PATH', 'HOME', 'TMPDIR', 'LANG']);
    assert.equal(p.limits.cpu_seconds, 0.5);
    assert.equal(p.workers, 4);
    if (process.geteuid?.() === 0) assert.match(p.user, /nobody|root/); // never root unless setpriv is missing, and then it says so
    if (!p.network_namespace)
      assert.ok(
        p.degraded.some((d) => /network/.test(d)),
        'a missing network namespace is recorded',
      );
    console.log(
      `      sandbox here: ${p.user}; network namespace ${p.network_namespace}, PID namespace ${p.pid_namespace}${p.degraded.length ? `; ${p.degraded.join('; ')}` : ''}`,
    );
  });

  it('cuts the network where a network namespace is allowed, and stops a fork bomb', async function () {
    const p = await sandbox.protections();
    const net = await sandbox.run(
      'import socket\ns = socket.create_connection(("1.1.1.1", 53), timeout=2)\nprint("connected")',
      { mode: 'stdin', input: '', expectedBytes: 10 },
    );
    if (p.network_namespace) {
      assert.equal(net.status, 'runtime_error');
      assert.match(net.detail, /OSError|unreachable/i);
    }
    const bomb = await sandbox.run('import os\nwhile True:\n    os.fork()', {
      mode: 'stdin',
      input: '',
      expectedBytes: 10,
    });
    assert.notEqual(bomb.status, 'ok', bomb.detail);
    await new Promise((r) => setTimeout(r, 200));
    const left = spawnSync('pgrep', ['-f', 'os.fork\\(\\)'], { encoding: 'utf8' });
    assert.equal(left.stdout.trim(), '', 'no process of the bomb is left');
  });

  it('gpqa: the letter of the last "Answer:" line; none or an invalid one counted apart', async () => {
    const cases: [string, string, boolean, string | null][] = [
      ['Thinking... so the third.\nAnswer: C', 'C', true, 'C'],
      ['**Answer: B**', 'C', false, 'B'],
      ['Answer: A is tempting.\nLooking again...\nAnswer: (D)', 'D', true, 'D'],
      ['Final answer: $\\boxed{A}$', 'A', true, 'A'],
      ['Answer: E', 'A', false, null],
      ['Answer: the second one', 'B', false, null],
      ['I think it is B.', 'B', false, null],
    ];
    const text = cases.map(([completion, answer]) => JSON.stringify({ completion, answer })).join('\n');
    const out = (await rescore(text, 'g.jsonl', 'gpqa')).map(
      (l) => JSON.parse(l) as { correct: boolean; extracted: string | null; format_only: boolean },
    );
    assert.deepEqual(
      out.map((v) => [v.correct, v.extracted]),
      cases.map(([, , correct, letter]) => [correct, letter]),
    );
    assert.deepEqual(
      out.map((v) => v.format_only),
      [false, true, false, false, false, false, false],
    );
    await assert.rejects(
      rescore('{"completion": "x", "answer": "F"}\n', 'bad.jsonl', 'gpqa'),
      /bad\.jsonl:1: a gpqa answer is the correct letter/,
    );
    await assert.rejects(
      rescore('{"completion": "x", "answer": {"tests": []}}\n', 'bad.jsonl', 'livecodebench', sandbox),
      /bad\.jsonl:1: a livecodebench answer is/,
    );
    await assert.rejects(
      rescore(
        '{"completion": "x", "answer": {"tests": [{"input": "", "output": "", "testtype": "functional"}]}}\n',
        'bad.jsonl',
        'livecodebench',
        sandbox,
      ),
      /bad\.jsonl:1: functional tests need "func_name"/,
    );
  });
});
