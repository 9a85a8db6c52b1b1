/**
 * Progress a person sees: load and prefill bars on stderr at a terminal (a pseudo-terminal from
 * util-linux `script`), and nothing when output is piped or with --quiet.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { requireShared } from '@moi/core';
import { hasScript, runCli } from './support/cli.ts';

const IDS = Array.from({ length: 100 }, (_, i) => 1 + ((i * 37) % 500)).join(',');

/** The binary, at a pseudo-terminal (`tty`: stdout and stderr both in `out`) or piped; killed after 60 s. */
async function run(
  args: string[],
  tty: boolean,
  env: Record<string, string> = {},
): Promise<{ code: number | null; out: string; err: string }> {
  const r = await runCli(args, { tty, env, killAfterMs: 60_000 });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

describe('cli: progress display', function () {
  let model: string;
  before(function () {
    model = path.join(requireShared(this), 'fixtures', 'stories260K');
  });

  it('draws load and prefill bars at a terminal, and none with --quiet', async function () {
    if (!hasScript()) {
      console.log('      `script` (util-linux) not found: skipping the terminal test');
      this.skip();
    }
    const args = ['--model', model, '--ids', IDS, '--max-tokens', '2', '--temperature', '0'];
    // the prefill bar waits for about a second of prefill; this one takes less, so wait for none
    const shown = await run(args, true, { MOI_PROGRESS_AFTER_MS: '0' });
    assert.equal(shown.code, 0, shown.out + shown.err);
    assert.match(shown.out, /loading .*\/\d+ MB/);
    // in chunks (64 tokens for a small model): the bar shows the prefill under way, before it ends
    assert.match(shown.out, /prefill .* 64\/100 tokens/);
    // with the default wait, a prefill this short shows no bar
    const fast = await run(args, true);
    assert.equal(fast.code, 0);
    assert.match(fast.out, /loading .*\/\d+ MB/);
    assert.doesNotMatch(fast.out, /prefill/);
    const quiet = await run([...args, '--quiet'], true);
    assert.equal(quiet.code, 0);
    assert.doesNotMatch(quiet.out, /loading|prefill/);
  });

  it('draws nothing when stdout is piped', async () => {
    const piped = await run(['--model', model, '--ids', IDS, '--max-tokens', '2', '--temperature', '0'], false);
    assert.equal(piped.code, 0, piped.err);
    assert.doesNotMatch(piped.err, /loading|prefill/);
    assert.doesNotMatch(piped.out, /loading|prefill/);
    assert.ok(piped.out.length > 0);
  });
});
