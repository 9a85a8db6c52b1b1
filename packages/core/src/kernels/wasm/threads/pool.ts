/**
 * A pool of wasm threads over one shared memory (issue 26, phase A): `worker_threads` and the main
 * thread run the same compiled kernel module (wat.ts) over one `WebAssembly.Memory({shared:
 * true})` (memory.ts), where the weights live. A job names a kernel and a count of units (weight
 * rows, heads, ids, column blocks); the units are cut into contiguous chunks, which the main
 * thread and the workers take until none is left. Kernels split work across outputs, never
 * across a sum, so every unit's result is the same bits whichever thread computes it: results
 * never depend on the thread count or on the scheduling.
 *
 * Dispatch is synchronous, with Atomics: the main thread writes the job (kernel, units, argument
 * words, the claim word), bumps the generation word and notifies; each idle worker spins on that
 * word for `spinMicros` (default 100 µs), then sleeps in `Atomics.wait`. Everyone takes chunks
 * (compare-and-swap on the claim word, see worker-source.ts); the main thread then spins (then
 * waits) until every chunk is counted. A decode step's ~200 small ops thus find the workers
 * spinning, not asleep, and a worker the OS has descheduled (a loaded machine) only means the
 * main thread does more chunks, instead of a stall. The round trip of an empty job is measured by
 * bench/threads.ts (`emptyJobMicros` here).
 *
 * Created once (async: compiling, starting workers), disposed cleanly: `dispose()` sets the exit
 * word, wakes the workers and awaits their exit (terminating any that do not leave within 5 s).
 * Workers are unref'd, so a pool that is never disposed does not keep the process alive.
 *
 * ## Phase B: plugging the pool into the engine (design note)
 *
 * Done (issue 26 phase B): the linear layers, the head and the embedding rows (linear.ts here:
 * ThreadedLinear; models' threaded-weights.ts: ThreadedStorage, chosen in load.ts's threadedPlan:
 * on wasm at every thread count unless `threadedWeights: 'never'`), `--threads N` / $MOI_THREADS
 * on every command that loads a model, the pool per loaded model (disposed with it), the thread
 * line in --stats, --json, bench, doctor and serve, and prefill attention from 2 threads
 * (prefill.ts: the single-thread kernel's text per (row, query head)). Not done yet: decode
 * attention and the KV cache in the pool (tfjs's heap keeps them), the MoI top-K mix (rows are
 * gathered by the pool, mixed by tfjs ops). The plan below is what remains.
 *
 * - **Linear layers.** models' one weight interface gets a `ThreadedLinear` whose weights are a
 *   SharedWeight (ops.ts: f32, bf16, f16 or q8 in 4-row panels, q8 as Q8_0 blocks with
 *   transposed scales) uploaded once at load from the checkpoint's [out, in] rows (no transpose,
 *   no XNNPACK packing, no copy of the weights in tfjs's heap, which then holds only
 *   activations). `apply(x)` = copy x in (x's data from the tfjs wasm heap: one
 *   `Float32Array.set` per row), `matmul` (q8: quant_x8 then mm_q8x8), copy y out into a tensor
 *   made with `backend.makeOutput`: a tfjs custom kernel like today's PACKED_MATMUL, so it stays
 *   one op in the graph. Bias / outScale: a small epilogue on the copy out. Fused qkv and gate/up
 *   stay fused (one weight, one job). The pool's memory is a second wasm32 memory, at most 4 GiB
 *   of its own (weights + KV), beside tfjs's. Every output row is computed the same way whatever
 *   the batch, so batched rows equal the same rows alone, bit for bit, at any thread count.
 * - **q8 numerics change.** mm_q8x8 rounds x to int8 per block (llama.cpp's Q8_0 × Q8_0), where
 *   today's decode rounds it to 16 bits: q8 fixtures' tolerances and the composite
 *   (roundActivations16) move to 8 bits (`quant_x8`'s rounding, modelled in
 *   test/threads-model.ts). mm_q8x16 keeps today's bits exactly where that is wanted.
 * - **Attention and the KV cache.** The cache moves into the pool's memory (SharedKv: keys
 *   [Bc, nKV, S, D], values transposed [Bc, nKV, D, S], slot positions [Bc, S], S rounded up to
 *   4). Decode: the fused qkv output stays in the pool (no copy out), `split_heads` writes q
 *   (normed and rotated), k and v straight into the cache slot, `attention` runs by (row, head),
 *   and its output feeds o_proj in the pool; only the residual stream crosses to tfjs (or the
 *   whole layer runs in the pool: norm and MLP activation are the remaining ops to add). Prefill:
 *   the same ops with one unit per (query row, head); a prefill chunk must not be longer than a
 *   sliding window's ring (its keys would overwrite slots earlier queries of the chunk still see)
 *   — cut chunks at the window, as today's chunking already cuts at 512.
 * - **MoI.** `mix_K` over the embedding table in the pool (split by 32-column blocks) replaces
 *   packedMatMulT's row sum; `gather_K` the embedding lookup.
 * - **Tied heads.** The lm head is the embedding table's SharedWeight, stored once.
 * - **`--threads N`.** One pool per Engine: `Engine.load(src, { threads })` creates it (default
 *   `defaultThreads()`), disposes it in `Engine.dispose`. Every command that loads a model
 *   (generate, chat, serve, bench, eval, trace, doctor) takes `--threads N` through the shared
 *   model options and passes it to Engine.load. The pool's `info` ({ threads, simd, fused }) goes
 *   in `--stats` (a line: `threads 2 (simd relaxed, fma)`), in `--json` (`"threads": 2, "simd":
 *   "relaxed"`), in bench's table header and JSON, in doctor's report (with the self-test detail
 *   when it fell back), and in serve's start-up line.
 * - **bench/peer.ts.** Pass `--threads N` to both engines (today it passes `--threads 1` to
 *   llama.cpp only and documents ours as single-threaded): run each shape and dtype at 1 thread
 *   and at all cores (`--threads 1,max`), llama.cpp with the same `--threads`, and print each
 *   thread count's row with ours ÷ llama.cpp, plus each engine's own scaling (2 threads ÷ 1).
 *   The JSON gains `threads` and `simd` per row; the README table says Node version and path.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { ModelError, UsageError } from '../../../errors.ts';
import { cachedWasm, kernelsCachePath } from '../module.ts';
import { SharedHeap } from './memory.ts';
import {
  compileOptimized,
  enableRelaxedSimd,
  runSelfTests,
  type SelfTestExports,
  type SelfTestResult,
  type SimdPath,
} from './simd.ts';
import { JOB_KERNELS, threadsWat, type JobKernel } from './wat.ts';
import { CTL, WORKER_SOURCE } from './worker-source.ts';

/**
 * The default thread count: the cores this process may use, capped at 8. Measured here on 2 vCPUs
 * only; the cap is a guess at where a memory-bound decode stops gaining (llama.cpp's default
 * is the physical cores), to be revisited on a larger machine.
 */
