/**
 * loadModel(dir): config.json → family → spec; safetensors → checked, sanitized, laid out weights.
 * Reports progress by bytes read, for the CLI's progress bar.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  Checkpoint,
  DTYPE_SIZE,
  kernelsEnabled,
  ModelError,
  notRegularFile,
  ropeInvFreq,
  sharedWeightBytes,
  ThreadPool,
  type PoolInfo,
  type TensorInfo,
} from '@moi/core';
import { ConfigReader, type RawConfig } from './config.ts';
import { Decoder } from './decoder.ts';
import { F32Storage } from './f32-weights.ts';
import type { Family } from './family.ts';
import { canRelease } from './pack.ts';
import { PackedStorage, packedSize } from './packed-weights.ts';
import { ThreadedStorage } from './threaded-weights.ts';
import { familyFor } from './registry.ts';
import type { DecoderSpec } from './spec.ts';
import { buildWeights, checkNames, checkShape, expectedTensors, weightBytes, type MatrixSource } from './weights.ts';
import { scanBytes, scanFloat32, type WeightScan } from './finite.ts';
import { DTYPE_CHOICES, planDtype, type DtypeChoice, type DtypePlan, type WeightDtype } from './weight-dtype.ts';

export interface LoadProgress {
  /** bytes of checkpoint read so far */
  bytes: number;
  totalBytes: number;
  /** bytes of checkpoint whose tensors are also laid out and packed (the rest of the load work) */
  builtBytes: number;
  /** the tensor just read, or '' in the last report, once the model is built */
  tensor: string;
  phase: 'read' | 'done';
}

export interface LoadOptions {
  onProgress?: (p: LoadProgress) => void;
  /** keep the original weight blocks after XNNPACK packs them (wasm; see pack.ts) */
  keepWeights?: boolean;
  /**
   * How the matrices are held (issue 15, see weight-dtype.ts): 'auto' (default) keeps a bf16/f16
   * checkpoint's 16-bit words and an f32 checkpoint's f32; 'f32', 'bf16', 'q8' convert at load.
   * Packed 16/8-bit matrices run on wasm; other backends widen them to f32 at load.
   */
  dtype?: DtypeChoice;
  /**
   * Threads of the wasm thread pool that holds the matrices (issue 26; see threadedPlan). Default
   * 1. The pool is made here and disposed with the model; `pool` hands in one made elsewhere
   * (then the caller disposes it, and `threads` is its count).
   */
  threads?: number;
  pool?: ThreadPool;
  /** 'auto' (default) and 'always': the pool on wasm (see threadedPlan); 'never': tfjs's kernels */
  threadedWeights?: ThreadedChoice;
  /**
   * Check every weight as it is read for NaN, ±Inf and |w| ≥ 2^64 (finite.ts), failing with
   * E_NONFINITE_WEIGHTS naming the tensor (default true; false skips the pass, for trusted files:
   * the CLI's --no-check-tensors).
   */
  checkTensors?: boolean;
}

export type ThreadedChoice = 'auto' | 'always' | 'never';

/** What runs the matrices: the thread pool (its threads and SIMD path) or tfjs's own kernels. */
export interface ThreadsReport {
  /** threads multiplying the matrices (1 when tfjs's single-thread kernels do) */
  threads: number;
  /** whether the matrices live in the thread pool */
  pooled: boolean;
  /** the pool's SIMD path ('relaxed' | 'simd128'), null without a pool */
  simd: PoolInfo['simd'] | null;
  /** whether the pool's multiply-add is fused (relaxed path) */
  fused: boolean;
  /** why the relaxed path was not taken, if it was not */
  fallback: string | null;
  /** one line for people: e.g. 'threads 2 (pool, simd relaxed, fma)' */
  note: string;
}

