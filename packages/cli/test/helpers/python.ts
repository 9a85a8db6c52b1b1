/**
 * Python for tests that check against it or run the sandbox: the real interpreter behind
 * `python3` (resolved once, so a pyenv shim is not paid per call), or null when there is none.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

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

/**
 * The suite runs its files in two mocha workers. Programs in the sandbox run as one user
 * (`nobody` under root) whose process count they share (RLIMIT_NPROC), and the fork-bomb test
 * looks for leftover processes by their command line: two files running sandboxed programs at
 * once disturb each other. Called inside a describe, this holds a lock (a folder in the temp
 * directory, naming its holder's pid; a dead holder's lock is taken over) from the describe's
 * first test to its last, so such describes run one at a time across workers.
 */
export function sandboxExclusive(): void {
  const lock = path.join(os.tmpdir(), 'moi-test-sandbox.lock');
  let held = false;
  before(async function () {
    this.timeout(20 * 60_000);
    for (;;) {
      try {
        fs.mkdirSync(lock);
        fs.writeFileSync(path.join(lock, 'pid'), String(process.pid));
        held = true;
        return;
      } catch {
        const holder = Number(readOr(path.join(lock, 'pid')));
        if (holder > 0 && !alive(holder)) fs.rmSync(lock, { recursive: true, force: true });
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  });
  after(() => {
    if (held) fs.rmSync(lock, { recursive: true, force: true });
    held = false;
  });
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
