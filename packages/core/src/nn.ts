/**
 * The nn primitives the model families need, as tfjs ops.
 *
 * Layout conventions:
 * - linear weights are stored [in, out] (transposed once at load: transposeB is 5-10x slower on wasm);
 * - attention tensors are [batch, heads, time, headDim];
 * - masks are additive ([B|1, 1, Tq, Tk], 0 where allowed, MASKED where not).
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from './errors.ts';

/**
 * Additive mask value: large and finite, so a fully masked row never gives NaN; exp(−1e9 − max)
 * is exactly 0 on every backend (no subnormal in between that a GPU would flush differently).
 */
export const MASKED = -1e9;

// ---------------------------------------------------------------------------------------------
// constants kept as tensors (a JS number uploads a fresh scalar on every op)

/**
 * Kept tensors, per backend *instance*: a backend registered again under the same name (webgpu
 * over a new device, say) is a new instance, and a tensor kept for the old one would be read
 * back from it (which webgpu cannot do synchronously in Node).
 */
const keptByBackend = new WeakMap<tf.KernelBackend, Map<string, tf.Tensor>>();

/** The tensor kept under `key` for the active backend instance, made (and kept) on first use. */
function kept<T extends tf.Tensor>(key: string, make: () => T): T {
  const backend = tf.backend();
  let m = keptByBackend.get(backend);
  if (!m) keptByBackend.set(backend, (m = new Map()));
  let t = m.get(key) as T | undefined;
  if (!t || t.isDisposed) {
    t = tf.keep(make());
    m.set(key, t);
  }
  return t;
}

/** A kept float32 scalar tensor, created once per value and backend. */
export function scalar(v: number): tf.Scalar {
  return kept(`scalar:${v}`, () => tf.scalar(v, 'float32'));
}

// ---------------------------------------------------------------------------------------------
// linear

/** y = x·W (+ b), W stored [in, out]. x may have any leading dims. */
export function linear(x: tf.Tensor, w: tf.Tensor2D, b?: tf.Tensor1D | null): tf.Tensor {
  return tf.tidy(() => {
    const inDim = w.shape[0];
    const lead = x.shape.slice(0, -1);
    const x2 = x.rank === 2 ? (x as tf.Tensor2D) : (tf.reshape(x, [-1, inDim]) as tf.Tensor2D);
    let y: tf.Tensor = tf.matMul(x2, w);
    if (b) y = tf.add(y, b);
    return x.rank === 2 ? y : tf.reshape(y, [...lead, w.shape[1]]);
  });
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/**
 * y = x / sqrt(mean(x², last axis) + eps) · w.
 * Gemma stores w − 1 and applies (1 + w): pass `unitOffset: true`.
 */
export function rmsNorm(
  x: tf.Tensor,
  weight: tf.Tensor1D | null,
  eps: number,
  opts: { unitOffset?: boolean } = {},
): tf.Tensor {
  return tf.tidy(() => {
    const ms = tf.mean(tf.square(x), -1, true);
    // eps (a config's rms_norm_eps, 1e-5 or 1e-6) is a normal float32, so a GPU keeps it: an
    // all-zero row (ms = 0, or squares flushed to 0) gives rsqrt(eps), finite
    const y = tf.mul(x, tf.rsqrt(tf.add(ms, scalar(eps))));
    if (!weight) return y;
    const w = opts.unitOffset ? tf.add(weight, scalar(1)) : weight;
    return tf.mul(y, w);
  });
}

// ---------------------------------------------------------------------------------------------
// activations

/** GELU with the tanh approximation (HF's gelu_pytorch_tanh / gelu_new). */
export function geluTanh(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    // x³ underflows (0 on a GPU) only where it is negligible next to the x it is added to
    const inner = tf.mul(scalar(Math.sqrt(2 / Math.PI)), tf.add(x, tf.mul(scalar(0.044715), tf.pow(x, scalar(3)))));
    return tf.mul(tf.mul(scalar(0.5), x), tf.add(scalar(1), tf.tanh(inner)));
  });
}

export type Activation = 'silu' | 'gelu_tanh';

export function activation(name: string): Activation {
  switch (name) {
    case 'silu':
    case 'swish':
      return 'silu';
    case 'gelu_pytorch_tanh':
    case 'gelu_new':
    case 'gelu_tanh':
    case 'gelu':
      return 'gelu_tanh';
    default:
      throw new ModelError('E_CONFIG', `unsupported activation '${name}' (supported: silu, gelu_pytorch_tanh)`);
  }
}

export function applyActivation(x: tf.Tensor, act: Activation): tf.Tensor {
  return act === 'silu' ? tf.tidy(() => tf.mul(x, tf.sigmoid(x))) : geluTanh(x);
}

