/**
 * `moi-gen --mode soft` as users run it (a child process on stories260K, which has no `</think>`):
 * the JSON records the per-step entropy S and where thinking ended and why; the cold stop fires
 * where the recorded S values say it must; missing think-end and misplaced flags exit 2 cleanly.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot, sharedDir, SHARED_MISSING } from '@moi/core';

interface Result { code: number | null; stdout: string; stderr: string }

function moiGen(args: string[]): Promise<Result> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.MIXINPUTS_BETA;
  delete env.MOI_BACKEND;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'packages/cli/src/bin.ts', ...args], { cwd: repoRoot, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end('');
  });
}

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
      moiGen([...base, '--mode', 'soft', '--think-end-id', '263', '--cold-stop-entropy', '0.01', '--cold-stop-steps', '2',
        '--after-thinking-temperature', '0', '--seed', '3', '--json']),
      moiGen([...base, '--mode', 'soft']),
      moiGen([...base, '--cold-stop-steps', '3']),
    ];
  });

  it('--json: per-step S, think_end {step, reason}, and the cold stop where the S values put it', async function () {
    const r = await runs[0];
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { tokens: number[]; entropy: (number | null)[]; think_end: { step: number; reason: string } | null; settings: { mode: string } };
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
    assert.ok(out.entropy.slice(0, end.step + 1).every((v) => typeof v === 'number' && v >= 0), 'S during thinking');
    assert.ok(out.entropy.slice(end.step + 1).every((v) => v === null), 'no S after thinking');
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
});
