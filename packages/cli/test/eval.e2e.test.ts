/**
 * GPQA and LiveCodeBench end to end, in-process (no CLI spawns):
 * - both tasks on local `jsonl:`-style data with the real stories260K model through the
 *   continuous-batching engine, two modes × two samples: results, summary (pass@k, paired
 *   statistics), report; a run stopped midway resumes to the uninterrupted run's results;
 * - LiveCodeBench with a scripted completer whose programs are known right, wrong, looping or
 *   missing: verdicts, execution outcomes, pass@1/pass@2, McNemar's counts and the report's
 *   execution reasons against hand-computed values, and resume mid-run with verdicts pending.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { Engine } from '@moi/engine';
import type { Completer, CompletionRequest, CompletionResult } from '../src/eval/completer.ts';
import { InProcessCompleter } from '../src/eval/in-process.ts';
import { runEval, type EvalSettings } from '../src/eval/runner.ts';
import type { ResultRecord, Summary } from '../src/eval/summary.ts';
import { loadEvalTask } from '../src/eval/tasks.ts';
import { hasPython, NO_PYTHON, sandboxExclusive } from './helpers/python.ts';

const shared = sharedDir();

const gpqaRows = [
  {
    Question: 'Which animal says moo?',
    'Correct Answer': 'a cow',
    'Incorrect Answer 1': 'a cat',
    'Incorrect Answer 2': 'a dog',
    'Incorrect Answer 3': 'a bird',
  },
  {
    Question: 'What colour is the sky on a clear day?',
    'Correct Answer': 'blue',
    'Incorrect Answer 1': 'green',
    'Incorrect Answer 2': 'red',
    'Incorrect Answer 3': 'black',
  },
  {
    Question: 'How many legs has a spider?',
    'Correct Answer': 'eight',
    'Incorrect Answer 1': 'six',
    'Incorrect Answer 2': 'four',
    'Incorrect Answer 3': 'ten',
  },
];

/** Two LiveCodeBench problems in the dataset's own row format: stdin (a + b) and functional (add). */
const lcbRows = [
  {
    question_title: 'A+B',
    question_content: 'Read two integers and print their sum.',
    platform: 'atcoder',
    question_id: 'abc000_a',
    contest_id: 'abc000',
    contest_date: '2024-09-01T00:00:00',
    starter_code: '',
    difficulty: 'easy',
    metadata: '{}',
    public_test_cases: JSON.stringify([{ input: '1 2\n', output: '3\n', testtype: 'stdin' }]),
    private_test_cases: JSON.stringify([
      { input: '-5 5\n', output: '0\n', testtype: 'stdin' },
      { input: '100 23\n', output: '123\n', testtype: 'stdin' },
    ]),
  },
  {
    question_title: 'Add',
    question_content: 'Return a + b.',
    platform: 'leetcode',
    question_id: '9001',
    contest_id: 'weekly-1',
    contest_date: '2024-10-01T00:00:00',
    starter_code: 'class Solution:\n    def add(self, a: int, b: int) -> int:\n        ',
    difficulty: 'easy',
    metadata: JSON.stringify({ func_name: 'add' }),
    public_test_cases: JSON.stringify([{ input: '1\n2', output: '3', testtype: 'functional' }]),
    private_test_cases: JSON.stringify([{ input: '-1\n1', output: '0', testtype: 'functional' }]),
  },
];

const readLines = (file: string) =>
  fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as ResultRecord);
/** A record without its timings (and with the step means rounded: batch composition moves their last float bits). */
const withoutTime = (r: ResultRecord) => {
  const { seconds: _s, execution, mean_entropy, mean_weight, ...rest } = r;
  const round = (x: number | null) => (x === null ? null : Math.round(x * 1e4) / 1e4);
  return {
    ...rest,
    mean_entropy: round(mean_entropy),
    mean_weight: round(mean_weight),
    ...(execution ? { execution: { ...execution, seconds: 0 } } : {}),
  };
};

function settingsFor(task: string, samples: number): EvalSettings {
  return {
    model: 'stories260K',
    task,
    modes: ['standard', 'moi'],
    samples,
    seed: 7,
    sampling: { temperature: 1 },
    maxTokens: 8,
    dtype: 'auto',
  };
}

/** Stops a run once `n` results are in its file. */
function stopAfter(file: string, n: number): AbortController {
  const ac = new AbortController();
  const timer = setInterval(() => {
    const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').length - 1 : 0;
    if (lines >= n) {
      ac.abort();
      clearInterval(timer);
    }
  }, 5);
  ac.signal.addEventListener('abort', () => clearInterval(timer));
  return ac;
}

