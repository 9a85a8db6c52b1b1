/**
 * The decoder-only transformer graph shared by every family (Llama, Qwen2/3, Gemma 1/2/3): the
 * families differ only in the DecoderSpec their config maps to and in checkpoint names.
 *
 * The graph never asks how a weight is held: each matrix is a Linear that applies itself, the
 * embedding rows and the head are one interface (@moi/core's linear.ts; built by weights.ts), and
 * a layer's attention is one op (attention.ts) that chooses its own path over the KV cache.
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  applyActivation,
  applySplit,
  fusedRmsNorm,
  MASKED,
  ModelError,
  rmsNorm,
  scalar,
  softcap,
  ThreadedLinear,
  type EmbeddingRows,
  type ThreadPool,
} from '@moi/core';
import { AttentionPass } from './attention.ts';
import { KVCache, type LayerCache } from './cache.ts';
import type { DecoderSpec } from './spec.ts';
import { disposeWeights, type DecoderWeights, type LayerWeights } from './weights.ts';

export interface ForwardInput {
  /** token ids per row (all rows the same length) */
  ids?: number[][];
  /** or input embeddings [B, T, H]: raw embedding-space vectors, scaled inside as for ids */
  embeds?: tf.Tensor3D;
}

export interface ForwardOptions {
  /** the per-layer caches; without them the pass is a full recompute from position 0 */
  cache?: LayerCache[];
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

export class Decoder {
  constructor(
    readonly spec: DecoderSpec,
    readonly weights: DecoderWeights,
  ) {}

  /** Allocate one cache per layer: sliding layers get a rotating buffer of their window. */
  makeCache(batch: number, capacity: number, opts: { noInPlace?: boolean } = {}): KVCache[] {
    const s = this.spec;
    if (capacity > s.maxPositionEmbeddings) {
      throw new ModelError(
        'E_CONTEXT',
        `requested context ${capacity} exceeds max_position_embeddings ${s.maxPositionEmbeddings}`,
      );
    }
    return s.layers.map(
      (l) =>
        new KVCache({
          batch,
          kvHeads: s.numKvHeads,
          headDim: s.headDim,
          capacity,
          window: l.window,
          noInPlace: opts.noInPlace,
        }),
    );
  }

  /** Logits [B, T or 1, V]. The caller owns the result. */
  forward(input: ForwardInput, opts: ForwardOptions = {}): tf.Tensor3D {
    const s = this.spec;
    const w = this.weights;
    const { B, T, rows, start } = this.checkInput(input, opts);
    return tf.tidy(() => {
      // the hidden state is 2-D [B·T, H] throughout: linear layers need no reshapes
      let h: tf.Tensor2D = input.ids
        ? this.embedRows(tf.tensor1d(input.ids.flat(), 'int32'))
        : tf.reshape(input.embeds!, [B * T, s.hiddenSize]);
      if (s.embedScale !== null) h = tf.mul(h, scalar(s.embedScale));
      const attn = new AttentionPass(s, {
        B,
        T,
        rows,
        start,
        cache: opts.cache,
        prefillTokensLeft: opts.prefillTokensLeft,
        pool: this.pool,
      });
      try {
        // one scope per layer: only one layer's intermediates are alive at a time
        for (let li = 0; li < s.numLayers; li++) {
          const lw = w.layers[li];
          const prev = h;
          h = tf.tidy(() => this.layer(lw, prev, (qkv) => attn.run(li, qkv, lw)));
          prev.dispose();
        }
      } finally {
        attn.dispose();
      }
      if (opts.lastOnly && T > 1)
        h = tf.gather(
          h,
          tf.tensor1d(
            Array.from({ length: B }, (_, b) => b * T + T - 1),
            'int32',
          ),
        );
      const logits = softcap(w.lmHead.apply(rmsNorm(h, w.finalNorm, s.rmsNormEps) as tf.Tensor2D), s.finalSoftcap);
      return tf.reshape(logits, [B, opts.lastOnly ? 1 : T, s.vocabSize]) as tf.Tensor3D;
    });
  }

