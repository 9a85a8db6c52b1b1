/**
 * The decoder's attention as one op per layer: from a layer's fused q/k/v projection to the
 * attended values [B·T, nH·D], the new keys and values written into the layer's cache (when there
 * is one). It owns the choices the decoder does not see:
 * - decode (one token per row) or prefill (many), over a cache or as a full recompute (no cache);
 * - fused or split. Fused, where our kernels are active (the wasm backend, MOI_KERNELS on) and
 *   every layer rotates its whole head: the q/k heads normed and rotated by one op reading qkv in
 *   place (prefillQk), attention by one op over the cache's buffers in place (decodeAttention,
 *   prefillAttention), the new keys and values copied into the cache straight from qkv's columns
 *   (no splits, no per-head reshapes). Split elsewhere: tfjs ops over q, k and v heads;
 * - a prefill ending past PREFILL_KERNEL_MAX_END runs split, where tfjs's batched matmuls win.
 * - with the weights in a thread pool of 2 threads or more, fused prefill attention runs the same
 *   kernel across the pool's threads, one (row, query head) a unit (core's pooledPrefillAttention:
 *   the same bits).
 * The ops below it choose kernel or composite per backend themselves (decodeAttention runs its
 * composite off wasm), so every path is correct on every backend.
 *
 * One AttentionPass serves one forward: the RoPE tables, masks and slot tables are made once for
 * all layers that share them and freed by dispose().
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  activeKernels,
  applyRope,
  attention,
  decodeAttention,
  fusedRmsNorm,
  pooledPrefillAttention,
  positionMask,
  prefillAttention,
  prefillQk,
  rmsNorm,
  ropeDecode,
  ropeTables,
  slotTable,
  type PrefillAttentionOptions,
  type RopeSpec,
  type ThreadPool,
} from '@moi/core';
import type { LayerCache } from './cache.ts';
import type { DecoderSpec, LayerSpec } from './spec.ts';

/**
 * Prefills ending past this position run attention split (tfjs's batched matmuls), which is
 * faster there. Measured on SmolLM2-135M (prompt prefilled in chunks of 512, kernel / composite,
 * tok/s): 128 tokens 173.6 / 164.7, 256: 169.8 / 158.5, 512: 149.5 / 147.4, 768: 138.2 / 145.5,
 * 1,024: 123.5 / 136.7, 1,536: 104.2 / 127.4.
 */
export const PREFILL_KERNEL_MAX_END = 512;

/** A layer's q/k norm weights (Qwen3, Gemma 3; null: none), as the two path kinds read them. */
export interface QkNorms {
  /** [D] each, for q and k heads apart */
  qNorm: tf.Tensor1D | null;
  kNorm: tf.Tensor1D | null;
  /** [nH + nKV, D], for the fused q/k heads */
  qkNormRows: tf.Tensor2D | null;
}

/** What one forward attends over. */
export interface PassInput {
  /** input rows, and tokens per row */
  B: number;
  T: number;
  /** the cache row of each input row */
  rows: number[];
  /** the position of each row's first token */
  start: number[];
  /** the per-layer caches; none: a full recompute from position 0 */
  cache?: LayerCache[];
  /** when a prompt is prefilled in chunks: its tokens from this forward's first to its end (see ForwardOptions) */
  prefillTokensLeft?: number;
  /** the thread pool holding the weights, if any: fused prefill attention runs across its threads */
  pool?: ThreadPool | null;
}

type Path = 'decodeFused' | 'decodeSplit' | 'prefillFused' | 'prefillSplit';

interface Rope {
  /** [B, 1, T, rotDim] */
  cos: tf.Tensor4D;
  sin: tf.Tensor4D;
  /** row n's tables as [N, D] (what prefillQk reads), made when first asked for */
  flat?: { cos: tf.Tensor; sin: tf.Tensor };
}

export class AttentionPass {
  private readonly path: Path;
  private readonly positions: number[][];
  private readonly ropes = new Map<RopeSpec, Rope>();
  private readonly shared = new Map<string, tf.Tensor>();
  /** tables made inside a layer's scope, kept for the later layers and disposed by dispose() */
  private readonly kept: tf.Tensor[] = [];

  constructor(
    private readonly s: DecoderSpec,
    private readonly p: PassInput,
  ) {
    this.positions = p.start.map((p0) => Array.from({ length: p.T }, (_, t) => p0 + t));
    const fused = activeKernels() !== null && s.layers.every((l) => l.rope.dim === s.headDim);
    const prefillEnd = Math.max(...p.start) + Math.max(p.T, p.prefillTokensLeft ?? p.T);
    if (p.T === 1) this.path = fused && p.cache ? 'decodeFused' : 'decodeSplit';
    else this.path = fused && prefillEnd <= PREFILL_KERNEL_MAX_END ? 'prefillFused' : 'prefillSplit';
  }

