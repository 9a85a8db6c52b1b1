/**
 * The decoder-only transformer graph shared by every family (Llama, Qwen2/3, Gemma 1/2/3): the
 * families differ only in the DecoderSpec their config maps to and in checkpoint names.
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  activeKernels, applyActivation, applyRope, attention, decodeAttention, disposePacked, embedRowsOf, fusedRmsNorm, gatedMlp, isPacked, isVocabBlocks, linear, MASKED,
  ModelError, packedBytes, packedMatMul, positionMask, prefillAttention, prefillQk, rmsNorm, ropeTables, ropeDecode, scalar, slotTable, softcap,
  type Activation, type EmbedSource, type PackedWeight, type RopeSpec, type VocabBlocks,
} from '@moi/core';
import { KVCache } from './cache.ts';
import type { DecoderSpec } from './spec.ts';

/**
 * A linear layer's weight: f32 laid out [in, out] (norms and scales folded in, see weights.ts), or
 * a packed 16/8-bit weight in the checkpoint's [out, in] layout (nothing folded, see packed-weights.ts).
 */
export type Matrix = tf.Tensor2D | PackedWeight;

/**
 * One layer's weights, q/k/v and gate/up fused. f32 matrices are laid out [in, out] with the input
 * and pre-MLP norms and the attention scale folded in (see weights.ts); packed matrices keep
 * [out, in] and carry no fold: the norms are then `inputNorm` / `mlpNorm` and the scale `qkvScale`.
 * Norm weights held here are effective values (Gemma's 1 + w already added).
 */
export interface LayerWeights {
  /** [H, (nH + 2·nKV)·D], input norm folded into its rows; q columns carry the attention scale unless q/k norm does (packed: [(nH + 2·nKV)·D, H]) */
  qkv: Matrix;
  qkvBias: tf.Tensor1D | null;
  /** q/k norm (Qwen3, Gemma 3): [D] each, q's scaled by the attention scale */
  qNorm: tf.Tensor1D | null;
  kNorm: tf.Tensor1D | null;
  /** the same as [(nH + nKV), D] rows, for the decode path's fused q/k */
  qkNormRows: tf.Tensor2D | null;
  o: Matrix;
  oBias: tf.Tensor1D | null;
  /** Gemma 2/3: post_attention_layernorm and post_feedforward_layernorm */
  postAttnNorm: tf.Tensor1D | null;
  postMlpNorm: tf.Tensor1D | null;
  /** [H, 2·I], pre-MLP norm folded into its rows (gate columns first) */
  gateUp: Matrix;
  gateUpBias: tf.Tensor1D | null;
  down: Matrix;
  downBias: tf.Tensor1D | null;
  /** packed matrices only (null with f32, where they are folded): the input and pre-MLP norm weights */
  inputNorm: tf.Tensor1D | null;
  mlpNorm: tf.Tensor1D | null;
  /** packed matrices only: qkv's output scale (the attention scale on q's features), when no q/k norm carries it */
  qkvScale: tf.Tensor1D | null;
}

export interface DecoderWeights {
  /** raw embedding rows [V, H] (f32, packed, or f32 in vocabulary blocks); null when tied (then the rows are lmHead's) */
  embed: tf.Tensor2D | PackedWeight | VocabBlocks | null;
  layers: LayerWeights[];
  /** effective final norm weight */
  finalNorm: tf.Tensor1D;
  /** f32 [H, V]: lm_head transposed, or the tied embedding transposed (stored once); packed: [V, H], the embedding itself when tied */
  lmHead: Matrix | VocabBlocks;
}


/** Bytes a weight holds: f32 tensor, packed 16/8-bit, or f32 in vocabulary blocks. */
export function weightBytesOf(t: tf.Tensor | PackedWeight | VocabBlocks): number {
  return isPacked(t) ? packedBytes(t) : isVocabBlocks(t) ? t.bytes : t.size * 4;
}

/** x · W (+ bias) for either kind of matrix; `outScale` (packed only) multiplies output features before the bias. */
export function project(x: tf.Tensor, m: Matrix, bias: tf.Tensor1D | null, outScale: tf.Tensor1D | null = null): tf.Tensor {
  if (!isPacked(m)) return linear(x, m, bias);
  return packedMatMul(x as tf.Tensor2D, m, { bias, outScale });
}