/** Soft-capping as Gemma 2 does: cap · tanh(x / cap). */
export function softcap(x: tf.Tensor, cap: number | null | undefined): tf.Tensor {
  if (!cap) return x;
  // cap > 0 from the config (1/cap normal for any cap below 8e37); tanh saturates, never NaN
  return tf.tidy(() => tf.mul(tf.tanh(tf.mul(x, scalar(1 / cap))), scalar(cap)));
}

// ---------------------------------------------------------------------------------------------
// gated MLP

/**
 * down(act(x·Wgate) ⊙ x·Wup). With `gateUp` the gate and up weights are one fused [in, 2·I]
 * matrix (gate columns first): one matmul instead of two.
 */
export function gatedMlp(
  x: tf.Tensor,
  w: {
    gate?: tf.Tensor2D;
    up?: tf.Tensor2D;
    gateUp?: tf.Tensor2D;
    down: tf.Tensor2D;
    /** optional biases (Llama's mlp_bias): the fused gate/up bias, and down's */
    gateUpBias?: tf.Tensor1D | null;
    downBias?: tf.Tensor1D | null;
  },
  act: Activation,
): tf.Tensor {
  return tf.tidy(() => {
    let gate: tf.Tensor;
    let up: tf.Tensor;
    if (w.gateUp) {
      const inter = w.gateUp.shape[1] / 2;
      const h = linear(x, w.gateUp, w.gateUpBias);
      [gate, up] = tf.split(h, [inter, inter], -1);
    } else {
      if (!w.gate || !w.up) throw new ModelError('E_WEIGHTS', 'gatedMlp needs gate and up, or gateUp');
      gate = linear(x, w.gate);
      up = linear(x, w.up);
    }
    return linear(tf.mul(applyActivation(gate, act), up), w.down, w.downBias);
  });
}

// ---------------------------------------------------------------------------------------------
// rotary position embeddings

/** HF's `rope_scaling` dict (names as in config.json). */
export interface RopeScaling {
  rope_type?: string;
  type?: string;
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
  [k: string]: unknown;
}

export interface RopeSpec {
  /** dims that rotate (head_dim × partial_rotary_factor) */
  dim: number;
  base: number;
  scaling?: RopeScaling | null;
  /** config.max_position_embeddings (used by dynamic and llama3) */
  maxPositionEmbeddings?: number;
}

export const ROPE_TYPES = ['default', 'linear', 'llama3', 'dynamic'] as const;

function ropeType(s: RopeScaling | null | undefined): string {
  return (s?.rope_type ?? s?.type ?? 'default') as string;
}

/**
 * Inverse frequencies and the attention scaling factor, as HF's ROPE_INIT_FUNCTIONS compute them.
 * `seqLen` matters only for `dynamic` (NTK) scaling: the base grows once seqLen passes
 * max_position_embeddings.
 */
export function ropeInvFreq(spec: RopeSpec, seqLen?: number): { invFreq: Float64Array; attentionScaling: number } {
  const { dim } = spec;
  let base = spec.base;
  const s = spec.scaling ?? null;
  const type = ropeType(s);
  const half = dim / 2;
  const make = (b: number) => {
    const f = new Float64Array(half);
    for (let i = 0; i < half; i++) f[i] = 1 / Math.pow(b, (2 * i) / dim);
    return f;
  };
  switch (type) {
    case 'default':
      return { invFreq: make(base), attentionScaling: 1 };
    case 'linear': {
      const factor = need(s, 'factor');
      const f = make(base);
      for (let i = 0; i < half; i++) f[i] /= factor;
      return { invFreq: f, attentionScaling: 1 };
    }
    case 'dynamic': {
      const factor = need(s, 'factor');
      const maxPos = spec.maxPositionEmbeddings ?? need(s, 'original_max_position_embeddings');
      const len = Math.max(seqLen ?? maxPos, maxPos);
      base = base * Math.pow((factor * len) / maxPos - (factor - 1), dim / (dim - 2));
      return { invFreq: make(base), attentionScaling: 1 };
    }
    case 'llama3': {
      const factor = need(s, 'factor');
      const low = need(s, 'low_freq_factor');
      const high = need(s, 'high_freq_factor');
      const oldLen = need(s, 'original_max_position_embeddings');
      const lowWavelen = oldLen / low;
      const highWavelen = oldLen / high;
      const f = make(base);
      for (let i = 0; i < half; i++) {
        const wavelen = (2 * Math.PI) / f[i];
        if (wavelen > lowWavelen) f[i] = f[i] / factor;
        else if (wavelen >= highWavelen) {
          const smooth = (oldLen / wavelen - low) / (high - low);
          f[i] = (1 - smooth) * (f[i] / factor) + smooth * f[i];
        }
      }
      return { invFreq: f, attentionScaling: 1 };
    }
    default:
      throw new ModelError('E_CONFIG', `unsupported rope_scaling type '${type}' (supported: ${ROPE_TYPES.join(', ')})`);
  }
}

