/**
 * The one way tests run moi-gen: in-process, through the CLI's `main(argv)` with stdout and
 * stderr captured, or as a child process of the compiled binary (packages/cli/bin/moi-gen.js).
 *
 * - In-process (`runInProcess`, and `moiGen` unless a process is needed) saves the start of a
 *   process and the import of tfjs, which is most of a short run. Runs are queued one at a
 *   time; stdout and stderr are captured per run (AsyncLocalStorage: what mocha prints
 *   meanwhile goes through), both behave as pipes (not TTYs) and stdin as a terminal that gives
 *   nothing, as for a child whose stdin is empty. MIXINPUTS_BETA and MOI_BACKEND are unset for the
 *   run, `env` is applied, and the tfjs backend is the one a fresh process would start (wasm here).
 *   The run must leave no engine behind (main releases it when it returns).
 * - A child process (`spawnCli`, `runCli`) is for what needs one: stdin, signals, the real exit
 *   of the binary, a stdout closed early, a pseudo-terminal (util-linux `script`), or another
 *   command (npx). The compiled binary starts in a fraction of a second; it is built once here.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, repoRoot } from '@moi/core';
import { main } from '../../packages/cli/src/bin.ts';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** wall time of the run, ms */
  ms: number;
}

/** The installed binary (what `node_modules/.bin/moi-gen` runs). */
export const BIN = path.join(repoRoot, 'packages/cli/bin/moi-gen.js');

/** The environment at load, less the variables that would change what moi-gen does. */
const BASE_ENV: NodeJS.ProcessEnv = (() => {
  const env = { ...process.env };
  delete env.MIXINPUTS_BETA;
  delete env.MOI_BACKEND;
  return env;
})();

function withEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env = { ...BASE_ENV };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

// ---- in-process

interface Capture {
  stdout: string;
  stderr: string;
}
const capture = new AsyncLocalStorage<Capture>();
let patched = false;

/** Route process.stdout/stderr writes made inside a captured run into its buffers. */
function patchStreams(): void {
  if (patched) return;
  patched = true;
  for (const name of ['stdout', 'stderr'] as const) {
    const stream = process[name];
    const original = stream.write.bind(stream);
    stream.write = ((
      chunk: string | Uint8Array,
      encoding?: BufferEncoding | ((err?: Error | null) => void),
      cb?: (err?: Error | null) => void,
    ): boolean => {
      const c = capture.getStore();
      if (!c) return original(chunk, encoding as BufferEncoding, cb);
      c[name] += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      const done = typeof encoding === 'function' ? encoding : cb;
      if (done) process.nextTick(done);
      return true;
    }) as typeof stream.write;
  }
}

/** Set `props` on `obj` for the length of `fn`, then put back what was there. */
async function withProps<T>(obj: object, props: Record<string, unknown>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.keys(props).map((k) => [k, Object.getOwnPropertyDescriptor(obj, k)] as const);
  for (const [k, v] of Object.entries(props))
    Object.defineProperty(obj, k, { value: v, configurable: true, writable: true });
  try {
    return await fn();
  } finally {
    for (const [k, d] of saved) {
      if (d) Object.defineProperty(obj, k, d);
      else delete (obj as Record<string, unknown>)[k];
    }
  }
}

/** The backend a fresh moi-gen process starts here (the best available: tensorflow, else wasm). */
const FRESH_BACKENDS = ['tensorflow', 'wasm'];

/**
 * What a run may leave in tensors: the process-wide caches of constants (nn.ts keeps scalars and
 * small matrices by value), not a model's weights or KV cache (an engine left behind is megabytes).
 */
const KEPT_BYTES = 64 * 1024;

let queue: Promise<unknown> = Promise.resolve();

/**
 * `moi-gen ARGS` in this process (one run at a time). Throws when the run changed process-wide
 * state that a child process would have taken with it: the tfjs backend, or tensors left over.
 */
export function runInProcess(args: string[], o: { env?: Record<string, string | undefined> } = {}): Promise<CliResult> {
  const run = async (): Promise<CliResult> => {
    patchStreams();
    const before = tf.getBackend();
    if (!FRESH_BACKENDS.includes(before)) await initBackend({ backend: 'wasm' });
    const backend = tf.getBackend();
    const bytes = tf.memory().numBytes;
    const env = process.env;
    const saved = { ...env };
    for (const k of Object.keys(env)) if (!(k in withEnv(o.env))) delete env[k];
    Object.assign(env, withEnv(o.env));
    const out: Capture = { stdout: '', stderr: '' };
    const t0 = performance.now();
    let code: number;
    try {
      code = await withProps(process.stdout, { isTTY: false }, () =>
        withProps(process.stderr, { isTTY: false }, () =>
          withProps(process.stdin, { isTTY: true }, () => capture.run(out, () => main(args))),
        ),
      );
    } finally {
      for (const k of Object.keys(env)) if (!(k in saved)) delete env[k];
      Object.assign(env, saved);
    }
    const ms = performance.now() - t0;
    if (tf.getBackend() !== backend)
      throw new Error(
        `moi-gen ${args.join(' ')}: changed the tfjs backend to ${tf.getBackend()} (run it as a child process)`,
      );
    const kept = tf.memory().numBytes - bytes;
    if (kept > KEPT_BYTES)
      throw new Error(
        `moi-gen ${args.join(' ')}: left ${kept} bytes of tensors behind (stderr: ${out.stderr.slice(0, 300)})`,
      );
    if (before && tf.getBackend() !== before) await initBackend({ backend: before });
    return { code, signal: null, stdout: out.stdout, stderr: out.stderr, ms };
  };
  const p = queue.then(run, run);
  queue = p.catch(() => {});
  return p;
}