/** The gated MLP over packed gate/up and down matrices (the f32 one is @moi/core's gatedMlp). */
function packedMlp(x: tf.Tensor, gateUp: PackedWeight, down: PackedWeight, gateUpBias: tf.Tensor1D | null, downBias: tf.Tensor1D | null, act: Activation): tf.Tensor {
  return tf.tidy(() => {
    const inter = gateUp.rows / 2;
    const [gate, up] = tf.split(packedMatMul(x as tf.Tensor2D, gateUp, { bias: gateUpBias }), [inter, inter], -1);
    return packedMatMul(tf.mul(applyActivation(gate, act), up) as tf.Tensor2D, down, { bias: downBias });
  });
}

export interface ForwardInput {
  /** token ids per row (all rows the same length) */
  ids?: number[][];
  /** or input embeddings [B, T, H]: raw embedding-space vectors, scaled inside as for ids */
  embeds?: tf.Tensor3D;
}

export interface ForwardOptions {
  /** the per-layer caches; without them the pass is a full recompute from position 0 */
  cache?: KVCache[];
  /** which cache rows the input rows are (default: all rows, in order) */
  rows?: number[];
  /** logits of the last position only (generation); default all positions */
  lastOnly?: boolean;
  /**
   * When a prompt is prefilled in chunks: its tokens from this forward's first to its end (default
   * this forward's T). Prefill attention runs on our kernel while the prefill ends at or before
   * PREFILL_KERNEL_MAX_END and on the composite beyond; every chunk of one prompt then takes the
   * path that one whole prefill of it takes, so chunked still equals one prefill bit for bit.
   */
  prefillTokensLeft?: number;
}

/**
 * Prefills ending past this position run attention on the composite (tfjs's batched matmuls),
 * which is faster there. Measured on SmolLM2-135M (prompt prefilled in chunks of 512, kernel /
 * composite, tok/s): 128 tokens 173.6 / 164.7, 256: 169.8 / 158.5, 512: 149.5 / 147.4, 768:
 * 138.2 / 145.5, 1,024: 123.5 / 136.7, 1,536: 104.2 / 127.4.
 */
export const PREFILL_KERNEL_MAX_END = 512;

export class Decoder {
  constructor(readonly spec: DecoderSpec, readonly weights: DecoderWeights) {}

  /** Allocate one cache per layer: sliding layers get a rotating buffer of their window. */
  makeCache(batch: number, capacity: number, opts: { noInPlace?: boolean } = {}): KVCache[] {
    const s = this.spec;
    if (capacity > s.maxPositionEmbeddings) {
      throw new ModelError('E_CONTEXT', `requested context ${capacity} exceeds max_position_embeddings ${s.maxPositionEmbeddings}`);
    }
    return s.layers.map((l) => new KVCache({
      batch, kvHeads: s.numKvHeads, headDim: s.headDim, capacity, window: l.window, noInPlace: opts.noInPlace,
    }));
  }