function need(s: RopeScaling | null, key: string): number {
  const v = s?.[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new ModelError(
      'E_CONFIG',
      `rope_scaling.${key} is required for rope type '${ropeType(s)}' (got ${JSON.stringify(v)})`,
    );
  }
  return v;
}

/**
 * cos/sin tables for the given positions, shaped [B, 1, T, dim] (HF layout: the half-frequencies
 * repeated twice), already multiplied by the attention scaling factor.
 */
export function ropeTables(spec: RopeSpec, positions: number[][]): { cos: tf.Tensor4D; sin: tf.Tensor4D } {
  const B = positions.length;
  const T = positions[0].length;
  let maxPos = 0;
  for (const row of positions) for (const p of row) if (p > maxPos) maxPos = p;
  const { invFreq, attentionScaling } = ropeInvFreq(spec, maxPos + 1);
  const dim = spec.dim;
  const half = dim / 2;
  const cos = new Float32Array(B * T * dim);
  const sin = new Float32Array(B * T * dim);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const p = positions[b][t];
      const o = (b * T + t) * dim;
      for (let i = 0; i < half; i++) {
        // HF multiplies in float32: round the angle as it does. Host-side float64; the uploaded
        // cos/sin are normal (ang ≥ min invFreq ≈ 1e-8 for p ≥ 1) or exactly 0 (p = 0), so a
        // GPU reads them as written
        const ang = Math.fround(Math.fround(invFreq[i]) * p);
        const c = Math.cos(ang) * attentionScaling;
        const s = Math.sin(ang) * attentionScaling;
        cos[o + i] = c;
        cos[o + i + half] = c;
        sin[o + i] = s;
        sin[o + i + half] = s;
      }
    }
  }
  return { cos: tf.tensor4d(cos, [B, 1, T, dim]), sin: tf.tensor4d(sin, [B, 1, T, dim]) };
}

/** The [dim, dim] matrix R with x·R = rotate_half(x) = concat(−x2, x1). */
export function rotateHalfMatrix(dim: number): tf.Tensor2D {
  return kept(`rotate-half:${dim}`, () => {
    const half = dim / 2;
    const m = new Float32Array(dim * dim);
    for (let j = 0; j < half; j++) {
      m[(j + half) * dim + j] = -1; // out[j] = −x[j+half]
      m[j * dim + (j + half)] = 1; // out[j+half] = x[j]
    }
    return tf.tensor2d(m, [dim, dim]);
  });
}

/**
 * Rotary embedding on x [B, H, T, D] with cos/sin [B|1, 1, T, rotDim]. Where rotDim < D
 * (partial rotary), only the first rotDim dims rotate.
 */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const D = x.shape[3];
    const rot = cos.shape[3];
    const [B, H, T] = x.shape;
    if (rot === D) {
      const rotated = tf.reshape(tf.matMul(tf.reshape(x, [-1, D]), rotateHalfMatrix(D)), [B, H, T, D]);
      return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
    }
    const [xr, xp] = tf.split(x, [rot, D - rot], 3);
    const rotated = tf.reshape(tf.matMul(tf.reshape(xr, [-1, rot]), rotateHalfMatrix(rot)), [B, H, T, rot]);
    return tf.concat([tf.add(tf.mul(xr, cos), tf.mul(rotated, sin)), xp], 3) as tf.Tensor4D;
  });
}

// ---------------------------------------------------------------------------------------------
// attention

export interface AttentionOptions {
  /** multiplies q·kᵀ (1/√head_dim, or query_pre_attn_scalar^-½ for Gemma 2/3) */
  scale: number;
  /** Gemma 2's attn_logit_softcapping */
  softcap?: number | null;
  /** v is given as [B, nKV, D, Tk] (the KV cache's layout) */
  valuesTransposed?: boolean;
}

/**
 * Grouped-query attention. q [B, nH, Tq, D]; k, v [B, nKV, Tk, D] (v as [B, nKV, D, Tk] with
 * `valuesTransposed`) with nH a multiple of nKV
 * (query head h reads kv head ⌊h / (nH/nKV)⌋); mask additive [B|1, 1, Tq, Tk] or null.
 * Returns [B, nH, Tq, D].
 */