  /**
   * Layer li's attention over qkv [B·T, (nH + 2·nKV)·D] (q heads, k heads, v heads; the attention
   * scale already on q): the attended values [B·T, nH·D]. Call inside the layer's tf.tidy.
   */
  run(li: number, qkv: tf.Tensor2D, norms: QkNorms): tf.Tensor2D {
    const ls = this.s.layers[li];
    const c = this.p.cache?.[li];
    switch (this.path) {
      case 'decodeFused':
        return this.decodeFused(ls, c!, qkv, norms);
      case 'decodeSplit':
        return this.decodeSplit(ls, c, qkv, norms);
      case 'prefillFused':
        return this.prefillFused(ls, c, qkv, norms);
      case 'prefillSplit':
        return this.prefillSplit(ls, c, qkv, norms);
    }
  }

  dispose(): void {
    for (const t of this.kept) t.dispose();
  }

  // ---- the paths ----

  /** Decode, fused: the q/k heads normed and rotated in one op, the new key and value into the cache from qkv's columns. */
  private decodeFused(ls: LayerSpec, c: LayerCache, qkv: tf.Tensor2D, norms: QkNorms): tf.Tensor2D {
    const { B, rows } = this.p;
    const { numHeads: nH, numKvHeads: nKV, headDim: D } = this.s;
    const r = this.flatRope(ls.rope);
    const qk = prefillQk(qkv, {
      heads: nH + nKV,
      headDim: D,
      normWeight: norms.qkNormRows,
      eps: this.s.rmsNormEps,
      cos: r.cos,
      sin: r.sin,
    });
    c.appendRows(tf.reshape(qk, [B, (nH + nKV) * D]), nH * D, qkv, (nH + nKV) * D, rows);
    return this.overCache(ls, c, tf.slice(qk, [0, 0, 0], [B, nH, D]));
  }

  /** Decode, split: [B, heads·D] is already [B, heads, 1, D] in memory, no transposes. */
  private decodeSplit(ls: LayerSpec, c: LayerCache | undefined, qkv: tf.Tensor2D, norms: QkNorms): tf.Tensor2D {
    const { B, rows } = this.p;
    const { numHeads: nH, numKvHeads: nKV, headDim: D } = this.s;
    const [qkf, vf] = tf.split(qkv, [(nH + nKV) * D, nKV * D], 1);
    let qk: tf.Tensor = tf.reshape(qkf, [B, nH + nKV, D]);
    if (norms.qkNormRows) qk = fusedRmsNorm(qk, this.s.rmsNormEps, { weight: norms.qkNormRows }).y;
    qk = rotateDecode(qk as tf.Tensor3D, this.rope(ls.rope));
    const [q, k] = tf.split(qk, [nH, nKV], 1);
    const k4 = tf.reshape(k, [B, nKV, 1, D]) as tf.Tensor4D;
    const v4 = tf.reshape(vf, [B, nKV, 1, D]) as tf.Tensor4D;
    if (c) {
      c.append(k4, v4, rows);
      return this.overCache(ls, c, q);
    }
    const o = attention(
      tf.reshape(q, [B, nH, 1, D]) as tf.Tensor4D,
      k4,
      v4,
      this.mask(`full:${ls.window}`, this.positions, ls.window),
      { scale: 1, softcap: this.s.attnSoftcap },
    );
    return tf.reshape(o, [B, nH * D]) as tf.Tensor2D;
  }

  /** One decode step's q heads [B, nH, D] over the cache's buffers in place (our wasm kernel, or the composite elsewhere). */
  private overCache(ls: LayerSpec, c: LayerCache, q: tf.Tensor): tf.Tensor2D {
    const { rows, start } = this.p;
    return decodeAttention(q, c.keys, c.valuesT, {
      rows,
      window: ls.window,
      softcap: this.s.attnSoftcap,
      slots: () => this.keep(`slots:${c.size}:${c.window}:${c.alloc}`, () => slotTable(rows, start, c.slotPos)),
      mask: () =>
        this.mask(
          `${c.size}:${c.window}:1`,
          rows.map((r) => c.slotPos[r]),
          ls.window,
        ),
    });
  }

  /**
   * Prefill, fused: q/k norms and RoPE on the fused heads [N, nH + nKV, D] as in decode, then one
   * attention op reading q, k and v (in qkv) in place, then the new keys and values into the
   * cache (after attention read its prefix).
   */
  private prefillFused(ls: LayerSpec, c: LayerCache | undefined, qkv: tf.Tensor2D, norms: QkNorms): tf.Tensor2D {
    const { B, T, rows, start } = this.p;
    const { numHeads: nH, numKvHeads: nKV, headDim: D } = this.s;
    const r = this.flatRope(ls.rope);
    const qk = tf.reshape(
      prefillQk(qkv, {
        heads: nH + nKV,
        headDim: D,
        normWeight: norms.qkNormRows,
        eps: this.s.rmsNormEps,
        cos: r.cos,
        sin: r.sin,
      }),
      [B * T, (nH + nKV) * D],
    );
    const opts: PrefillAttentionOptions = {
      heads: nH,
      kvHeads: nKV,
      headDim: D,
      start,
      window: ls.window,
      softcap: this.s.attnSoftcap,
      vColumn: (nH + nKV) * D,
      prefix: c && start.some((p) => p > 0) ? { keys: c.keys, valuesT: c.valuesT, rows, slotPos: c.slotPos } : null,
    };
    // the same kernel across the pool's threads, from 2 (at 1 the copies in and out only cost)
    const pool = this.p.pool && this.p.pool.threads > 1 ? this.p.pool : null;
    const o = pool ? pooledPrefillAttention(pool, qk, qkv, opts) : prefillAttention(qk, qkv, opts);
    if (c) c.appendRows(qk, nH * D, qkv, (nH + nKV) * D, rows);
    return o;
  }

