/**
 * `moi-gen eval` end to end on the real stories260K model (test/support/cli.ts: in-process through
 * main(argv); child processes for the run killed with SIGKILL and its twin):
 * - countdown:gen, 32 problems × {standard, moi}: results, summary, report (accuracy ≈ 0 on this
 *   model; the pipeline is what is checked), paired by prompt and seed;
 * - a run killed with SIGKILL midway (plus a torn last line) and resumed equals an uninterrupted run
 *   line for line (all but the timing field);
 * - `eval score` re-scores saved completions; a jsonl: task; bad input exits 2 with a message;
 * - `eval score --task livecodebench` runs programs in the sandbox, the user's HF_TOKEN unseen;
 * - --endpoint against a loopback fake OpenAI server (the official client on our side).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { loadTokenizer } from '@moi/engine';
import { generateCountdown, solveCountdown } from '../packages/cli/src/eval/solver.ts';
import type { ResultRecord, Summary } from '../packages/cli/src/eval/summary.ts';
import { hasPython, NO_PYTHON, sandboxExclusive } from '../packages/cli/test/helpers/python.ts';
import { moiGen, spawnCli } from './support/cli.ts';

const shared = sharedDir();
const model = shared ? path.join(shared, 'fixtures', 'stories260K') : '';

const run = (args: string[], env?: Record<string, string>) => moiGen(args, { env });
/** A child process (to be killed, or to run beside one). */
const start = (args: string[]) => spawnCli(args);

const readLines = (file: string) =>
  fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as ResultRecord);
const withoutTime = (r: ResultRecord) => {
  const { seconds: _s, ...rest } = r;
  return rest;
};

