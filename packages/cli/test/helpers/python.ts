/**
 * Python for tests that check against it or run the sandbox: the real interpreter behind
 * `python3` (resolved once, so a pyenv shim is not paid per call), or null when there is none.
 */
import { spawnSync } from 'node:child_process';

function find(): string | null {
  const r = spawnSync('python3', ['-c', 'import sys; assert sys.version_info >= (3, 8); print(sys.executable)'], {
    encoding: 'utf8',
  });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

export const pythonExe = find();
export const hasPython = pythonExe !== null;
export const NO_PYTHON = 'python3 (3.8+) not found: skipped';

/** Run a Python program with `input` on stdin; its stdout. */
export function python(code: string, input = ''): string {
  if (!pythonExe) throw new Error(NO_PYTHON);
  const r = spawnSync(pythonExe, ['-c', code], { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}