export const MAX_DEFAULT_THREADS = 8;
export function defaultThreads(): number {
  const n = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, Math.min(MAX_DEFAULT_THREADS, n));
}

export interface PoolOptions {
  /** threads, the main one included (default defaultThreads()) */
  threads?: number;
  /** 'auto' (default; MOI_SIMD=simd128 forces the plain path) or 'simd128' */
  simd?: 'auto' | 'simd128';
  /** how long an idle worker spins before sleeping, µs (default 100) */
  spinMicros?: number;
  /** memory reserved up front (default 16 MiB; it grows as weights are uploaded) */
  initialBytes?: number;
  /** the most the memory may hold (default 4 GiB) */
  maxBytes?: number;
  /**
   * whether the main thread takes chunks of a job too (default true); false leaves every chunk
   * of a multi-thread job to the workers (the tests use it to hold worker-computed results
   * against main-thread ones)
   */
  mainClaims?: boolean;
}

export interface PoolInfo {
  threads: number;
  simd: SimdPath;
  /** whether relaxed_madd rounds once (relaxed path only) */
  fused: boolean;
  /** why the relaxed path was not taken, if it was not */
  fallback: string | null;
}

type KernelFn = (a: number, s: number, e: number, t: number) => void;
export type PoolExports = SelfTestExports &
  Record<JobKernel, KernelFn> & {
    claim(addr: number, gen: number): number;
    claim_init(addr: number, gen: number, n: number): void;
  };