// ---- child processes

export interface SpawnOptions {
  env?: Record<string, string | undefined>;
  /** written to stdin, which is then closed (default: nothing; stdin closed at once) */
  input?: string;
  /** stdin left open: the test writes to `child.stdin` */
  keepStdin?: boolean;
  /** close our end of stdout after the first bytes arrive (a reader like `head -1`) */
  closeStdout?: boolean;
  /** send SIGINT once this much stdout has arrived */
  interruptAfter?: number;
  /** SIGKILL the process if it runs longer than this */
  killAfterMs?: number;
  /** run at a pseudo-terminal (util-linux `script`): stdout and stderr arrive together as stdout */
  tty?: boolean;
  /** run this command line instead of the binary with `args` (e.g. `npx -y pnpm@… moi-gen …`) */
  command?: string[];
  /** start in its own process group (so that the test can kill all it started) */
  detached?: boolean;
}

export interface Spawned {
  child: ChildProcessWithoutNullStreams;
  done: Promise<CliResult>;
  stdout(): string;
  stderr(): string;
}

/** `script` from util-linux is there (for the pseudo-terminal tests). */
export function hasScript(): boolean {
  return spawnSync('script', ['--version']).status === 0;
}

const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

let building: Promise<void> | null = null;

/** Build packages/*\/dist now if a source changed (the binary would, but once here beats in each child). */
export function buildCli(): Promise<void> {
  building ??= new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'packages/cli/bin/build.js')], {
      cwd: repoRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`building the CLI failed: ${err}`))));
  });
  return building;
}

/** Start `moi-gen ARGS` (or `o.command`) as a child process in the repository root. */
export async function spawnCli(args: string[], o: SpawnOptions = {}): Promise<Spawned> {
  if (!o.command) await buildCli();
  const argv = o.command ?? [process.execPath, BIN, ...args];
  const [cmd, ...cmdArgs] = o.tty ? ['script', '-qfec', argv.map(quote).join(' '), '/dev/null'] : argv;
  const t0 = performance.now();
  const child = spawn(cmd, cmdArgs, {
    cwd: repoRoot,
    env: withEnv(o.env),
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: o.detached,
  });
  let stdout = '';
  let stderr = '';
  let interrupted = false;
  const timer = o.killAfterMs ? setTimeout(() => child.kill('SIGKILL'), o.killAfterMs) : null;
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    if (o.closeStdout) child.stdout.destroy();
    if (o.interruptAfter !== undefined && !interrupted && stdout.length >= o.interruptAfter) {
      interrupted = true;
      child.kill('SIGINT');
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  if (!o.keepStdin) child.stdin.end(o.input ?? '');
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
  return { child, done, stdout: () => stdout, stderr: () => stderr };
}

/** `moi-gen ARGS` as a child process, to the end. */
export const runCli = async (args: string[], o: SpawnOptions = {}): Promise<CliResult> =>
  (await spawnCli(args, o)).done;

/** Whether a run needs a child process (anything about stdin, signals, the binary or a TTY). */
function needsProcess(o: SpawnOptions): boolean {
  return (
    o.input !== undefined ||
    o.keepStdin ||
    o.closeStdout ||
    o.interruptAfter !== undefined ||
    o.tty ||
    o.command !== undefined ||
    o.detached ||
    false
  );
}

/** `moi-gen ARGS`: in-process where nothing needs a process boundary, else a child process. */
export function moiGen(args: string[], o: SpawnOptions & { process?: boolean } = {}): Promise<CliResult> {
  return o.process || needsProcess(o) ? runCli(args, o) : runInProcess(args, { env: o.env });
}

/** Run `jobs` at most `n` at a time, results in order. */
export async function pool<T>(jobs: (() => Promise<T>)[], n = 3): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, jobs.length) }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]();
      }
    }),
  );
  return out;
}

/** Screen text without ANSI control sequences or carriage returns. */
export const plain = (s: string): string => s.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '').replace(/\r/g, ''); // eslint-disable-line no-control-regex