  /** Logits [B, T or 1, V]. The caller owns the result. */
  forward(input: ForwardInput, opts: ForwardOptions = {}): tf.Tensor3D {
    const s = this.spec;
    const w = this.weights;
    const cache = opts.cache;
    const B = input.ids ? input.ids.length : input.embeds!.shape[0];
    const T = input.ids ? input.ids[0].length : input.embeds!.shape[1];
    const rows = opts.rows ?? Array.from({ length: B }, (_, i) => i);
    if (input.ids && (T === 0 || input.ids.some((r) => r.length !== T))) {
      throw new ModelError('E_FORWARD', `forward: ids rows must be non-empty and of one length (got ${input.ids.map((r) => r.length).join(', ')})`);
    }
    if (rows.length !== B) throw new ModelError('E_FORWARD', `forward: ${B} input rows but ${rows.length} cache rows`);
    // all layers first: a sliding layer must not write before a full layer finds no room
    if (cache) for (const c of cache) c.checkFits(rows, T);
    const start = cache ? rows.map((r) => cache[0].offset[r]) : rows.map(() => 0);
    const positions = start.map((p0) => Array.from({ length: T }, (_, t) => p0 + t));
    const maxPos = Math.max(...positions.map((p) => p[T - 1]));
    if (maxPos >= s.maxPositionEmbeddings && !s.layers.every((l) => l.window)) {
      throw new ModelError('E_CONTEXT', `context overflow: position ${maxPos} is past max_position_embeddings ${s.maxPositionEmbeddings}`);
    }

    return tf.tidy(() => {
      const N = B * T;
      const D = s.headDim;
      const nH = s.numHeads;
      const nKV = s.numKvHeads;
      const eps = s.rmsNormEps;
      // the hidden state is 2-D [B·T, H] throughout: linear layers need no reshapes
      let h: tf.Tensor = input.ids
        ? this.embedRows(tf.tensor1d(input.ids.flat(), 'int32'))
        : tf.reshape(input.embeds!, [N, s.hiddenSize]);
      if (s.embedScale !== null) h = tf.mul(h, scalar(s.embedScale));

      // rope tables and masks are shared by all layers with the same rope / window
      const ropes = new Map<RopeSpec, { cos: tf.Tensor4D; sin: tf.Tensor4D; dcos?: tf.Tensor; dsin?: tf.Tensor }>();
      const masks = new Map<string, tf.Tensor>();
      // (made inside a layer's scope, so kept explicitly and disposed after the last layer)
      const kept: tf.Tensor[] = [];
      const rope = (spec: RopeSpec) => {
        let r = ropes.get(spec);
        if (!r) {
          const t = ropeTables(spec, positions);
          kept.push(tf.keep(t.cos), tf.keep(t.sin));
          ropes.set(spec, (r = t));
        }
        return r;
      };
      const mask = (key: string, keyPositions: number[][], window: number | null) => {
        let m = masks.get(key);
        if (!m) masks.set(key, (m = tf.keep(positionMask(positions, keyPositions, window))));
        if (!kept.includes(m)) kept.push(m);
        return m;
      };

      const shared = (key: string, make: () => tf.Tensor) => {
        let t = masks.get(key);
        if (!t) {
          masks.set(key, (t = tf.keep(make())));
          kept.push(t);
        }
        return t;
      };

      // q/k norms and RoPE as one op over the fused projection, attention as one kernel (wasm,
      // kernels on, full rotary dim): prefill always, decode with a cache; else the composite path
      const qkKernels = activeKernels() !== null && s.layers.every((l) => l.rope.dim === D);
      const prefillEnd = Math.max(...start) + Math.max(T, opts.prefillTokensLeft ?? T);
      const prefillKernels = T > 1 && qkKernels && prefillEnd <= PREFILL_KERNEL_MAX_END;
      // row n's RoPE tables as [N, D] (what prefillQk reads)
      const flatRope = (spec: RopeSpec) => {
        const r = rope(spec);
        if (!r.dcos || !r.dsin) kept.push((r.dcos = tf.keep(tf.reshape(r.cos, [N, D]))), (r.dsin = tf.keep(tf.reshape(r.sin, [N, D]))));
        return { cos: r.dcos, sin: r.dsin };
      };

      // one scope per layer: only one layer's intermediates are alive at a time
      const layer = (li: number, h: tf.Tensor): tf.Tensor => {
        const lw = w.layers[li];
        const ls = s.layers[li];
        const xn = lw.inputNorm ? fusedRmsNorm(h, eps, { weight: lw.inputNorm }).y : fusedRmsNorm(h, eps).y;
        const qkv = project(xn, lw.qkv, lw.qkvBias, lw.qkvScale);
        let q!: tf.Tensor4D;
        let k!: tf.Tensor4D;
        let v!: tf.Tensor4D;
        let o: tf.Tensor | null = null;
        // decode on the kernels: the step's q heads [B, nH, D], its key and value already in the cache
        let decodeQ: tf.Tensor | null = null;
        if (T === 1 && qkKernels && cache) {
          // the q/k heads normed and rotated in one op reading qkv in place, the new key and value
          // written into the cache straight from their columns (no splits, no per-head reshapes)
          const r = flatRope(ls.rope);
          const qk = prefillQk(qkv, { heads: nH + nKV, headDim: D, normWeight: lw.qkNormRows, eps, cos: r.cos, sin: r.sin });
          cache[li].appendRows(tf.reshape(qk, [B, (nH + nKV) * D]), nH * D, qkv, (nH + nKV) * D, rows);
          decodeQ = tf.slice(qk, [0, 0, 0], [B, nH, D]);
        } else if (T === 1) {
          // decode: [B, heads·D] is already [B, heads, 1, D] in memory, no transposes
          const [qkf, vf] = tf.split(qkv, [(nH + nKV) * D, nKV * D], 1);
          let qk: tf.Tensor = tf.reshape(qkf, [B, nH + nKV, D]);
          if (lw.qkNormRows) qk = fusedRmsNorm(qk, eps, { weight: lw.qkNormRows }).y;
          qk = this.rotateDecode(qk as tf.Tensor3D, rope(ls.rope));
          const [qq, kk] = tf.split(qk, [nH, nKV], 1);
          q = tf.reshape(qq, [B, nH, 1, D]) as tf.Tensor4D;
          k = tf.reshape(kk, [B, nKV, 1, D]) as tf.Tensor4D;
          v = tf.reshape(vf, [B, nKV, 1, D]) as tf.Tensor4D;
        } else if (prefillKernels) {
          // prefill on the kernels: q/k norms and RoPE on the fused heads [N, nH + nKV, D] as in
          // decode, then one attention op that reads q, k and v (in qkv) in place: no transposes
          const r = flatRope(ls.rope);
          const qk = tf.reshape(prefillQk(qkv, { heads: nH + nKV, headDim: D, normWeight: lw.qkNormRows, eps, cos: r.cos, sin: r.sin }), [N, (nH + nKV) * D]);
          const c = cache?.[li];
          o = prefillAttention(qk, qkv, {
            heads: nH, kvHeads: nKV, headDim: D, start, window: ls.window, softcap: s.attnSoftcap, vColumn: (nH + nKV) * D,
            prefix: c && start.some((p) => p > 0) ? { keys: c.keys, valuesT: c.valuesT, rows, slotPos: c.slotPos } : null,
          });
          // then the new keys and values into the cache (after attention read its prefix)
          if (c) c.appendRows(qk, nH * D, qkv, (nH + nKV) * D, rows);
        } else {
          const [qf, kf, vf] = tf.split(qkv, [nH * D, nKV * D, nKV * D], 1);
          q = tf.transpose(tf.reshape(qf, [B, T, nH, D]), [0, 2, 1, 3]) as tf.Tensor4D;
          k = tf.transpose(tf.reshape(kf, [B, T, nKV, D]), [0, 2, 1, 3]) as tf.Tensor4D;
          v = tf.transpose(tf.reshape(vf, [B, T, nKV, D]), [0, 2, 1, 3]) as tf.Tensor4D;
          if (lw.qNorm && lw.kNorm) {
            q = rmsNorm(q, lw.qNorm, eps) as tf.Tensor4D;
            k = rmsNorm(k, lw.kNorm, eps) as tf.Tensor4D;
          }
          const { cos, sin } = rope(ls.rope);
          q = applyRope(q, cos, sin);
          k = applyRope(k, cos, sin);
        }

        // attention (the scale is folded into q)
        if (o) {
          // done above (prefill on the kernels)
        } else if (cache && T === 1) {
          // one op over the cache buffers in place: our wasm kernel, or the composite elsewhere
          const c = cache[li];
          if (!decodeQ) {
            c.append(k, v, rows);
            decodeQ = tf.reshape(q, [B, nH, D]);
          }
          o = decodeAttention(decodeQ, c.keys, c.valuesT, {
            rows, window: ls.window, softcap: s.attnSoftcap,
            slots: () => shared(`slots:${c.size}:${c.window}:${c.alloc}`, () => slotTable(rows, start, c.slotPos)),
            mask: () => mask(`${c.size}:${c.window}:1`, rows.map((r) => c.slotPos[r]), ls.window),
          });
        } else if (cache) {
          const c = cache[li];
          const view = c.updateAndFetch(k, v, rows);
          o = attention(q, view.keys, view.valuesT, mask(`${c.size}:${c.window}:${T}`, view.keyPositions, ls.window),
            { scale: 1, softcap: s.attnSoftcap, valuesTransposed: true });
        } else {
          o = attention(q, k, v, mask(`full:${ls.window}`, positions, ls.window), { scale: 1, softcap: s.attnSoftcap });
        }
        if (T > 1 && !prefillKernels) o = tf.reshape(tf.transpose(o!, [0, 2, 1, 3]), [N, nH * D]);
        else if (T === 1) o = tf.reshape(o!, [B, nH * D]);
        let a = project(o!, lw.o, lw.oBias);
        if (lw.postAttnNorm) a = fusedRmsNorm(a, eps, { weight: lw.postAttnNorm }).y;
        // residual add and the pre-MLP norm in one op (a wasm kernel, or the composite)
        const mid = lw.mlpNorm ? fusedRmsNorm(a, eps, { residual: h, weight: lw.mlpNorm }) : fusedRmsNorm(a, eps, { residual: h });
        h = mid.sum!;

        let m = isPacked(lw.gateUp) && isPacked(lw.down)
          ? packedMlp(mid.y, lw.gateUp, lw.down, lw.gateUpBias, lw.downBias, s.act)
          : gatedMlp(mid.y, lw as LayerWeights & { gateUp: tf.Tensor2D; down: tf.Tensor2D }, s.act);
        if (lw.postMlpNorm) m = fusedRmsNorm(m, eps, { weight: lw.postMlpNorm }).y;
        return tf.add(h, m);
      };
      try {
        for (let li = 0; li < s.numLayers; li++) {
          const prev = h;
          h = tf.tidy(() => layer(li, prev));
          prev.dispose();
        }
      } finally {
        for (const t of kept) t.dispose();
      }

      const Tout = opts.lastOnly ? 1 : T;
      if (opts.lastOnly && T > 1) h = tf.gather(h, tf.tensor1d(Array.from({ length: B }, (_, b) => b * T + T - 1), 'int32'));
      h = rmsNorm(h, w.finalNorm, eps);
      const head = w.lmHead;
      const logits = softcap(isVocabBlocks(head) ? head.project(h as tf.Tensor2D)
        : isPacked(head) ? packedMatMul(h as tf.Tensor2D, head) : tf.matMul(h as tf.Tensor2D, head), s.finalSoftcap);
      return tf.reshape(logits, [B, Tout, s.vocabSize]) as tf.Tensor3D;
    });
  }