// ---- the module: assembled (wabt) and cached on disk by the text's hash, compiled once per path ----

const compiled = new Map<SimdPath, WebAssembly.Module>();

/** Assemble WebAssembly text with the features the pool's kernels use. */
export async function assembleThreadsWat(text: string): Promise<Uint8Array> {
  const wabt = await (await import('wabt')).default();
  const features = { simd: true, threads: true, relaxed_simd: true, sat_float_to_int: true };
  const mod = wabt.parseWat('threads.wat', text, features);
  try {
    mod.resolveNames();
    // wabt.js's validate takes the features too (its typings say no arguments)
    (mod as unknown as { validate(f: object): void }).validate(features);
    return new Uint8Array(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

async function moduleBytes(simd: SimdPath): Promise<Uint8Array> {
  const text = threadsWat(simd);
  return cachedWasm(kernelsCachePath(text, `moi-threads-${simd}`), () => assembleThreadsWat(text));
}

/** The compiled module for a path (relaxed: TurboFan up front, see simd.ts), or null if it does not compile. */
async function compileFor(simd: SimdPath): Promise<WebAssembly.Module | null> {
  const have = compiled.get(simd);
  if (have) return have;
  if (simd === 'relaxed' && !enableRelaxedSimd()) return null;
  const bytes = await moduleBytes(simd);
  try {
    const m = compileOptimized(bytes);
    compiled.set(simd, m);
    return m;
  } catch {
    return null;
  }
}

// ---- the pool ----

const W = {
  GEN: CTL.GEN,
  COMPLETED: CTL.COMPLETED,
  EXIT: CTL.EXIT,
  OP: CTL.OP,
  UNITS: CTL.UNITS,
  GRAIN: CTL.GRAIN,
  NCHUNKS: CTL.NCHUNKS,
  ERR: CTL.ERR,
};
/**
 * Chunks per thread a job is cut into: more balance the threads when one is slowed (another
 * process on its core), fewer cost less claiming (a compare-and-swap each, tens of ns).
 */
export const CHUNKS_PER_THREAD = 4;
/** Most argument words a job has. */
export const MAX_ARGS = 32;
/** How long the main thread waits for a job's workers before declaring the pool broken. */
const STALL_MS = 120_000;

export class ThreadPool {
  readonly heap: SharedHeap;
  readonly info: PoolInfo;
  /** the main thread's instance of the kernels */
  readonly exports: PoolExports;
  private readonly fns: KernelFn[];
  private readonly workers: Worker[];
  private readonly ctl: Int32Array;
  private readonly spinMs: number;
  private readonly mainClaims: boolean;
  private disposed = false;
  private jobs = 0;
  private busy = 0;

  private constructor(
    heap: SharedHeap,
    exports: PoolExports,
    workers: Worker[],
    info: PoolInfo,
    spinMicros: number,
    mainClaims: boolean,
  ) {
    this.mainClaims = mainClaims;
    this.heap = heap;
    this.exports = exports;
    this.workers = workers;
    this.info = info;
    this.spinMs = spinMicros / 1000;
    this.ctl = new Int32Array(heap.memory.buffer, 0, 64);
    this.fns = JOB_KERNELS.map((k) => exports[k]);
  }

  get threads(): number {
    return this.info.threads;
  }

  /** Jobs dispatched so far (each op is one or two). */
  get jobCount(): number {
    return this.jobs;
  }

  /** Wall time spent in dispatch() so far, ms (the main thread waits for every job: profiles add it to tfjs's kernel times). */
  get busyMs(): number {
    return this.busy;
  }

  /**
   * Start a pool: compile (or reuse) the kernels for the best path that passes its self-tests in
   * the main thread and in every worker, start threads − 1 workers, wait until they are ready.
   */
  static async create(o: PoolOptions = {}): Promise<ThreadPool> {
    const threads = o.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
      throw new UsageError('E_THREADS', `threads must be an integer from 1 to 256, got ${threads}`);
    }
    const forced = o.simd === 'simd128' || (process.env.MOI_SIMD ?? '').trim() === 'simd128';
    let fallback: string | null = forced ? 'simd128 asked for (MOI_SIMD or the simd option)' : null;
    if (!forced) {
      const mod = await compileFor('relaxed');
      if (!mod) fallback = 'relaxed SIMD does not compile in this Node';
      else {
        const pool = await ThreadPool.start(mod, 'relaxed', threads, o);
        if (typeof pool !== 'string') return pool;
        fallback = pool;
      }
    }
    const mod = await compileFor('simd128');
    if (!mod)
      throw new ModelError(
        'E_THREADS',
        'thread pool: the plain SIMD kernels do not compile (WebAssembly SIMD or threads missing in this Node)',
      );
    const pool = await ThreadPool.start(mod, 'simd128', threads, o, fallback);
    if (typeof pool === 'string')
      throw new ModelError('E_THREADS', `thread pool: the plain SIMD kernels fail their self-tests: ${pool}`);
    return pool;
  }

  /** Start on one module; a string says which self-test failed (the pool is then already torn down). */
  private static async start(
    mod: WebAssembly.Module,
    simd: SimdPath,
    threads: number,
    o: PoolOptions,
    fallback: string | null = null,
  ): Promise<ThreadPool | string> {
    const heap = new SharedHeap(o.initialBytes, o.maxBytes);
    const exports = new WebAssembly.Instance(mod, { env: { memory: heap.memory } }).exports as unknown as PoolExports;
    const main = runSelfTests(exports, heap.u8(0, heap.size), CTL.SELFTEST + 64 * threads);
    if (!main.ok) return `main thread: ${main.detail}`;
    const spinMicros = o.spinMicros ?? 100;
    const workers: Worker[] = [];
    const ready: Promise<SelfTestResult>[] = [];
    for (let id = 1; id < threads; id++) {
      const w = new Worker(WORKER_SOURCE, {
        eval: true,
        // plain CommonJS: none of the parent's flags (a loader, --input-type=module) apply
        execArgv: [],
        workerData: { memory: heap.memory, module: mod, id, names: JOB_KERNELS, spinMicros, ctlOffsets: CTL },
      });
      workers.push(w);
      ready.push(
        new Promise<SelfTestResult>((resolve, reject) => {
          w.once('message', (m: { selfTest: SelfTestResult }) => resolve(m.selfTest));
          w.once('error', reject);
          w.once('exit', (code) =>
            reject(new ModelError('E_THREADS', `thread pool: worker ${id} exited (code ${code}) before it was ready`)),
          );
        }),
      );
    }
    let results: SelfTestResult[];
    try {
      results = await Promise.all(ready);
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e instanceof ModelError
        ? e
        : new ModelError('E_THREADS', `thread pool: a worker failed to start: ${(e as Error).message}`, { cause: e });
    }
    for (const w of workers) {
      w.removeAllListeners('exit');
      w.removeAllListeners('error');
      w.on('error', () => {}); // reported through the control block; never an unhandled event
      w.unref();
    }
    const bad = results.findIndex((r) => !r.ok || r.fused !== main.fused);
    const pool = new ThreadPool(
      heap,
      exports,
      workers,
      { threads, simd, fused: simd === 'relaxed' && main.fused, fallback },
      spinMicros,
      o.mainClaims ?? true,
    );
    if (bad >= 0) {
      await pool.dispose();
      return `worker ${bad + 1}: ${results[bad].detail || 'relaxed_madd fuses differently from the main thread'}`;
    }
    return pool;
  }

  /** The job's argument words (write them, then dispatch); fresh views, valid until the next grow. */
  args(): { i32: Int32Array; f32: Float32Array } {
    const b = this.heap.memory.buffer;
    return { i32: new Int32Array(b, CTL.ARGS, MAX_ARGS), f32: new Float32Array(b, CTL.ARGS, MAX_ARGS) };
  }

  /**
   * Run a job: `units` split into chunks (boundaries multiples of `grain`, except the end): about
   * CHUNKS_PER_THREAD per thread, at most `threads` threads' worth (default all) and never more
   * than there are grains. The main thread and the workers take chunks until none is left (see
   * worker-source.ts), so the split never depends on which thread runs when. The arguments must
   * already be in args(). Returns when every chunk is done; a kernel that trapped in any thread
   * throws a ModelError afterwards.
   */
  dispatch(kernel: JobKernel, units: number, grain = 1, threads = this.threads): void {
    const t0 = performance.now();
    try {
      this.runJob(kernel, units, grain, threads);
    } finally {
      this.busy += performance.now() - t0;
    }
  }

  private runJob(kernel: JobKernel, units: number, grain: number, threads: number): void {
    if (this.disposed) throw new UsageError('E_POOL_DISPOSED', 'thread pool: used after dispose()');
    if (units <= 0) return;
    const op = JOB_KERNELS.indexOf(kernel);
    const grains = Math.ceil(units / grain);
    const nth = Math.max(1, Math.min(threads, this.threads, grains));
    this.jobs++;
    if (nth === 1) {
      this.runMain(kernel, op, 0, units);
      return;
    }
    const n = Math.min(grains, nth * CHUNKS_PER_THREAD, 0xffff);
    const c = this.ctl;
    const gen = (c[W.GEN] + 1) | 0;
    c[W.OP] = op;
    c[W.UNITS] = units;
    c[W.GRAIN] = grain;
    c[W.NCHUNKS] = n;
    Atomics.store(c, W.COMPLETED, 0);
    this.exports.claim_init(CTL.CLAIM, gen, n);
    Atomics.store(c, W.GEN, gen);
    Atomics.notify(c, W.GEN);
    let mainError: unknown = null;
    while (this.mainClaims) {
      const k = this.exports.claim(CTL.CLAIM, gen);
      if (k < 0) break;
      const b0 = Math.floor((units * k) / n / grain) * grain;
      const b1 = k + 1 === n ? units : Math.floor((units * (k + 1)) / n / grain) * grain;
      try {
        this.runMain(kernel, op, b0, b1);
      } catch (e) {
        mainError ??= e; // count the chunk and finish the job: the workers use the same memory
      }
      Atomics.add(c, W.COMPLETED, 1);
    }
    this.waitCompleted(n);
    const err = Atomics.load(c, W.ERR);
    if (err !== 0) {
      const text = new TextDecoder().decode(this.heap.u8(CTL.ERR_TEXT, Math.max(0, err)).slice());
      Atomics.store(c, W.ERR, 0);
      throw new ModelError('E_KERNEL', `thread pool: kernel ${kernel} failed in ${text}`);
    }
    if (mainError) throw mainError;
  }

  private runMain(kernel: JobKernel, op: number, s: number, e: number): void {
    if (e <= s) return;
    try {
      this.fns[op](CTL.ARGS, s, e, 0);
    } catch (err) {
      throw new ModelError(
        'E_KERNEL',
        `thread pool: kernel ${kernel} failed in the main thread: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  /** Wait until n chunks are counted: spin for spinMicros, then sleep in Atomics.wait. */
  private waitCompleted(n: number): void {
    const c = this.ctl;
    let d = Atomics.load(c, W.COMPLETED);
    if (d === n) return;
    const t0 = performance.now();
    let k = 0;
    while ((d = Atomics.load(c, W.COMPLETED)) !== n) {
      if ((++k & 127) === 0) {
        const waited = performance.now() - t0;
        if (waited > this.spinMs) Atomics.wait(c, W.COMPLETED, d, 100);
        if (waited > STALL_MS) {
          throw new ModelError(
            'E_THREADS',
            `thread pool: ${n - d} of ${n} chunks of a job were not finished within ${STALL_MS / 1000} s`,
          );
        }
      }
    }
  }

  /** Dispatch the empty job `calls` times; µs per round trip (the wake-up and done latency). */
  emptyJobMicros(calls = 1000): number {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) this.dispatch('noop', this.threads, 1);
    return ((performance.now() - t0) * 1000) / calls;
  }

  /** Stop the workers (awaiting their exit) and release the memory. Safe to call twice. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const c = this.ctl;
    Atomics.store(c, W.EXIT, 1);
    Atomics.add(c, W.GEN, 1);
    Atomics.notify(c, W.GEN);
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => void w.terminate().then(() => resolve()), 5000);
            w.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            // a worker that already left has no exit event to come
            if (w.threadId < 0) {
              clearTimeout(timer);
              resolve();
            }
          }),
      ),
    );
  }

  /** Workers still running (0 after dispose). */
  get liveWorkers(): number {
    return this.workers.filter((w) => w.threadId >= 0).length;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }
}