describe('eval: gpqa and livecodebench end to end (in-process)', function () {
  sandboxExclusive();
  this.timeout(180_000);
  let tmp: string;
  let engine: Engine | null = null;

  before(async function () {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-eval-e2e-'));
    if (shared) engine = await Engine.load(path.join(shared, 'fixtures', 'stories260K'), { backend: 'wasm' });
  });
  after(() => {
    engine?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('gpqa: stories260K, two modes × two samples, stopped midway and resumed', async function () {
    if (!engine) {
      console.log(`      ${SHARED_MISSING}`);
      this.skip();
    }
    const data = path.join(tmp, 'gpqa.jsonl');
    fs.writeFileSync(data, gpqaRows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const spec = `gpqa:${data}`;
    const run = async (out: string, signal?: AbortSignal) => {
      const task = await loadEvalTask(spec, { seed: 7 });
      return runEval(task, settingsFor(spec, 2), {
        out,
        completer: new InProcessCompleter(engine!, 3),
        tokenizer: engine!.tokenizer,
        progress: false,
        passAt: [1, 2],
        signal,
      });
    };
    const whole = path.join(tmp, 'gpqa-whole');
    const cut = path.join(tmp, 'gpqa-cut');
    const a = await run(whole);
    const stop = stopAfter(path.join(cut, 'results.jsonl'), 4);
    await assert.rejects(run(cut, stop.signal), (e: Error & { code?: string }) => e.code === 'E_INTERRUPTED');
    const partial = readLines(path.join(cut, 'results.jsonl')).length;
    assert.ok(partial >= 4 && partial < 12, `stopped midway: ${partial} of 12`);
    const b = await run(cut);
    assert.equal(b.resumed, partial);
    assert.deepEqual(
      readLines(path.join(cut, 'results.jsonl')).map(withoutTime),
      readLines(path.join(whole, 'results.jsonl')).map(withoutTime),
    );

    const lines = a.records;
    assert.equal(lines.length, 12);
    for (const l of lines) {
      const order = l.meta!.order as string[];
      assert.equal(
        order['ABCD'.indexOf(l.answer as string)],
        'Correct Answer',
        'the recorded shuffle puts the correct answer at the answer letter',
      );
      assert.ok(
        l.prompt.includes(`${l.answer}) ${gpqaRows[l.problem]['Correct Answer']}\n`) ||
          l.prompt.endsWith(`${l.answer}) ${gpqaRows[l.problem]['Correct Answer']}`),
      );
      if (l.extracted === null) assert.equal(l.correct, false);
    }
    const s = JSON.parse(fs.readFileSync(path.join(whole, 'summary.json'), 'utf8')) as Summary;
    assert.deepEqual(s.pass_at_k, [1, 2]);
    assert.equal(s.modes[0].no_answer, lines.filter((l) => l.mode === 'standard' && l.extracted === null).length);
    assert.equal(s.paired[0].pairs, 6);
    assert.ok(s.paired[0].pass_at['pass@2'].bootstrap95.resamples === 2000);
    assert.match(a.markdown, /\| mode \| pass@1 \| pass@2 \|/);
    const html = fs.readFileSync(path.join(whole, 'report.html'), 'utf8');
    assert.match(html, /<table id="passk">/);
    assert.equal((html.match(/<details class="problem"/g) ?? []).length, 3);
    assert.match(html, /order: (Correct Answer|Incorrect Answer \d)( \/ (Correct Answer|Incorrect Answer \d)){3}/);
  });

  it('livecodebench: stories260K writes no code; every completion says so, the sandbox is recorded', async function () {
    if (!engine) {
      console.log(`      ${SHARED_MISSING}`);
      this.skip();
    }
    if (!hasPython) {
      console.log(`      ${NO_PYTHON}`);
      this.skip();
    }
    const data = path.join(tmp, 'lcb.jsonl');
    fs.writeFileSync(data, lcbRows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const spec = `livecodebench:${data}`;
    const task = await loadEvalTask(spec, { sandbox: { timeoutSeconds: 1, wallSeconds: 3, workers: 2 } });
    const out = path.join(tmp, 'lcb-model');
    const r = await runEval(task, settingsFor(spec, 2), {
      out,
      completer: new InProcessCompleter(engine!, 4),
      tokenizer: engine!.tokenizer,
      progress: false,
    });
    assert.equal(r.records.length, 8);
    for (const l of r.records) {
      assert.ok(
        l.prompt.startsWith('You are an expert Python programmer.'),
        'no chat template: system text, then the user turn',
      );
      assert.equal(l.extracted === null, l.execution!.status === 'no_code');
    }
    assert.equal(
      r.summary.modes[0].execution!.no_code +
        r.summary.modes[0].execution!.passed +
        r.summary.modes[0].execution!.wrong_answer +
        r.summary.modes[0].execution!.runtime_error +
        r.summary.modes[0].execution!.timeout +
        r.summary.modes[0].execution!.memory +
        r.summary.modes[0].execution!.output_limit,
      4,
    );
    assert.ok(r.summary.sandbox && r.summary.sandbox.env.length === 4);
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(html, /<table id="execution">/);
    assert.match(html, /<table id="sandbox">/);
  });

  it('livecodebench: scripted programs give hand-computed verdicts, pass@k and paired counts; resume with verdicts pending', async function () {
    if (!hasPython) {
      console.log(`      ${NO_PYTHON}`);
      this.skip();
    }
    const data = path.join(tmp, 'lcb2.jsonl');
    fs.writeFileSync(data, lcbRows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const spec = `livecodebench:${data}`;
    const fence = (code: string) => `Let me write it.\n\`\`\`python\n${code}\n\`\`\``;
    const sum = fence('a, b = map(int, input().split())\nprint(a + b)');
    const programs: Record<string, string> = {
      '0/0/standard': sum,
      '0/1/standard': fence('print(3)'), // right; wrong on the second test
      '0/0/moi': sum,
      '0/1/moi': sum,
      '1/0/standard': fence('class Solution:\n    def add(self, a, b):\n        while True:\n            pass'),
      '1/1/standard': 'I am not sure.',
      '1/0/moi': fence('class Solution:\n    def add(self, a, b):\n        return a - b'),
      '1/1/moi': fence('class Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b'),
    };
    class Scripted implements Completer {
      readonly name = 'scripted';
      async *complete(requests: CompletionRequest[], signal?: AbortSignal): AsyncIterable<CompletionResult> {
        for (const r of requests) {
          await new Promise((res) => setTimeout(res, 2));
          if (signal?.aborted) return;
          yield {
            key: r.key,
            completion: programs[r.key],
            promptTokens: 10,
            completionTokens: 20,
            finishReason: 'stop',
            seconds: 0,
            meanEntropy: null,
            meanWeight: null,
            modeUsed: r.mode,
          };
        }
      }
      async close() {}
    }
    const run = async (out: string, signal?: AbortSignal) => {
      const task = await loadEvalTask(spec, { sandbox: { timeoutSeconds: 0.5, wallSeconds: 2, workers: 4 } });
      return runEval(task, settingsFor(spec, 2), {
        out,
        completer: new Scripted(),
        tokenizer: null,
        progress: false,
        passAt: [1, 2],
        signal,
      });
    };
    const whole = path.join(tmp, 'lcb-whole');
    const a = await run(whole);
    const byKey = new Map(a.records.map((r) => [r.key, r]));
    const status = (k: string) => byKey.get(k)!.execution!.status;
    assert.deepEqual(Object.keys(programs).map(status), [
      'passed',
      'wrong_answer',
      'passed',
      'passed',
      'timeout',
      'no_code',
      'wrong_answer',
      'passed',
    ]);
    assert.match(byKey.get('0/1/standard')!.execution!.detail!, /test 2\/3: wrong answer at line 1: "3" ≠ "0"/);
    assert.match(byKey.get('1/0/moi')!.execution!.detail!, /test 1\/2: returned -1, expected 3/);
    assert.deepEqual(byKey.get('1/0/moi')!.answer, { question_id: '9001', func_name: 'add' });
    const [std, moi] = a.summary.modes;
    assert.deepEqual(
      [std.pass_at['pass@1'], std.pass_at['pass@2'], moi.pass_at['pass@1'], moi.pass_at['pass@2']],
      [0.25, 0.5, 0.75, 1],
    );
    assert.deepEqual(std.execution, {
      passed: 1,
      wrong_answer: 1,
      timeout: 1,
      runtime_error: 0,
      memory: 0,
      output_limit: 0,
      no_code: 1,
    });
    assert.deepEqual(moi.execution, {
      passed: 3,
      wrong_answer: 1,
      timeout: 0,
      runtime_error: 0,
      memory: 0,
      output_limit: 0,
      no_code: 0,
    });
    assert.deepEqual([a.summary.paired[0].b, a.summary.paired[0].c], [0, 2]);
    assert.equal(a.summary.paired[0].pass_at['pass@2'].diff, 0.5); // per problem: (1 − 1) and (1 − 0), over 2
    assert.equal(std.no_answer, 1);
    const html = fs.readFileSync(path.join(whole, 'report.html'), 'utf8');
    for (const reason of ['passed', 'wrong answer', 'timeout', 'no code'])
      assert.match(html, new RegExp(`execution: <strong>${reason}</strong>`));
    assert.match(html, /returned -1, expected 3/);

    // stopped after three verdicts (others still running in the sandbox), then resumed
    const cut = path.join(tmp, 'lcb-cut');
    const stop = stopAfter(path.join(cut, 'results.jsonl'), 3);
    await assert.rejects(run(cut, stop.signal), (e: Error & { code?: string }) => e.code === 'E_INTERRUPTED');
    const partial = readLines(path.join(cut, 'results.jsonl')).length;
    assert.ok(partial >= 3 && partial < 8, `stopped midway: ${partial} of 8`);
    const b = await run(cut);
    assert.equal(b.resumed, partial);
    const strip = (r: ResultRecord) => withoutTime(r);
    assert.deepEqual(
      readLines(path.join(cut, 'results.jsonl')).map(strip),
      readLines(path.join(whole, 'results.jsonl')).map(strip),
    );
  });
});
