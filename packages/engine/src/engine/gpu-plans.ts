/**
 * The engine's GPU plans (issue 23, phase B): on the webgpu backend `Engine.load` makes one
 * `GpuPlans`, which uploads the weights once into a `GpuWeightStore` (read from the checkpoint one
 * tensor at a time: the host holds one matrix and its staging copy at a time, never the model) and
 * lends `GpuDecodePlan`s over that store, one per (rows, capacity) in use: `generate()` takes a plan
 * of its batch for the call, the `Scheduler` one of `maxSeqs` rows for its life. A plan is lent to
 * one caller at a time (a plan's rows and KV cache are its state); returned plans wait for the next
 * caller of the same shape, a few at most. Capacities are rounded up to a power of two (≥ 64, at
 * most max_position_embeddings) so calls of similar lengths share a plan.
 *
 * `MOI_GPU_PLAN=0` (or `gpuPlan: false` in Engine.load) keeps the webgpu backend on the composite
 * path (tfjs ops) alone.
 */
import {
  Checkpoint,
  GpuDecodePlan,
  GpuRuntime,
  GpuWeightStore,
  gpuDevice,
  ModelError,
  UsageError,
  type HostTensor,
  type WeightsProvider,
} from '@moi/core';
import { expectedTensors, storedKind, type LoadedModel } from '@moi/models';

/** Where a call's decode ran (gpu-decode.ts), and why not on the plan when it did not. */
export interface GpuRoute {
  /** both: some rows of the call on the plan, the others (reason: the first one's) on the composite path */
  path: 'gpu-plan' | 'composite' | 'both';
  reason: string | null;
}

/** How the plan's matrices are stored on the GPU (norms, biases and the KV cache stay f32). */
export type GpuDtype = 'f32' | 'f16';

/** The --dtype values the GPU plan takes. */
export const GPU_DTYPE_CHOICES = ['auto', 'f32', 'f16'] as const;

/**
 * The plan's storage for a --dtype choice and the checkpoint's matrix dtypes, with a one-line note:
 * auto = f16 for a 16-bit checkpoint (bf16 words rounded to f16 at load; f16 kept), f32 for an f32
 * one (its exact values); f32 / f16 force it. A matrix with values past f16's range stays f32 (the
 * plan's notes say which). bf16 and q8 are the wasm path's packings, not the plan's.
 */
export function gpuDtypeFor(choice: string, matrixDtypes: Iterable<string>): { dtype: GpuDtype; note: string } {
  const { kind, mixed } = storedKind(matrixDtypes);
  const stored = mixed.length ? `mixed-dtype (${mixed.join(', ')})` : kind;
  switch (choice) {
    case 'f32':
      return { dtype: 'f32', note: `gpu plan: ${stored} checkpoint in f32 (--dtype f32)` };
    case 'f16':
      return {
        dtype: 'f16',
        note: `gpu plan: ${stored} checkpoint in f16 (--dtype f16${kind === 'f16' ? ', kept' : ', rounded to nearest at load'}), f32 accumulation`,
      };
    case 'auto':
      if (kind === 'f32') return { dtype: 'f32', note: `gpu plan: ${stored} checkpoint in f32` };
      return {
        dtype: 'f16',
        note: `gpu plan: ${kind} checkpoint in f16 (${kind === 'f16' ? 'kept' : 'bf16 rounded to f16 at load'}), f32 accumulation`,
      };
    default:
      throw new UsageError(
        'E_DTYPE',
        `--dtype ${choice}: the GPU plan on webgpu stores ${GPU_DTYPE_CHOICES.join(', ')} ` +
          '(bf16 and q8 are the wasm packings; MOI_GPU_PLAN=0 runs webgpu through the composite path, which takes them)',
        { field: 'dtype' },
      );
  }
}

/** Plans kept for reuse after their callers return them. */
const IDLE_PLANS = 3;
/** The first plan's capacity (built at load: it uploads the weights and compiles the pipelines). */
const FIRST_CAPACITY = 256;

/** MOI_GPU_PLAN=0 turns the GPU plan off (an explicit option wins). */
export function gpuPlanWanted(opt: boolean | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  if (opt !== undefined) return opt;
  return env.MOI_GPU_PLAN !== '0';
}

/** The capacity a plan is built with for `need` tokens: a power of two ≥ 64, at most `max`. */
export function planCapacity(need: number, max: number): number {
  let c = 64;
  while (c < need) c *= 2;
  return Math.min(c, max);
}

/**
 * The checkpoint as the plan reads it: HF graph names (the family's sanitize map) → host tensors
 * in their stored words (F32 as f32, BF16/F16 as 16-bit words, F64 narrowed to f32).
 */
