/**
 * Progress a person sees: load and prefill bars on stderr at a terminal (a pseudo-terminal from
 * util-linux `script`), and nothing when output is piped or with --quiet.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot, requireShared } from '@moi/core';

const BIN = path.join(repoRoot, 'packages/cli/bin/moi-gen.js');
const IDS = Array.from({ length: 100 }, (_, i) => 1 + ((i * 37) % 500)).join(',');

function run(args: string[], tty: boolean, env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  const argv = [process.execPath, BIN, ...args];
  const [cmd, cmdArgs] = tty
    ? ['script', ['-qfec', argv.map((a) => `'${a}'`).join(' '), '/dev/null']]
    : [argv[0], argv.slice(1)];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd as string, cmdArgs as string[], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out, err }); });
    child.stdin.end();
  });
}

describe('cli: progress display', function () {
  let model: string;
  before(function () {
    model = path.join(requireShared(this), 'fixtures', 'stories260K');
  });

  it('draws load and prefill bars at a terminal, and none with --quiet', async function () {
    if (spawnSync('script', ['--version']).status !== 0) {
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