  /** Prefill, split: q, k, v as [B, heads, T, D], per-head norms, RoPE, then attention over the cache's view (or the chunk alone). */
  private prefillSplit(ls: LayerSpec, c: LayerCache | undefined, qkv: tf.Tensor2D, norms: QkNorms): tf.Tensor2D {
    const { B, T, rows } = this.p;
    const { numHeads: nH, numKvHeads: nKV, headDim: D, rmsNormEps: eps, attnSoftcap: softcap } = this.s;
    const heads = (x: tf.Tensor, n: number) => tf.transpose(tf.reshape(x, [B, T, n, D]), [0, 2, 1, 3]) as tf.Tensor4D;
    const [qf, kf, vf] = tf.split(qkv, [nH * D, nKV * D, nKV * D], 1);
    let q = heads(qf, nH);
    let k = heads(kf, nKV);
    const v = heads(vf, nKV);
    if (norms.qNorm && norms.kNorm) {
      q = rmsNorm(q, norms.qNorm, eps) as tf.Tensor4D;
      k = rmsNorm(k, norms.kNorm, eps) as tf.Tensor4D;
    }
    const { cos, sin } = this.rope(ls.rope);
    q = applyRope(q, cos, sin);
    k = applyRope(k, cos, sin);
    let o: tf.Tensor4D;
    if (c) {
      const view = c.updateAndFetch(k, v, rows);
      o = attention(q, view.keys, view.valuesT, this.mask(`${c.size}:${c.window}:${T}`, view.keyPositions, ls.window), {
        scale: 1,
        softcap,
        valuesTransposed: true,
      });
    } else {
      o = attention(q, k, v, this.mask(`full:${ls.window}`, this.positions, ls.window), { scale: 1, softcap });
    }
    return tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B * T, nH * D]) as tf.Tensor2D;
  }

  // ---- tables shared by the layers ----

  /** A tensor made once per pass under `key` (made inside a layer's scope: kept until dispose). */
  private keep(key: string, make: () => tf.Tensor): tf.Tensor {
    let t = this.shared.get(key);
    if (!t) {
      this.shared.set(key, (t = tf.keep(make())));
      this.kept.push(t);
    }
    return t;
  }

  /** The additive position mask of this pass's queries over keys at `keyPositions`, shared under `key`. */
  private mask(key: string, keyPositions: number[][], window: number | null): tf.Tensor {
    return this.keep(key, () => positionMask(this.positions, keyPositions, window));
  }

  /** RoPE tables [B, 1, T, rotDim] for this pass's positions, one set per rope spec. */
  private rope(spec: RopeSpec): Rope {
    let r = this.ropes.get(spec);
    if (!r) {
      const t = ropeTables(spec, this.positions);
      this.kept.push(tf.keep(t.cos), tf.keep(t.sin));
      this.ropes.set(spec, (r = t));
    }
    return r;
  }

  /** The same as [N, D] rows (full rotary dim). */
  private flatRope(spec: RopeSpec): { cos: tf.Tensor; sin: tf.Tensor } {
    const r = this.rope(spec);
    if (!r.flat) {
      const N = this.p.B * this.p.T;
      r.flat = {
        cos: tf.keep(tf.reshape(r.cos, [N, this.s.headDim])),
        sin: tf.keep(tf.reshape(r.sin, [N, this.s.headDim])),
      };
      this.kept.push(r.flat.cos, r.flat.sin);
    }
    return r.flat;
  }
}

/**
 * RoPE on the fused q/k heads of a decode step, x [B, heads, D]: x·cos + (x·R)·sin with R the
 * constant rotate-half matrix (packed once by XNNPACK; a per-step rotation matrix would be
 * re-packed every call, which measured slower). Partial rotary runs applyRope on [B, heads, 1, D].
 */
function rotateDecode(x: tf.Tensor3D, tables: { cos: tf.Tensor4D; sin: tf.Tensor4D }): tf.Tensor {
  const [B, heads, D] = x.shape;
  const rotDim = tables.cos.shape[3];
  if (rotDim !== D)
    return tf.reshape(applyRope(tf.reshape(x, [B, heads, 1, D]) as tf.Tensor4D, tables.cos, tables.sin), x.shape);
  // a wasm kernel, or the composite (x·cos + (x·R)·sin)
  return ropeDecode(x, tf.reshape(tables.cos, [B, 1, D]), tf.reshape(tables.sin, [B, 1, D]));
}
