/**
 * What the GPU decode plan reads: the model's shape (core's DecoderShape, which @moi/models'
 * DecoderSpec extends) and a weights provider (HF graph name → host tensor in f32, f16 or bf16
 * words), plus the host-side
 * layout work done once at build: q/k/v and gate/up stacked, rows padded to a multiple of 8,
 * matrices stored as f32 or f16 (bf16 converted; a matrix with a value past f16's range, 65504,
 * stays f32 and the plan notes it), norm weights made effective (Gemma's 1 + w). A GpuWeightStore
 * holds the uploaded weights once for every plan built over it (the engine's plans of several
 * batch sizes and capacities share one copy on the GPU).
 */
import { bf16ToF32, f16ToF32, f32ToF16 } from '../../dtype.ts';
import { ModelError } from '../../errors.ts';
import type { DecoderShape, LayerShape } from '../../decoder-shape.ts';
import { padK } from './linear.ts';

/** A layer as the plan runs it (the shape every backend reads). */
export type GpuLayerSpec = LayerShape;

/** The decoder description the plan runs: @moi/models' DecoderSpec satisfies it as is. */
export type GpuModelSpec = DecoderShape;

/** One tensor as the checkpoint holds it: f32 values, or 16-bit words (f16 or bf16). */
export interface HostTensor {
  data: Float32Array | Uint16Array;
  dtype: 'f32' | 'f16' | 'bf16';
  shape: number[];
}

/** HF graph name (model.layers.3.self_attn.q_proj.weight, …) → the tensor; absent: null/undefined. */
export type WeightsProvider = (name: string) => HostTensor | null | undefined;

/** The largest finite f16. */
export const F16_MAX = 65504;

/** A tensor the plan needs, checked against the shape the spec implies (ModelError naming it). */
export function need(weights: WeightsProvider, name: string, shape: number[]): HostTensor {
  const t = weights(name);
  if (!t) throw new ModelError('E_MISSING_TENSORS', `gpu plan: missing tensor ${name}`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new ModelError(
      'E_SHAPE',
      `gpu plan: tensor ${name} has shape [${t.shape.join(', ')}] but the config implies [${shape.join(', ')}]`,
    );
  }
  const n = shape.reduce((a, b) => a * b, 1);
  const wantArray = t.dtype === 'f32' ? Float32Array : Uint16Array;
  if (!(t.data instanceof wantArray) || t.data.length !== n) {
    throw new ModelError(
      'E_SHAPE',
      `gpu plan: tensor ${name} (${t.dtype}) holds ${t.data.length} ${t.data.constructor.name} values for ${n} elements`,
    );
  }
  return t;
}

export function toF32(t: HostTensor): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  return t.dtype === 'f16' ? f16ToF32(t.data as Uint16Array) : bf16ToF32(t.data as Uint16Array);
}

/** A matrix as the GPU holds it: [rows, KP] f32 or f16 words, rows padded with zeros. */
export interface StoredMatrix {
  rows: number;
  K: number;
  dtype: 'f32' | 'f16';
  data: Float32Array | Uint16Array;
}

/**
 * Stack [out, K] parts into one [Σout, KP] matrix in `want` storage. With f16, a part holding a
 * value past ±65504 makes the whole matrix f32, and `notes` gets a line naming it.
 */
export function stackRows(
  parts: { name: string; t: HostTensor }[],
  K: number,
  want: 'f32' | 'f16',
  notes: string[],
): StoredMatrix {
  const KP = padK(K);
  const rows = parts.reduce((n, p) => n + p.t.shape[0], 0);
  const f32s = parts.map((p) => toF32(p.t));
  let dtype = want;
  if (want === 'f16') {
    for (const [i, v] of f32s.entries()) {
      let over = 0;
      for (let j = 0; j < v.length; j++) if (!(Math.abs(v[j]) <= F16_MAX)) over++;
      if (over) {
        notes.push(
          `${parts[i].name}: ${over} value(s) outside f16's range (±${F16_MAX}); ${parts.map((p) => p.name).join(' + ')} kept in f32`,
        );
        dtype = 'f32';
      }
    }
  }
  const full = new Float32Array(rows * KP);
  let r0 = 0;
  for (const [i, p] of parts.entries()) {
    const v = f32s[i];
    const n = p.t.shape[0];
    if (KP === K) full.set(v, r0 * KP);
    else for (let r = 0; r < n; r++) full.set(v.subarray(r * K, (r + 1) * K), (r0 + r) * KP);
    r0 += n;
  }
  return { rows, K, dtype, data: dtype === 'f16' ? f32ToF16(full) : full };
}

/** The effective norm weight (Gemma: 1 + w), padded to `len` with zeros. */
export function normVector(t: HostTensor, unitOffset: boolean, len: number): Float32Array {
  const w = toF32(t);
  const out = new Float32Array(len);
  for (let i = 0; i < w.length; i++) out[i] = unitOffset ? 1 + w[i] : w[i];
  return out;
}

/** Vectors concatenated as f32. */
export function catVectors(ts: HostTensor[]): Float32Array {
  const parts = ts.map(toF32);
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** One uploaded weight: a vector or matrix (one buffer), or a vocabulary table (its blocks). */
export interface StoredWeight {
  buffers: GPUBuffer[];
  dtype: 'f32' | 'f16';
  /** rows per block (vocabulary tables only) */
  blockRows?: number;
}

/**
 * The weights on the GPU, uploaded by the first plan built over the store and shared by every
 * later one (by label: `model.layers.3.self_attn.qkv`, …). The store owns the buffers: a plan's
 * dispose leaves them; the store's frees them. One store serves one device and one dtype.
 */
export class GpuWeightStore {
  /** load notes (matrices kept in f32, …) */
  readonly notes: string[] = [];
  /** bytes of weights held */
  bytes = 0;
  private readonly entries = new Map<string, StoredWeight>();
  private disposed = false;

  constructor(readonly dtype: 'f32' | 'f16') {}

  get(label: string): StoredWeight | undefined {
    if (this.disposed) throw new ModelError('E_GPU_PLAN', 'gpu weight store: used after dispose');
    return this.entries.get(label);
  }

  put(label: string, w: StoredWeight): StoredWeight {
    this.entries.set(label, w);
    for (const b of w.buffers) this.bytes += b.size;
    return w;
  }

  get size(): number {
    return this.entries.size;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const w of this.entries.values()) for (const b of w.buffers) b.destroy();
    this.entries.clear();
  }
}