describe('cli: moi-gen eval', function () {
  sandboxExclusive();
  this.timeout(180_000);
  let tmp: string;

  before(function () {
    if (!shared) {
      console.log(`      ${SHARED_MISSING}`);
      this.skip();
    }
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-eval-'));
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('countdown:gen, 32 problems × {standard, moi}: results, summary and report', async () => {
    const out = path.join(tmp, 'e2e');
    const r = await run([
      'eval',
      '--model',
      model,
      '--task',
      'countdown:gen',
      '--limit',
      '32',
      '--modes',
      'standard,moi',
      '--max-tokens',
      '12',
      '--max-seqs',
      '64',
      '--temperature',
      '1',
      '--seed',
      '5',
      '--out',
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\| mode \| n \| correct \| accuracy \| 95% CI \(Wilson\)/);
    assert.match(r.stdout, /\| moi \| 32 \| \d+ \| [\d.]+% \|/);
    const lines = readLines(path.join(out, 'results.jsonl'));
    assert.equal(lines.length, 64);
    assert.equal(new Set(lines.map((l) => l.key)).size, 64);
    const gen = generateCountdown(32, 5);
    for (const l of lines) {
      assert.deepEqual(l.answer, { target: gen[l.problem].target, numbers: gen[l.problem].numbers });
      assert.ok(
        l.prompt.includes(
          `Using the numbers [${gen[l.problem].numbers.join(', ')}], create an equation that equals ${gen[l.problem].target}.`,
        ),
      );
      assert.ok(l.completion_tokens >= 1 && l.completion_tokens <= 12 && l.prompt_tokens > 100);
      assert.ok(l.mean_entropy !== null && l.mean_entropy >= 0 && l.mean_entropy <= 1);
      if (l.mode === 'standard')
        assert.ok(Math.abs(l.mean_weight! - 1) < 1e-6, 'standard: all weight on the sampled token');
      else assert.ok(l.mean_weight! < 1 && l.mean_weight! >= 0.5, 'moi (β = 1): w_y = (H p_y + 2 − H)/2 ≥ 1/2');
      assert.equal(l.mode_used, l.mode);
    }
    // paired: same prompt and seed under both modes
    for (let p = 0; p < 32; p++) {
      const [s, m] = ['standard', 'moi'].map((mode) => lines.find((l) => l.key === `${p}/0/${mode}`)!);
      assert.equal(s.prompt, m.prompt);
      assert.equal(s.seed, m.seed);
    }
    assert.equal(new Set(lines.map((l) => l.seed)).size, 32, 'seeds differ between problems');
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')) as Summary;
    assert.deepEqual(
      summary.modes.map((m) => [m.mode, m.n]),
      [
        ['standard', 32],
        ['moi', 32],
      ],
    );
    assert.equal(summary.paired[0].pairs, 32);
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(html, /Chart\.js v4/); // the library inlined
    assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=/); // nothing fetched
    assert.equal((html.match(/<details class="problem"/g) ?? []).length, 32);

    // the saved completions re-scored by `eval score` get the same verdicts
    const scoreIn = path.join(tmp, 'rescore.jsonl');
    fs.writeFileSync(
      scoreIn,
      lines.map((l) => JSON.stringify({ completion: l.completion, answer: l.answer }) + '\n').join(''),
    );
    const s = await run(['eval', 'score', '--task', 'countdown', scoreIn]);
    assert.equal(s.code, 0, s.stderr);
    const verdicts = s.stdout
      .trim()
      .split('\n')
      .map((x) => JSON.parse(x) as { correct: boolean; extracted: string | null });
    assert.deepEqual(
      verdicts.map((v) => [v.correct, v.extracted]),
      lines.map((l) => [l.correct, l.extracted]),
    );
  });

  it('a run killed with SIGKILL midway resumes to the same results as an uninterrupted run', async () => {
    const args = (out: string, seed = 11) => [
      'eval',
      '--model',
      model,
      '--task',
      'countdown:gen',
      '--limit',
      '10',
      '--modes',
      'standard,moi',
      '--max-tokens',
      '10',
      '--max-seqs',
      '3',
      '--temperature',
      '1',
      '--top-k',
      '40',
      '--seed',
      String(seed),
      '--out',
      out,
    ];
    const whole = path.join(tmp, 'whole');
    const killed = path.join(tmp, 'killed');
    const full = await start(args(whole));
    const victim = await start(args(killed));
    const file = path.join(killed, 'results.jsonl');
    // kill once some (not all) lines are written
    let seen = 0;
    for (let i = 0; i < 1200 && seen < 4; i++) {
      await new Promise((r) => setTimeout(r, 25));
      seen = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').length - 1 : 0;
    }
    victim.child.kill('SIGKILL');
    await victim.done;
    const partial = fs.readFileSync(file, 'utf8').split('\n').length - 1;
    assert.ok(partial >= 4 && partial < 20, `killed midway: ${partial} of 20 lines`);
    fs.appendFileSync(file, '{"key":"9/0/moi","problem":9,"comp'); // a torn last line, as a kill mid-write leaves
    const [a, b] = await Promise.all([full.done, run(args(killed))]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stderr, new RegExp(`resumed: ${partial} results`));
    const A = readLines(path.join(whole, 'results.jsonl')).map(withoutTime);
    const B = readLines(path.join(killed, 'results.jsonl')).map(withoutTime);
    assert.equal(B.length, 20);
    assert.deepEqual(B, A);
    assert.deepEqual(
      JSON.parse(fs.readFileSync(path.join(killed, 'summary.json'), 'utf8')),
      JSON.parse(fs.readFileSync(path.join(whole, 'summary.json'), 'utf8')),
    );
    // a different setting in the same folder is refused
    const other = await run(args(killed, 12));
    assert.equal(other.code, 2);
    assert.match(other.stderr, /different settings \(seed/);
  });

  it('a jsonl: task runs, and bad input exits 2 naming the line', async () => {
    const data = path.join(tmp, 'qa.jsonl');
    fs.writeFileSync(
      data,
      [
        { prompt: 'Once upon a time', answer: { regex: '.' } },
        { messages: [{ role: 'user', content: 'Tom had a dog.' }], answer: 'zzz-never' },
        { prompt: 'One day', answer: 3 },
      ]
        .map((x) => JSON.stringify(x))
        .join('\n') + '\n',
    );
    const out = path.join(tmp, 'jsonl');
    const r = await run([
      'eval',
      '--model',
      model,
      '--task',
      `jsonl:${data}`,
      '--modes',
      'moi',
      '--max-tokens',
      '6',
      '--temperature',
      '0',
      '--out',
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const lines = readLines(path.join(out, 'results.jsonl'));
    assert.deepEqual(
      lines.map((l) => l.key),
      ['0/0/moi', '1/0/moi', '2/0/moi'],
    );
    assert.equal(lines[0].correct, lines[0].completion.length > 0);
    assert.equal(lines[1].correct, false);
    const bad = path.join(tmp, 'bad.jsonl');
    fs.writeFileSync(bad, '{"prompt": "x", "answer": "y"}\n{"prompt": "x"}\n');
    const e = await run(['eval', '--model', model, '--task', `jsonl:${bad}`, '--out', path.join(tmp, 'bad')]);
    assert.equal(e.code, 2);
    assert.match(e.stderr, /bad\.jsonl:2: "answer" must be/);
    const s = await run(['eval', 'score', '--task', 'countdown', bad]);
    assert.equal(s.code, 2);
    assert.match(s.stderr, /bad\.jsonl:1: a line needs "completion"/);
    const u = await run([
      'eval',
      '--model',
      model,
      '--task',
      'countdown:gen',
      '--modes',
      'standard,fancy',
      '--out',
      path.join(tmp, 'u'),
    ]);
    assert.equal(u.code, 2);
    assert.match(u.stderr, /unknown (--)?mode "fancy"/);
  });

  it("eval score --task livecodebench runs the programs in the sandbox (the user's HF_TOKEN unseen); bad flags exit 2", async function () {
    if (!hasPython) {
      console.log(`      ${NO_PYTHON}`);
      this.skip();
    }
    const file = path.join(tmp, 'code.jsonl');
    const tests = [{ input: '2 3\n', output: '5\n', testtype: 'stdin' }];
    fs.writeFileSync(
      file,
      [
        { completion: '```python\na, b = map(int, input().split())\nprint(a + b)\n```', answer: { tests } },
        {
          completion: '```python\nimport os\nprint(os.environ.get("HF_TOKEN"))\n```',
          answer: { tests: [{ input: '', output: 'None\n', testtype: 'stdin' }] },
        },
        { completion: '```python\nwhile True: pass\n```', answer: { tests } },
      ]
        .map((x) => JSON.stringify(x))
        .join('\n') + '\n',
    );
    const r = await run(
      ['eval', 'score', '--task', 'livecodebench', '--exec-timeout', '1', '--exec-workers', '3', file],
      { HF_TOKEN: 'hf_cliSecret' },
    );
    assert.equal(r.code, 0, r.stderr);
    const v = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { correct: boolean; execution: { status: string } });
    assert.deepEqual(
      v.map((x) => [x.correct, x.execution.status]),
      [
        [true, 'passed'],
        [true, 'passed'],
        [false, 'timeout'],
      ],
    );
    assert.ok(!r.stdout.includes('hf_cliSecret'));
    assert.match(r.stderr, /^sandbox: .* as /m);
    const bad = await run([
      'eval',
      '--model',
      model,
      '--task',
      'countdown:gen',
      '--samples',
      '2',
      '--pass-at',
      '1,3',
      '--out',
      path.join(tmp, 'passk'),
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--pass-at 3 needs --samples >= 3/);
  });

  it('--endpoint: the same requests to an OpenAI-compatible server, modes recorded as the server ran them', async () => {
    const seen: Record<string, unknown>[] = [];
    // A fake server: answers countdown problems right in moi mode only; says which mode ran only
    // when asked with moi_beta (standing in for a server that can honour modes per request).
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        const b = JSON.parse(body) as Record<string, unknown>;
        // with a local tokenizer the prompt comes as its token ids (what an in-process run prefills)
        const ids = Array.isArray(b.prompt) ? (b.prompt as number[]) : null;
        const promptText = ids ? loadTokenizer(model).decode(ids, { skipSpecialTokens: true }) : String(b.prompt);
        seen.push({ url: req.url, ...b, prompt_text: promptText });
        const m = /Using the numbers \[([\d, ]+)\], create an equation that equals (\d+)/.exec(promptText);
        const solution = m ? solveCountdown(m[1].split(', ').map(Number), Number(m[2])) : null;
        const text = b.moi_mode === 'moi' ? ` ok </think><answer>${solution}</answer>` : ' <answer>1 + 1</answer>';
        const chat = req.url === '/v1/chat/completions';
        const out = {
          id: 'cmpl-1',
          object: chat ? 'chat.completion' : 'text_completion',
          created: 0,
          model: b.model,
          choices: [
            chat
              ? { index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }
              : { index: 0, text, finish_reason: 'stop', logprobs: null },
          ],
          usage: { prompt_tokens: ids?.length ?? 100, completion_tokens: 7, total_tokens: (ids?.length ?? 100) + 7 },
          ...(b.moi_beta !== undefined ? { moi: { mode: b.moi_mode, mean_entropy: 0.25, mean_weight: 0.75 } } : {}),
        };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    try {
      const out = path.join(tmp, 'endpoint');
      const r = await run([
        'eval',
        '--model',
        'served-model',
        '--endpoint',
        url,
        '--tokenizer',
        model,
        '--task',
        'countdown:gen',
        '--limit',
        '4',
        '--modes',
        'standard,moi',
        '--max-tokens',
        '32',
        '--temperature',
        '0.6',
        '--top-p',
        '0.4',
        '--seed',
        '3',
        '--max-seqs',
        '3',
        '--out',
        out,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(seen.length, 8);
      for (const s of seen) {
        assert.equal(s.url, '/v1/completions');
        assert.equal(s.model, 'served-model');
        assert.equal(s.max_tokens, 32);
        assert.equal(s.temperature, 0.6);
        assert.equal(s.top_p, 0.4);
        assert.ok(s.moi_mode === 'standard' || s.moi_mode === 'moi');
        assert.ok(Array.isArray(s.prompt), 'the prompt as token ids');
        assert.match(String(s.prompt_text), /Assistant: Let me solve this step by step\.\n<think>$/); // no chat template: the raw TinyZero text
      }
      const lines = readLines(path.join(out, 'results.jsonl'));
      assert.deepEqual(
        lines.map((l) => [l.mode, l.mode_used, l.correct]),
        [0, 1, 2, 3].flatMap(() => [
          ['standard', 'server', false],
          ['moi', 'server', true],
        ]),
      );
      const seeds = (mode: string) =>
        seen
          .filter((s) => s.moi_mode === mode)
          .map((s) => s.seed)
          .sort();
      assert.deepEqual(seeds('standard'), seeds('moi')); // paired seeds
      assert.match(r.stdout, /\| moi \(ran: server\) \| 4 \| 4 \| 100\.0% \|/);

      // with --beta the fake server reports the mode it ran
      const out2 = path.join(tmp, 'endpoint2');
      const r2 = await run([
        'eval',
        '--model',
        'served-model',
        '--endpoint',
        url,
        '--task',
        'countdown:gen',
        '--limit',
        '2',
        '--modes',
        'standard,moi',
        '--beta',
        '2',
        '--max-tokens',
        '8',
        '--out',
        out2,
      ]);
      assert.equal(r2.code, 0, r2.stderr);
      const lines2 = readLines(path.join(out2, 'results.jsonl'));
      assert.deepEqual(
        lines2.map((l) => [l.mode_used, l.mean_weight]),
        [
          ['standard', 0.75],
          ['moi', 0.75],
          ['standard', 0.75],
          ['moi', 0.75],
        ],
      );
      assert.equal(seen[seen.length - 1].url, '/v1/chat/completions'); // no tokenizer: messages, prefix continued
      assert.equal(seen[seen.length - 1].continue_final_message, true);
    } finally {
      server.close();
      server.closeAllConnections();
    }
  });
});