/**
 * Whether the matrices go in the thread pool: on the wasm backend, unless 'never' (then tfjs's
 * kernels: f32 on XNNPACK, bf16/f16 and q8 on the packed kernels). One thread runs the pool too
 * (its main thread alone): measured on SmolLM2-135M f32, one thread, 128-token prefill 1,040 →
 * 667 ms and decode 26.3 → 24.1 ms a token against tfjs's kernels (the pool's outer-product
 * GEMM and its 32-row units, issue 26); q8 multiplies int8 activations there (1.4-1.5x the packed
 * kernels). Results are the same bits at every thread count.
 */
export function threadedPlan(choice: ThreadedChoice, backend: string): boolean {
  return backend === 'wasm' && choice !== 'never';
}

export const THREADED_CHOICES: readonly ThreadedChoice[] = ['auto', 'always', 'never'];

export interface LoadedModel {
  dir: string;
  /** config.json as parsed */
  config: RawConfig;
  family: Family<any>;
  /** the family's typed config (HF field names) */
  familyConfig: unknown;
  spec: DecoderSpec;
  model: Decoder;
  /** bytes of the checkpoint files' tensors */
  checkpointBytes: number;
  /** bytes held by the weights in memory */
  weightBytes: number;
  /** what the matrices are held as, and why (e.g. 'bf16 checkpoint kept in 16 bits') */
  dtype: WeightDtype;
  dtypeNote: string;
  /** what multiplies the matrices: the thread pool and its threads, or tfjs's kernels */
  threads: ThreadsReport;
  loadSeconds: number;
  dispose(): void;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

export function readConfig(dir: string): RawConfig {
  const file = path.join(dir, 'config.json');
  if (!existsSync(file))
    throw new ModelError(
      'E_NO_CONFIG',
      `${file}: not found (a model folder needs config.json and safetensors weights)`,
    );
  const problem = notRegularFile(file);
  if (problem) throw new ModelError('E_CONFIG', `${file}: cannot read it: it ${problem}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelError('E_CONFIG', `${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new ModelError('E_CONFIG', `${file}: expected a JSON object`);
  return raw as RawConfig;
}

/** Parse a config object into its family and spec (no weights). */
export function specFromConfig(
  config: RawConfig,
  source = 'config.json',
): { family: Family<any>; familyConfig: unknown; spec: DecoderSpec } {
  const family = familyFor(config.model_type, source);
  const familyConfig = family.parseConfig(new ConfigReader(config, source));
  const spec: DecoderSpec = family.toSpec(familyConfig);
  // an unsupported or incomplete rope_scaling fails here, naming the file, not at the first forward
  for (const rope of new Set(spec.layers.map((l) => l.rope))) {
    let r: ReturnType<typeof ropeInvFreq>;
    try {
      r = ropeInvFreq(rope);
    } catch (err) {
      if (err instanceof ModelError) throw new ModelError(err.code, `${source}: ${err.message}`);
      throw err;
    }
    // the bounds on each field should make this impossible; a combination of them must not either
    // in float32, as the device holds them (rope_theta 1e-300 gives frequencies past 3.4e38), and
    // so are the angles of every position (position × frequency)
    const f32ok = (x: number) => Number.isFinite(Math.fround(x)) && Math.fround(x) > 0;
    if (
      !r.invFreq.every((f) => f32ok(f) && Number.isFinite(Math.fround(f * spec.maxPositionEmbeddings))) ||
      !f32ok(r.attentionScaling)
    ) {
      throw new ModelError(
        'E_CONFIG',
        `${source}: rope_theta (${rope.base}) and rope_scaling (${JSON.stringify(rope.scaling)}) give non-finite rotary frequencies`,
      );
    }
  }
  return { family, familyConfig, spec };
}

/**
 * Before any weight is read: the bytes each tensor's header declares are the bytes its shape
 * and dtype need (as the config implies the shape), and their sum is what will be read.
 */
function checkBytes(expected: Map<string, number[]>, info: (g: string) => TensorInfo, dir: string): number {
  let total = 0;
  for (const [g, shape] of expected) {
    const t = info(g);
    const want = shape.reduce((n, d) => n * d, 1) * DTYPE_SIZE[t.dtype];
    if (t.byteLength !== want) {
      throw new ModelError(
        'E_SHAPE',
        `${dir}: tensor ${t.name} holds ${t.byteLength} bytes but the config implies [${shape.join(', ')}] of ${t.dtype} = ${want} bytes`,
      );
    }
    total += want;
  }
  return total;
}

/** The 32-bit wasm heap (emscripten's maximum: 4 GiB less one 64 KiB page). */
export const WASM_HEAP_BYTES = 4294901760;
/** Heap kept free beside the weights for activations and the runtime's own blocks. */
export const HEAP_ACTIVATION_RESERVE = 256 * 1024 ** 2;
/** Tokens of one sequence's KV cache the load check keeps room for. */
export const HEAP_KV_TOKENS = 1024;

export interface HeapEstimate {
  /** the weights as held (after the load's transient copies are gone) */
  weights: number;
  /** the room kept for one sequence's KV cache (HEAP_KV_TOKENS) and activations */
  reserve: number;
  total: number;
}

/** The thread pool's shared memory (a wasm32 memory: 4 GiB). */
export const POOL_MEMORY_BYTES = 4294967296;

/**
 * The memory a model's weights need at a dtype, from its spec alone, and where they go:
 * - 'heap' (tfjs's wasm heap): matrices as held (packed bytes, or f32; an f32 tied head twice, as
 *   XNNPACK packs a copy of it and the gathers read the original), vectors in f32, plus the
 *   reserve for one sequence's KV cache and activations;
 * - 'pool' (the thread pool's memory, threaded-weights.ts): the matrices only, rows and columns
 *   padded to 32 (a tied head once; q8's scales beside its bytes), plus the activation reserve
 *   for the pool's scratch (the vectors and the KV cache stay in tfjs's heap).
 */
export function estimateHeap(spec: DecoderSpec, dtype: WeightDtype, where: 'heap' | 'pool' = 'heap'): HeapEstimate {
  let weights = 0;
  for (const [g, shape] of expectedTensors(spec)) {
    if (shape.length === 1) {
      if (where === 'heap') weights += shape[0] * 4;
      continue;
    }
    const [rows, cols] = shape;
    if (where === 'pool') {
      weights += sharedWeightBytes(dtype, rows, cols);
      continue;
    }
    const tiedF32 = dtype === 'f32' && spec.tieWordEmbeddings && g === 'model.embed_tokens.weight';
    weights += dtype === 'f32' ? rows * cols * 4 * (tiedF32 ? 2 : 1) : packedSize(dtype, rows, cols);
  }
  const kvTokens = Math.min(spec.maxPositionEmbeddings, HEAP_KV_TOKENS);
  const reserve =
    HEAP_ACTIVATION_RESERVE +
    (where === 'heap' ? spec.numLayers * 2 * spec.numKvHeads * spec.headDim * kvTokens * 4 : 0);
  return { weights, reserve, total: weights + reserve };
}

const GB = (n: number) => `${(n / 1e9).toFixed(2)} GB`;

/**
 * E_MEMORY when the weights at the plan's dtype cannot fit where they go (tfjs's wasm heap, or the
 * thread pool's memory), with the figures and a smaller dtype that would.
 */
export function checkHeapFits(spec: DecoderSpec, dtype: WeightDtype, where: string, pooled = false): void {
  const place = pooled ? 'pool' : 'heap';
  const limit = pooled ? POOL_MEMORY_BYTES : WASM_HEAP_BYTES;
  const e = estimateHeap(spec, dtype, place);
  if (e.total <= limit) return;
  const smaller = (['bf16', 'q8'] as const).filter(
    (d) => d !== dtype && estimateHeap(spec, d, place).weights < e.weights,
  );
  const fits = smaller.filter((d) => estimateHeap(spec, d, place).total <= limit);
  const hint = fits.length
    ? `try --dtype ${fits[0]} (${GB(estimateHeap(spec, fits[0], place).weights)} of weights)`
    : smaller.length
      ? `even q8 needs ${GB(estimateHeap(spec, 'q8', place).total)}: use another backend (e.g. --backend tensorflow)`
      : 'use another backend (e.g. --backend tensorflow)';
  const kept = pooled ? "the pool's scratch" : 'the KV cache and activations';
  throw new ModelError(
    'E_MEMORY',
    `${where}: the weights take ${GB(e.weights)} in ${dtype}, and with ${GB(e.reserve)} kept for ${kept} ` +
      `that is ${GB(e.total)}, over ${pooled ? "the thread pool's memory" : 'the wasm heap'} (${GB(limit)}); ${hint}`,
  );
}

function threadsReport(pool: ThreadPool | null, threads: number): ThreadsReport {
  if (!pool) {
    return {
      threads: 1,
      pooled: false,
      simd: null,
      fused: false,
      fallback: null,
      note: `threads 1 (tfjs single-thread kernels${threads > 1 ? `; ${threads} asked, the pool runs on wasm only` : ''})`,
    };
  }
  const i = pool.info;
  return {
    threads: i.threads,
    pooled: true,
    simd: i.simd,
    fused: i.fused,
    fallback: i.fallback,
    note: `threads ${i.threads} (pool, simd ${i.simd}${i.fused ? ', fma' : ''}${i.fallback ? `; ${i.fallback}` : ''})`,
  };
}

export async function loadModel(dir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const t0 = performance.now();
  const choice = opts.dtype ?? 'auto';
  if (!(DTYPE_CHOICES as readonly string[]).includes(choice)) {
    throw new ModelError('E_DTYPE', `dtype ${JSON.stringify(choice)}: expected one of ${DTYPE_CHOICES.join(', ')}`);
  }
  const config = readConfig(dir);
  const { family, familyConfig, spec } = specFromConfig(config, path.join(dir, 'config.json'));
  const ckpt = Checkpoint.open(dir);
  try {
    // checkpoint name → graph name
    const source = new Map<string, string>();
    for (const name of ckpt.names()) {
      let g = family.sanitize(name);
      if (g === 'lm_head.weight' && spec.tieWordEmbeddings) g = null; // a tied head saved anyway
      if (g === null) continue;
      if (source.has(g))
        throw new ModelError('E_DUPLICATE_TENSOR', `${dir}: tensors ${source.get(g)} and ${name} both map to ${g}`);
      source.set(g, name);
    }
    const expected = expectedTensors(spec);
    checkNames(expected, new Set(source.keys()), dir);
    for (const [g, shape] of expected) {
      const info = ckpt.info(source.get(g)!);
      checkShape(source.get(g)!, shape, info.shape, dir);
      if (!FLOAT_DTYPES.has(info.dtype)) {
        throw new ModelError(
          'E_DTYPE',
          `${dir}: tensor ${source.get(g)} is ${info.dtype}; weights must be F32, F16, BF16 or F64 (quantized checkpoints are not supported)`,
        );
      }
    }

    const totalBytes = checkBytes(expected, (g) => ckpt.info(source.get(g)!), dir);
    const backend = tf.getBackend();
    const matrices = [...expected].filter(([, shape]) => shape.length === 2).map(([g]) => g);
    const plan: DtypePlan = planDtype(
      choice,
      matrices.map((g) => ckpt.info(source.get(g)!).dtype),
      backend,
      kernelsEnabled(),
    );
    const threads = opts.pool?.threads ?? opts.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
      throw new ModelError('E_THREADS', `threads must be an integer from 1 to 256, got ${threads}`);
    }
    const threadedChoice = opts.threadedWeights ?? 'auto';
    if (!THREADED_CHOICES.includes(threadedChoice))
      throw new ModelError(
        'E_THREADS',
        `threadedWeights ${JSON.stringify(threadedChoice)}: expected one of ${THREADED_CHOICES.join(', ')}`,
      );
    const pooled = threadedPlan(threadedChoice, backend);
    if (backend === 'wasm') checkHeapFits(spec, plan.dtype, dir, pooled);
    // A tensor counts as built once the work after its read is done: the layout and packing of
    // what was read before tensor k end when tensor k is read, the rest when the model is built.
    let bytes = 0;
    let builtBytes = 0;
    // the weight check: every read is scanned as it comes (bit patterns, one pass), and a tensor
    // with a bad value fails once it has been read whole
    const check = opts.checkTensors ?? true;
    const scans = new Map<string, WeightScan>();
    const scanOf = (g: string) => {
      let s = scans.get(g);
      if (!s) scans.set(g, (s = { nonFinite: 0, huge: 0 }));
      return s;
    };
    // a packed matrix is converted as it is read (built once read); f32 host values are laid out
    // after their read (built when the next tensor is read, or when the model is)
    const src: MatrixSource = {
      info: (g) => ckpt.info(source.get(g)!),
      readRange: (g, start, length) => {
        const raw = ckpt.readBytesRange(source.get(g)!, start, length);
        if (check) scanBytes(ckpt.info(source.get(g)!).dtype, raw, scanOf(g));
        return raw;
      },
      readFloat32: (g) => {
        const v = ckpt.readFloat32(source.get(g)!);
        if (check) scanFloat32(v, scanOf(g)); // an F64 value past float32 is Inf here, and counted
        return v;
      },
      done: (g) => {
        const name = source.get(g)!;
        const scan = scans.get(g);
        scans.delete(g);
        if (scan && (scan.nonFinite > 0 || scan.huge > 0)) {
          const n = ckpt.info(name).shape.reduce((a, d) => a * d, 1);
          const what = [
            scan.nonFinite > 0
              ? `${scan.nonFinite} non-finite value${scan.nonFinite === 1 ? '' : 's'} (NaN or ±Inf)`
              : '',
            scan.huge > 0
              ? `${scan.huge} value${scan.huge === 1 ? '' : 's'} of magnitude ≥ 2^64 (their products overflow float32)`
              : '',
          ]
            .filter(Boolean)
            .join(' and ');
          throw new ModelError(
            'E_NONFINITE_WEIGHTS',
            `${dir}: tensor ${name} has ${what} among its ${n} values; the checkpoint is damaged ` +
              '(--no-check-tensors / checkTensors: false skips this check)',
          );
        }
        const before = bytes;
        bytes += ckpt.info(name).byteLength;
        builtBytes = plan.packed ? bytes : before;
        opts.onProgress?.({ bytes, totalBytes, builtBytes, tensor: name, phase: 'read' });
      },
    };
    // packed (streamed, on wasm), or f32; on a backend that widens packed values, the converted values (bf16-rounded, q8 dequantized)
    // or all of them in the thread pool's shared memory (threadedPlan)
    const pool = pooled ? (opts.pool ?? (await ThreadPool.create({ threads }))) : null;
    const ownPool = pooled && !opts.pool;
    let model: Decoder;
    try {
      const storage = pool
        ? new ThreadedStorage(
            src,
            pool,
            plan.packed ? { kind: plan.kind!, convert: null } : { kind: 'f32', convert: plan.kind },
          )
        : plan.packed
          ? new PackedStorage(src, plan.kind!)
          : new F32Storage(src, { convert: plan.kind, release: opts.keepWeights ? false : canRelease(), where: dir });
      model = new Decoder(spec, buildWeights(spec, src, storage, dir));
    } catch (err) {
      if (ownPool) await pool!.dispose();
      throw err;
    }
    const report = threadsReport(pool, threads);
    opts.onProgress?.({ bytes: totalBytes, totalBytes, builtBytes: totalBytes, tensor: '', phase: 'done' });
    return {
      dir,
      config,
      family,
      familyConfig,
      spec,
      model,
      checkpointBytes: totalBytes,
      weightBytes: weightBytes(model.weights),
      dtype: plan.dtype,
      dtypeNote: plan.note,
      threads: report,
      loadSeconds: (performance.now() - t0) / 1000,
      dispose: () => {
        model.dispose();
        // the workers leave at once (the exit word); the promise only awaits their exit events
        if (ownPool) void pool!.dispose();
      },
    };
  } finally {
    ckpt.close();
  }
}