  /**
   * One layer on the hidden state h [N, H]: attention (`attend`: qkv → attended values), then the
   * gated MLP, each with its residual. Norms a storage folded into a matrix are null here.
   */
  private layer(lw: LayerWeights, h: tf.Tensor2D, attend: (qkv: tf.Tensor2D) => tf.Tensor2D): tf.Tensor2D {
    const eps = this.spec.rmsNormEps;
    const xn = fusedRmsNorm(h, eps, { weight: lw.inputNorm }).y as tf.Tensor2D;
    let a: tf.Tensor = lw.o.apply(attend(lw.qkv.apply(xn)));
    if (lw.postAttnNorm) a = fusedRmsNorm(a, eps, { weight: lw.postAttnNorm }).y;
    // residual add and the pre-MLP norm in one op (a wasm kernel, or the composite)
    const mid = fusedRmsNorm(a, eps, { residual: h, weight: lw.mlpNorm });
    const inter = lw.gateUp.outDim / 2;
    const [gate, up] = applySplit(lw.gateUp, mid.y as tf.Tensor2D, [inter, inter]);
    let m: tf.Tensor = lw.down.apply(tf.mul(applyActivation(gate, this.spec.act), up) as tf.Tensor2D);
    if (lw.postMlpNorm) m = fusedRmsNorm(m, eps, { weight: lw.postMlpNorm }).y;
    return tf.add(mid.sum!, m) as tf.Tensor2D;
  }

  /** Rows, tokens per row, cache rows and first positions of a forward, checked before anything is written. */
  private checkInput(
    input: ForwardInput,
    opts: ForwardOptions,
  ): { B: number; T: number; rows: number[]; start: number[] } {
    const s = this.spec;
    const cache = opts.cache;
    const B = input.ids ? input.ids.length : input.embeds!.shape[0];
    const T = input.ids ? input.ids[0].length : input.embeds!.shape[1];
    const rows = opts.rows ?? Array.from({ length: B }, (_, i) => i);
    if (input.ids && (T === 0 || input.ids.some((r) => r.length !== T))) {
      throw new ModelError(
        'E_FORWARD',
        `forward: ids rows must be non-empty and of one length (got ${input.ids.map((r) => r.length).join(', ')})`,
      );
    }
    if (rows.length !== B) throw new ModelError('E_FORWARD', `forward: ${B} input rows but ${rows.length} cache rows`);
    // all layers first: a sliding layer must not write before a full layer finds no room
    if (cache) for (const c of cache) c.checkFits(rows, T);
    const start = cache ? rows.map((r) => cache[0].offset[r]) : rows.map(() => 0);
    const maxPos = Math.max(...start) + T - 1;
    if (maxPos >= s.maxPositionEmbeddings && !s.layers.every((l) => l.window)) {
      throw new ModelError(
        'E_CONTEXT',
        `context overflow: position ${maxPos} is past max_position_embeddings ${s.maxPositionEmbeddings}`,
      );
    }
    return { B, T, rows, start };
  }

  /** The thread pool holding the weights (the head's, as every matrix's), or null where tfjs holds them. */
  get pool(): ThreadPool | null {
    const head = this.weights.lmHead;
    return head instanceof ThreadedLinear ? head.pool : null;
  }

  /** Raw embedding rows [n, H] for ids [n] (from lmHead's columns when tied; gathered from a packed table as f32). */
  embedRows(ids: tf.Tensor1D): tf.Tensor2D {
    return this.embedSource().rows(ids);
  }

  /** The raw embedding rows as the input mixers read them (never a second copy of the table). */
  embedSource(): EmbeddingRows {
    return this.weights.embed ?? this.weights.lmHead;
  }

  dispose(): void {
    disposeWeights(this.weights);
  }
}

export { MASKED };