  /** Raw embedding rows [n, H] for ids [n] (from lmHead's columns when tied; gathered from a packed table as f32). */
  embedRows(ids: tf.Tensor1D): tf.Tensor2D {
    return embedRowsOf(this.embedSource(), ids);
  }

  /** The raw embedding rows as the input mixers read them (never a second copy of the table). */
  embedSource(): EmbedSource {
    const w = this.weights;
    const e = w.embed ?? w.lmHead;
    if (isPacked(e)) return { packed: e };
    if (isVocabBlocks(e)) return { blocks: e };
    return w.embed ? { table: e } : { columns: e };
  }

  /**
   * RoPE on the fused q/k heads of a decode step, x [B, heads, D]: x·cos + (x·R)·sin with R the
   * constant rotate-half matrix (packed once by XNNPACK; a per-step rotation matrix would be
   * re-packed every call, which measured slower).
   */
  private rotateDecode(x: tf.Tensor3D, tables: { cos: tf.Tensor4D; sin: tf.Tensor4D }): tf.Tensor {
    const [B, heads, D] = x.shape;
    const rotDim = tables.cos.shape[3];
    if (rotDim !== D) return tf.reshape(applyRope(tf.reshape(x, [B, heads, 1, D]) as tf.Tensor4D, tables.cos, tables.sin), x.shape);
    // a wasm kernel, or the composite (x·cos + (x·R)·sin)
    return ropeDecode(x, tf.reshape(tables.cos, [B, 1, D]), tf.reshape(tables.sin, [B, 1, D]));
  }

  dispose(): void {
    const seen = new Set<tf.Tensor | PackedWeight | VocabBlocks>();
    const drop = (t: tf.Tensor | PackedWeight | VocabBlocks | null) => {
      if (!t || seen.has(t)) return;
      seen.add(t);
      if (isPacked(t)) disposePacked(t);
      else if (isVocabBlocks(t)) t.dispose();
      else t.dispose();
    };
    drop(this.weights.embed);
    drop(this.weights.finalNorm);
    drop(this.weights.lmHead);
    for (const l of this.weights.layers) for (const t of Object.values(l)) drop(t as tf.Tensor | PackedWeight | null);
  }
}

export { MASKED };
