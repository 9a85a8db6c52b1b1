/**
 * `moi-gen --mode soft` as users run it (in-process through main(argv), test/support/cli.ts; on
 * stories260K, which has no `</think>`):
 * the JSON records the per-step entropy S and where thinking ended and why; the cold stop fires
 * where the recorded S values say it must; missing think-end and misplaced flags exit 2 cleanly.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { moiGen, type CliResult } from './support/cli.ts';

type Result = CliResult;

describe('cli: moi-gen --mode soft', function () {
  const shared = sharedDir();
  let model = '';
  let runs: Promise<Result>[] = [];

  before(function () {
    if (!shared) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    model = path.join(shared!, 'fixtures', 'stories260K');
    const base = ['--model', model, '-q', '--max-tokens', '12', 'Once upon a time'];
    runs = [
      moiGen([
        ...base,
        '--mode',
        'soft',
        '--think-end-id',
        '263',
        '--cold-stop-entropy',
        '0.01',
        '--cold-stop-steps',
        '2',
        '--after-thinking-temperature',
        '0',
        '--seed',
        '3',
        '--json',
      ]),
      moiGen([...base, '--mode', 'soft']),
      moiGen([...base, '--cold-stop-steps', '3']),
    ];
  });
  let tmp = '';
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-soft-cli-'));
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('--json: per-step S, think_end {step, reason}, and the cold stop where the S values put it', async function () {
    const r = await runs[0];
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      tokens: number[];
      entropy: (number | null)[];
      think_end: { step: number; reason: string } | null;
      settings: { mode: string };
    };
    assert.equal(out.settings.mode, 'soft');
    assert.equal(out.tokens.length, 12);
    assert.ok(out.think_end, 'thinking ended');
    const end = out.think_end!;
    // the first step that completes 2 consecutive steps with S < 0.01 (step 0 counts)
    let low = 0;
    let expected = -1;
    for (let s = 0; s < out.entropy.length && expected < 0; s++) {
      low = (out.entropy[s] as number) < 0.01 ? low + 1 : 0;
      if (low >= 2) expected = s;
    }
    assert.deepEqual(end, { step: expected, reason: 'cold_stop' });
    assert.equal(out.tokens[end.step], 263, 'the think-end token is recorded');
    assert.ok(
      out.entropy.slice(0, end.step + 1).every((v) => typeof v === 'number' && v >= 0),
      'S during thinking',
    );
    assert.ok(
      out.entropy.slice(end.step + 1).every((v) => v === null),
      'no S after thinking',
    );
  });

  it('no think-end token in the tokenizer, and soft flags without --mode soft: exit 2 with a clear message', async function () {
    const [noThinkEnd, misplaced] = await Promise.all([runs[1], runs[2]]);
    assert.equal(noThinkEnd.code, 2);
    assert.match(noThinkEnd.stderr, /no token for the think-end text '<\/think>'.*--think-end-id/);
    assert.equal(misplaced.code, 2);
    assert.match(misplaced.stderr, /coldStopSteps.*need mode 'soft'/);
    for (const r of [noThinkEnd, misplaced]) {
      assert.equal(r.stdout, '');
      assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    }
  });

  it('eval --modes standard,soft: soft completions with the soft flags, paired with standard; soft flags without soft in --modes exit 2', async function () {
    const out = path.join(tmp, 'eval');
    const args = [
      'eval',
      '--model',
      model,
      '--task',
      'countdown:gen',
      '--limit',
      '2',
      '--max-tokens',
      '10',
      '--seed',
      '3',
      '-q',
    ];
    const [r, bad] = await Promise.all([
      moiGen([
        ...args,
        '--modes',
        'standard,soft',
        '--think-end-id',
        '263',
        '--cold-stop-entropy',
        '0.01',
        '--cold-stop-steps',
        '2',
        '--out',
        out,
      ]),
      moiGen([...args, '--modes', 'standard,moi', '--think-end-id', '263', '--out', path.join(tmp, 'bad')]),
    ]);
    assert.equal(r.code, 0, r.stderr);
    const records = fs
      .readFileSync(path.join(out, 'results.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { mode: string; completion: string });
    assert.deepEqual(records.map((x) => x.mode).sort(), ['soft', 'soft', 'standard', 'standard']);
    const settings = JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')) as {
      soft?: { thinkEndId?: number; coldStopSteps?: number };
    };
    assert.equal(settings.soft?.thinkEndId, 263, 'the soft options are part of the run (resume compares them)');
    assert.match(r.stdout, /\| soft \| 2 \|/);
    assert.match(r.stdout, /\| soft \| 2 \| \d+ \| \d+ \|/, 'soft paired with standard');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /thinkEndId.*need soft in --modes/);
  });

  it('generate --trace --compare-modes standard,soft: the soft flags apply to the soft run, and the page marks its soft phase', async function () {
    const file = path.join(tmp, 'trace.html');
    const r = await moiGen([
      '--model',
      model,
      '-q',
      '--max-tokens',
      '12',
      '--seed',
      '3',
      '--think-end-id',
      '263',
      '--cold-stop-entropy',
      '0.01',
      '--cold-stop-steps',
      '2',
      '--trace',
      file,
      '--compare-modes',
      'standard,soft',
      'Once upon a time',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\[standard\] .*\n\[soft\] /);
    const html = fs.readFileSync(file, 'utf8');
    assert.match(html, /class="tok soft/, 'soft-phase tokens are marked');
    assert.match(html, /class="think-end" data-i="\d+">end of thinking \(cold stop\)/);
  });
});