function checkpointWeights(
  ckpt: Checkpoint,
  loaded: PlanSource,
): { read: WeightsProvider; dtypeOf(g: string): string } {
  const source = new Map<string, string>();
  for (const name of ckpt.names()) {
    const g = loaded.family.sanitize(name);
    if (g === null || (g === 'lm_head.weight' && loaded.spec.tieWordEmbeddings)) continue;
    source.set(g, name);
  }
  const read = (g: string): HostTensor | null => {
    const name = source.get(g);
    if (!name) return null;
    const info = ckpt.info(name);
    if (info.dtype === 'BF16' || info.dtype === 'F16') {
      const bytes = ckpt.readBytesRange(name, 0, info.byteLength);
      const words =
        bytes.byteOffset % 2 === 0
          ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2)
          : new Uint16Array(bytes.slice().buffer);
      return { data: words, dtype: info.dtype === 'BF16' ? 'bf16' : 'f16', shape: info.shape.slice() };
    }
    return { data: ckpt.readFloat32(name), dtype: 'f32', shape: info.shape.slice() };
  };
  return { read, dtypeOf: (g) => ckpt.info(source.get(g)!).dtype };
}

/** What the plans are built from: a loaded model, or just its folder, family and spec (a plan-only run). */
export type PlanSource = Pick<LoadedModel, 'dir' | 'family' | 'spec'>;

/** After the store is full, a plan never reads a weight: a read means a bug, not a missing file. */
const NO_MORE_READS: WeightsProvider = (g) => {
  throw new ModelError(
    'E_GPU_PLAN',
    `gpu plan: weight ${g} is not in the GPU weight store (it is filled by the first plan, at load)`,
  );
};

export class GpuPlans {
  /** plans waiting for a caller */
  private readonly idle: GpuDecodePlan[] = [];
  /** plans lent out */
  private readonly lent = new Set<GpuDecodePlan>();
  private disposed = false;

  private constructor(
    readonly loaded: PlanSource,
    readonly runtime: GpuRuntime,
    readonly store: GpuWeightStore,
    /** what the matrices are stored as, and why (one line, for the load report) */
    readonly dtypeNote: string,
  ) {}

  /**
   * Upload `loaded`'s checkpoint (re-read from its folder, one tensor at a time) in `dtype` and build
   * the first plan (1 row, FIRST_CAPACITY tokens), which compiles the pipelines.
   */
  static async create(loaded: PlanSource, choice: string): Promise<GpuPlans> {
    const runtime = new GpuRuntime(await gpuDevice());
    const ckpt = Checkpoint.open(loaded.dir);
    let first: GpuDecodePlan;
    let store: GpuWeightStore | null = null;
    let why: string;
    try {
      const weights = checkpointWeights(ckpt, loaded);
      const matrices = [...expectedTensors(loaded.spec)]
        .filter(([, shape]) => shape.length === 2)
        .map(([g]) => weights.dtypeOf(g));
      const { dtype, note } = gpuDtypeFor(choice, matrices);
      why = note;
      store = new GpuWeightStore(dtype);
      first = await GpuDecodePlan.create({
        runtime,
        spec: loaded.spec,
        weights: weights.read,
        store,
        batch: 1,
        capacity: planCapacity(FIRST_CAPACITY, loaded.spec.maxPositionEmbeddings),
        penalties: true,
      });
    } catch (err) {
      store?.dispose();
      throw err;
    } finally {
      ckpt.close();
    }
    const kept = store.notes.length ? `; ${store.notes.join('; ')}` : '';
    const plans = new GpuPlans(loaded, runtime, store, `${why!}${kept}`);
    plans.idle.push(first);
    return plans;
  }

  get dtype(): GpuDtype {
    return this.store.dtype;
  }

  /** Bytes of weights on the GPU. */
  get weightBytes(): number {
    return this.store.bytes;
  }

  /**
   * A plan of exactly `rows` rows holding at least `need` tokens a row, lent to the caller until
   * `release`; built over the store when none of that shape is idle.
   */
  async acquire(rows: number, need: number): Promise<GpuDecodePlan> {
    if (this.disposed) throw new ModelError('E_GPU_PLAN', 'gpu plans: the engine was disposed');
    const spec = this.loaded.spec;
    if (need > spec.maxPositionEmbeddings) {
      throw new ModelError(
        'E_CONTEXT',
        `gpu plan: ${need} tokens a row exceed max_position_embeddings ${spec.maxPositionEmbeddings}`,
      );
    }
    const fits = this.idle
      .filter((p) => p.batch === rows && p.capacity >= need)
      .sort((a, b) => a.capacity - b.capacity);
    let plan = fits[0];
    if (plan) this.idle.splice(this.idle.indexOf(plan), 1);
    else {
      plan = await GpuDecodePlan.create({
        runtime: this.runtime,
        spec,
        weights: NO_MORE_READS,
        store: this.store,
        batch: rows,
        capacity: planCapacity(need, spec.maxPositionEmbeddings),
        penalties: true,
      });
    }
    this.lent.add(plan);
    return plan;
  }

  /** Give a plan back: it waits for the next caller of its shape (the oldest idle ones beyond a few are freed). */
  release(plan: GpuDecodePlan): void {
    if (!this.lent.delete(plan)) return;
    if (this.disposed) {
      plan.dispose();
      return;
    }
    for (let r = 0; r < plan.batch; r++) plan.setRow(r, {});
    this.idle.push(plan);
    while (this.idle.length > IDLE_PLANS) this.idle.shift()!.dispose();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const p of this.idle) p.dispose();
    this.idle.length = 0;
    // lent plans are freed when their callers return them; the store goes now (they fail after this)
    for (const p of this.lent) p.dispose();
    this.lent.clear();
    this.store.dispose();
  }
}