export function attention(
  q: tf.Tensor4D,
  k: tf.Tensor4D,
  v: tf.Tensor4D,
  mask: tf.Tensor | null,
  opts: AttentionOptions,
): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, nH, Tq, D] = q.shape;
    const nKV = k.shape[1];
    const Tk = k.shape[2];
    if (nH % nKV !== 0)
      throw new ModelError('E_CONFIG', `num_attention_heads ${nH} is not a multiple of num_key_value_heads ${nKV}`);
    const G = nH / nKV;
    const qs = opts.scale === 1 ? q : tf.mul(q, scalar(opts.scale));
    // the per-head loop is a wasm (XNNPACK) workaround; GPU and other backends take one batched op
    if (Tq > 1 && tf.getBackend() === 'wasm') return attentionPerHead(qs, k, v, mask, opts, G);
    const qg = tf.reshape(qs, [B, nKV, G * Tq, D]);
    let scores: tf.Tensor = tf.matMul(qg, k, false, true); // [B, nKV, G·Tq, Tk]
    scores = softcap(scores, opts.softcap);
    if (mask)
      scores = tf.reshape(
        tf.add(tf.reshape(scores, [B, nKV, G, Tq, Tk]), tf.reshape(mask, [mask.shape[0], 1, 1, Tq, Tk])),
        [B, nKV, G * Tq, Tk],
      );
    const probs = tf.softmax(scores);
    const out = opts.valuesTransposed ? tf.matMul(probs, v, false, true) : tf.matMul(probs, v);
    return tf.reshape(out, [B, nH, Tq, D]) as tf.Tensor4D;
  });
}

/**
 * Attention for many queries (prefill) as plain 2-D matmuls, one (row, kv head) at a time: on
 * wasm, batched or transposed matmuls fall to a scalar loop (~1.25 GMAC/s) while 2-D ones run on
 * XNNPACK. Each B operand is a fresh tensor (a transposed copy), so XNNPACK's packing cache,
 * keyed by tensor id, never sees a buffer that changed in place.
 */
function attentionPerHead(
  q: tf.Tensor,
  k: tf.Tensor4D,
  v: tf.Tensor4D,
  mask: tf.Tensor | null,
  opts: AttentionOptions,
  G: number,
): tf.Tensor4D {
  const [B, nH, Tq, D] = q.shape;
  const nKV = k.shape[1];
  const Tk = k.shape[2];
  const qh = tf.unstack(tf.reshape(q, [B * nKV, G * Tq, D]));
  const kh = tf.unstack(tf.reshape(k, [B * nKV, Tk, D]));
  const vh = tf.unstack(opts.valuesTransposed ? tf.reshape(v, [B * nKV, D, Tk]) : tf.reshape(v, [B * nKV, Tk, D]));
  const masks = mask ? tf.unstack(tf.reshape(mask, [mask.shape[0], 1, Tq, Tk])) : null;
  const outs: tf.Tensor[] = [];
  for (let i = 0; i < B * nKV; i++) {
    let scores: tf.Tensor = softcap(tf.matMul(qh[i], tf.transpose(kh[i])), opts.softcap); // [G·Tq, Tk]
    if (masks)
      scores = tf.reshape(
        tf.add(tf.reshape(scores, [G, Tq, Tk]), masks[masks.length === 1 ? 0 : Math.floor(i / nKV)]),
        [G * Tq, Tk],
      );
    const probs = tf.softmax(scores);
    outs.push(tf.matMul(probs, opts.valuesTransposed ? tf.transpose(vh[i]) : vh[i]));
  }
  return tf.reshape(tf.stack(outs), [B, nH, Tq, D]) as tf.Tensor4D;
}

/**
 * An additive mask [B, 1, Tq, Tk] from absolute positions: query at position p sees a key at
 * position s when 0 ≤ s ≤ p and, with a window w, p − s < w. Key positions < 0 mark empty slots.
 */
export function positionMask(qPos: number[][], kPos: number[][], window?: number | null): tf.Tensor4D {
  const B = qPos.length;
  const Tq = qPos[0].length;
  const Tk = kPos[0].length;
  const m = new Float32Array(B * Tq * Tk);
  for (let b = 0; b < B; b++) {
    const kp = kPos[b];
    for (let i = 0; i < Tq; i++) {
      const p = qPos[b][i];
      const o = (b * Tq + i) * Tk;
      for (let j = 0; j < Tk; j++) {
        const s = kp[j];
        const ok = s >= 0 && s <= p && (!window || p - s < window);
        m[o + j] = ok ? 0 : MASKED;
      }
    }
  }
  return tf.tensor4d(m, [B, 1, Tq, Tk]);
}
