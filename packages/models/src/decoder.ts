/**
 * The decoder-only transformer graph shared by every family (Llama, Qwen2/3, Gemma 1/2/3): the
 * families differ only in the DecoderSpec their config maps to and in checkpoint names.
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  applyActivation, applyRope, attention, linear, MASKED, ModelError, positionMask, rmsNorm, ropeTables, scalar, softcap,
  type RopeSpec,
} from '@moi/core';
import { KVCache } from './cache.ts';
import type { DecoderSpec } from './spec.ts';

/** One layer's weights, linear weights laid out [in, out]; q/k/v and gate/up fused. */
export interface LayerWeights {
  inputNorm: tf.Tensor1D;
  qkv: tf.Tensor2D;
  qkvBias: tf.Tensor1D | null;
  o: tf.Tensor2D;
  oBias: tf.Tensor1D | null;
  qNorm: tf.Tensor1D | null;
  kNorm: tf.Tensor1D | null;
  /** Llama: post_attention_layernorm (before the MLP). Gemma 2/3: pre_feedforward_layernorm. */
  mlpNorm: tf.Tensor1D;
  /** Gemma 2/3 only: post_attention_layernorm and post_feedforward_layernorm */
  postAttnNorm: tf.Tensor1D | null;
  postMlpNorm: tf.Tensor1D | null;
  gateUp: tf.Tensor2D;
  gateUpBias: tf.Tensor1D | null;
  down: tf.Tensor2D;
  downBias: tf.Tensor1D | null;
}

export interface DecoderWeights {
  /** raw embedding rows [V, H] (before any scaling) */
  embed: tf.Tensor2D;
  layers: LayerWeights[];
  finalNorm: tf.Tensor1D;
  /** [H, V]: lm_head transposed, or the tied embedding stored once more in this layout */
  lmHead: tf.Tensor2D;
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
}

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
      let h: tf.Tensor = input.ids
        ? tf.gather(w.embed, tf.tensor2d(input.ids, [B, T], 'int32'))
        : input.embeds!;
      if (s.embedScale !== null) h = tf.mul(h, scalar(s.embedScale));

      // rope tables and masks are shared by all layers with the same rope / window
      const ropes = new Map<RopeSpec, { cos: tf.Tensor4D; sin: tf.Tensor4D }>();
      const masks = new Map<string, tf.Tensor>();
      const rope = (spec: RopeSpec) => {
        let r = ropes.get(spec);
        if (!r) ropes.set(spec, (r = ropeTables(spec, positions)));
        return r;
      };
      const mask = (key: string, keyPositions: number[][], window: number | null) => {
        let m = masks.get(key);
        if (!m) masks.set(key, (m = positionMask(positions, keyPositions, window)));
        return m;
      };

      for (let li = 0; li < s.numLayers; li++) {
        const lw = w.layers[li];
        const ls = s.layers[li];
        const x = rmsNorm(h, lw.inputNorm, s.rmsNormEps, { unitOffset: s.normUnitOffset });
        const qkv = linear(x, lw.qkv, lw.qkvBias);
        const [qf, kf, vf] = tf.split(qkv, [s.numHeads * s.headDim, s.numKvHeads * s.headDim, s.numKvHeads * s.headDim], -1);
        let q = tf.transpose(tf.reshape(qf, [B, T, s.numHeads, s.headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
        let k = tf.transpose(tf.reshape(kf, [B, T, s.numKvHeads, s.headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
        const v = tf.transpose(tf.reshape(vf, [B, T, s.numKvHeads, s.headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
        if (s.qkNorm) {
          q = rmsNorm(q, lw.qNorm, s.rmsNormEps, { unitOffset: s.normUnitOffset }) as tf.Tensor4D;
          k = rmsNorm(k, lw.kNorm, s.rmsNormEps, { unitOffset: s.normUnitOffset }) as tf.Tensor4D;
        }
        const { cos, sin } = rope(ls.rope);
        q = applyRope(q, cos, sin);
        k = applyRope(k, cos, sin);

        let o: tf.Tensor4D;
        if (cache) {
          const c = cache[li];
          const view = c.updateAndFetch(k, v, rows);
          const key = `${c.size}:${c.window}:${T}`;
          o = attention(q, view.keys, view.valuesT, mask(key, view.keyPositions, ls.window),
            { scale: s.attnScale, softcap: s.attnSoftcap, valuesTransposed: true });
        } else {
          o = attention(q, k, v, mask(`full:${ls.window}`, positions, ls.window), { scale: s.attnScale, softcap: s.attnSoftcap });
        }
        let a = linear(tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B, T, s.numHeads * s.headDim]), lw.o, lw.oBias);
        if (lw.postAttnNorm) a = rmsNorm(a, lw.postAttnNorm, s.rmsNormEps, { unitOffset: s.normUnitOffset });
        h = tf.add(h, a);

        const xm = rmsNorm(h, lw.mlpNorm, s.rmsNormEps, { unitOffset: s.normUnitOffset });
        const gu = linear(xm, lw.gateUp, lw.gateUpBias);
        const [gate, up] = tf.split(gu, 2, -1);
        let m = linear(tf.mul(applyActivation(gate, s.act), up), lw.down, lw.downBias);
        if (lw.postMlpNorm) m = rmsNorm(m, lw.postMlpNorm, s.rmsNormEps, { unitOffset: s.normUnitOffset });
        h = tf.add(h, m);
      }

      if (opts.lastOnly && T > 1) h = tf.slice(h, [0, T - 1, 0], [B, 1, s.hiddenSize]);
      h = rmsNorm(h, w.finalNorm, s.rmsNormEps, { unitOffset: s.normUnitOffset });
      const logits = softcap(linear(h, w.lmHead), s.finalSoftcap);
      return logits as tf.Tensor3D;
    });
  }

  dispose(): void {
    const seen = new Set<tf.Tensor>();
    const drop = (t: tf.Tensor | null) => { if (t && !seen.has(t)) { seen.add(t); t.dispose(); } };
    drop(this.weights.embed);
    drop(this.weights.finalNorm);
    drop(this.weights.lmHead);
    for (const l of this.weights.layers) for (const t of Object.values(l)) drop(t as tf.Tensor | null);
  }
}

export { MASKED };
