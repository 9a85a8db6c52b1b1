/**
 * An Engine is a loaded model plus what generation needs beside it: tokenizer (when the folder
 * has one), generation_config defaults and EOS ids. `Engine.load` starts the backend and loads
 * the weights from a folder, reporting progress by bytes; a hub id needs a resolver handed in
 * (`@moi/cli`'s `hubResolver`), so the engine itself knows no network.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { defaultThreads, initBackend, MAX_DEFAULT_THREADS, UsageError, type BackendReport } from '@moi/core';
import { loadModel, type DtypeChoice, type LoadedModel, type LoadProgress, type ThreadedChoice } from '@moi/models';
import { GpuPlans, gpuPlanWanted, type GpuRoute } from './gpu-plans.ts';
import { eosIds, loadTokenizer, readGenerationConfig, type GenerationConfig, type Tokenizer } from '../text/index.ts';

/** Turns what the user named (a hub id, say) into a model folder on disk. */
export type ModelResolver = (model: string) => Promise<string>;

export interface EngineLoadOptions {
  /** force a tfjs backend (else MOI_BACKEND, else the best available) */
  backend?: string;
  /** the cpu backend flushes float32 subnormals, as a GPU does (else MOI_FLUSH_SUBNORMALS) */
  flushSubnormals?: boolean;
  onLoad?: (p: LoadProgress) => void;
  /** maps the model argument to a folder (hub ids); without one the argument must be a folder */
  resolve?: ModelResolver;
  /** weight dtype: auto (default), f32, bf16 or q8 (see loadModel); on webgpu's GPU plan auto, f32 or f16 (gpu-plans.ts) */
  dtype?: DtypeChoice | 'f16';
  /** webgpu: decode through the GPU plan (default true; MOI_GPU_PLAN=0 turns it off) */
  gpuPlan?: boolean;
  /** check every weight for NaN/±Inf/|w| ≥ 2^64 at load, E_NONFINITE_WEIGHTS (default true; see loadModel) */
  checkTensors?: boolean;
  /**
   * threads multiplying the weights (the wasm thread pool, issue 26): default $MOI_THREADS, else
   * the available cores capped at MAX_DEFAULT_THREADS (see resolveThreads)
   */
  threads?: number;
  /** which matrices the pool holds: 'auto' (default; see @moi/models' threadedPlan), 'always', 'never' */
  threadedWeights?: ThreadedChoice;
}

/** The most threads one engine may ask for. */
export const MAX_THREADS = 256;

/**
 * The thread count to run with: the one asked for (`flag` names where it came from in the error),
 * else $MOI_THREADS, else defaultThreads() (available cores, at most MAX_DEFAULT_THREADS). A value
 * that is not an integer from 1 to MAX_THREADS is a UsageError (E_THREADS) naming its source.
 */
export function resolveThreads(
  asked: number | string | undefined,
  flag = 'threads',
  env: NodeJS.ProcessEnv = process.env,
): number {
  const fromEnv = asked === undefined && (env.MOI_THREADS ?? '').trim() !== '';
  const raw = asked ?? (fromEnv ? env.MOI_THREADS!.trim() : undefined);
  if (raw === undefined) return defaultThreads();
  const n = typeof raw === 'number' ? raw : /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new UsageError(
      'E_THREADS',
      `${fromEnv ? 'MOI_THREADS' : flag} must be an integer from 1 to ${MAX_THREADS} (default: the available cores, at most ${MAX_DEFAULT_THREADS}), got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

/** Without a resolver, the model argument is a folder: a missing one is a typed error naming it. */
async function localFolder(model: string): Promise<string> {
  const dir = path.resolve(model);
  if (!existsSync(dir)) {
    const hint = /^[\w.-]+\/[\w.-]+$/.test(model)
      ? ' (a hub id needs a resolver: `resolve: hubResolver()` from @moi/cli)'
      : '';
    throw new UsageError('E_MODEL_DIR_NOT_FOUND', `model folder ${dir} does not exist${hint}`);
  }
  if (!statSync(dir).isDirectory())
    throw new UsageError('E_MODEL_DIR_NOT_FOUND', `${dir} is a file; pass the model folder (with config.json)`);
  return dir;
}

export class Engine {
  private constructor(
    readonly dir: string,
    readonly backend: BackendReport,
    readonly loaded: LoadedModel,
    readonly tokenizer: Tokenizer | null,
    readonly generationConfig: GenerationConfig,
    /** every id that ends generation (generation_config ∪ config ∪ tokenizer) */
    readonly eosTokenIds: number[],
    /** issue 23 phase B: the GPU plans (webgpu, unless turned off); generate() and the Scheduler decode through them */
    readonly gpu: GpuPlans | null = null,
  ) {}

  /** where the last generate() call decoded (gpu-decode.ts), and why not on the GPU plan */
  lastRoute: GpuRoute | null = null;

  static async load(model: string, opts: EngineLoadOptions = {}): Promise<Engine> {
    const threads = resolveThreads(opts.threads);
    const backend = await initBackend({ backend: opts.backend, flushSubnormals: opts.flushSubnormals });
    const dir = await (opts.resolve ?? localFolder)(model);
    // ---- issue 23 phase B: on webgpu the GPU plan holds its own copy of the weights (f32 or f16);
    // the composite model stays loaded for what the plan does not run (Soft Thinking, traces, score, …)
    const gpuOn = backend.name === 'webgpu' && gpuPlanWanted(opts.gpuPlan);
    if (opts.dtype === 'f16' && !gpuOn) {
      throw new UsageError(
        'E_DTYPE',
        `--dtype f16 is the GPU plan's storage (webgpu); on ${backend.name}${backend.name === 'webgpu' ? ' with MOI_GPU_PLAN=0' : ''} use auto, f32, bf16 or q8`,
        { field: 'dtype' },
      );
    }
    const loaded = await loadModel(dir, {
      onProgress: opts.onLoad,
      dtype: opts.dtype === 'f16' ? 'auto' : opts.dtype,
      threads,
      threadedWeights: opts.threadedWeights,
      checkTensors: opts.checkTensors,
    });
    const gpu = gpuOn
      ? await GpuPlans.create(loaded, opts.dtype ?? 'auto').catch((err: unknown) => {
          loaded.dispose();
          throw err;
        })
      : null;
    const tokenizer = existsSync(path.join(dir, 'tokenizer.json')) ? loadTokenizer(dir) : null;
    const generationConfig = readGenerationConfig(dir);
    return new Engine(dir, backend, loaded, tokenizer, generationConfig, eosIds(dir, tokenizer ?? undefined), gpu);
  }

  get model() {
    return this.loaded.model;
  }

  get spec() {
    return this.loaded.spec;
  }

  /** What multiplies the weights: the thread pool's threads and SIMD path, or tfjs's kernels. */
  get threads() {
    return this.loaded.threads;
  }

  dispose(): void {
    this.gpu?.dispose();
    this.loaded.dispose();
  }
}
