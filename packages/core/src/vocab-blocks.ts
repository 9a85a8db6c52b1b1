/**
 * A vocabulary-sized matrix held in blocks along the vocabulary axis, for devices whose buffers
 * cannot hold it whole. On webgpu a tensor over the adapter's maxStorageBufferBindingSize (128 MiB
 * on lavapipe) reads back as zeros, and a real vocabulary passes that: Qwen's 151,936 × 896 f32
 * embedding is 544 MB. The embedding table and lm_head are the only weights that large in the
 * models we run, and every use of them splits cleanly along the vocabulary:
 *   - rows(ids):   the embedding lookup (each id falls in one block);
 *   - project(h):  the logits h · Eᵀ (one matmul per block, concatenated);
 *   - mix(p):      a weighted sum of rows Σ_v p_v E[v] (one matmul per block, summed).
 *
 * `layout` is the tensors' orientation: 'rows' blocks are [V_i, H] (an embedding table), 'cols'
 * blocks are [H, V_i] (lm_head transposed, or a tied embedding stored as its columns).
 *
 * Either layout is a VocabMatrix (linear.ts): the head applies itself (`apply` = `project`) and
 * the embedding rows are read through the same object.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from './errors.ts';
import type { VocabMatrix } from './linear.ts';

export type VocabLayout = 'rows' | 'cols';

export class VocabBlocks implements VocabMatrix {
  readonly label = 'blocked';
  /** first vocabulary id of each block */
  readonly starts: number[];

  private constructor(
    readonly layout: VocabLayout,
    readonly blocks: tf.Tensor2D[],
    readonly vocab: number,
    readonly hidden: number,
  ) {
    this.starts = [];
    let s = 0;
    for (const b of blocks) {
      this.starts.push(s);
      s += layout === 'rows' ? b.shape[0] : b.shape[1];
    }
  }

  /** Vocabulary ids per block so that one block stays within maxBytes as float32. */
  static blockSize(hidden: number, maxBytes: number): number {
    return Math.max(1, Math.floor(maxBytes / (hidden * 4)));
  }

  /**
   * Split a host-side matrix (row-major, [V, H] for 'rows' or [H, V] for 'cols') into blocks of at
   * most maxBytes each. The whole matrix never becomes one tensor, so it never reaches the device.
   */
  static fromValues(values: Float32Array, shape: [number, number], layout: VocabLayout, maxBytes: number): VocabBlocks {
    const [R, C] = shape;
    if (values.length !== R * C)
      throw new ModelError('E_SHAPE', `VocabBlocks: ${values.length} values for [${R}, ${C}]`);
    const V = layout === 'rows' ? R : C;
    const H = layout === 'rows' ? C : R;
    const n = VocabBlocks.blockSize(H, maxBytes);
    const blocks: tf.Tensor2D[] = [];
    for (let s = 0; s < V; s += n) {
      const m = Math.min(n, V - s);
      if (layout === 'rows') {
        blocks.push(tf.tensor2d(values.subarray(s * H, (s + m) * H), [m, H]));
      } else {
        const part = new Float32Array(H * m);
        for (let r = 0; r < H; r++) part.set(values.subarray(r * V + s, r * V + s + m), r * m);
        blocks.push(tf.tensor2d(part, [H, m]));
      }
    }
    return new VocabBlocks(layout, blocks, V, H);
  }

  private size(i: number): number {
    return this.layout === 'rows' ? this.blocks[i].shape[0] : this.blocks[i].shape[1];
  }

  /** Rows [n, H] for ids int32 [n] (the embedding lookup). */
  rows(ids: tf.Tensor1D): tf.Tensor2D {
    return tf.tidy(() => {
      let out: tf.Tensor2D | null = null;
      this.blocks.forEach((b, i) => {
        const local = tf.sub(ids, tf.scalar(this.starts[i], 'int32'));
        const inside = tf.logicalAnd(tf.greaterEqual(local, 0), tf.less(local, this.size(i)));
        // (tfjs-wasm's clipByValue does not clip int32: minimum/maximum do)
        const at = tf.minimum(tf.maximum(local, tf.scalar(0, 'int32')), tf.scalar(this.size(i) - 1, 'int32'));
        const g = (this.layout === 'rows' ? tf.gather(b, at) : tf.transpose(tf.gather(b, at, 1))) as tf.Tensor2D;
        const part = tf.where(tf.reshape(inside, [-1, 1]), g, tf.zerosLike(g)) as tf.Tensor2D;
        out = out ? tf.add<tf.Tensor2D>(out, part) : part;
      });
      return out!;
    });
  }

  /** h [N, H] · Eᵀ → [N, V] (the logits; the first `V` ids only when V < vocab). */
  project(h: tf.Tensor2D, V = this.vocab): tf.Tensor2D {
    return tf.tidy(() => {
      const parts: tf.Tensor2D[] = [];
      this.blocks.forEach((b, i) => {
        const m = Math.min(this.size(i), V - this.starts[i]);
        if (m <= 0) return;
        let y: tf.Tensor2D = this.layout === 'rows' ? tf.matMul(h, b, false, true) : tf.matMul(h, b);
        if (m < this.size(i)) y = tf.slice(y, [0, 0], [h.shape[0], m]);
        parts.push(y);
      });
      return (parts.length === 1 ? parts[0] : tf.concat(parts, 1)) as tf.Tensor2D;
    });
  }

  /** p [N, V'] (V' ≤ vocab) → Σ_v p_v E[v], [N, H]. */
  mix(p: tf.Tensor2D): tf.Tensor2D {
    const V = p.shape[1];
    if (V > this.vocab)
      throw new ModelError('E_SHAPE', `VocabBlocks.mix: weights over ${V} ids, the table has ${this.vocab}`);
    return tf.tidy(() => {
      let out: tf.Tensor2D | null = null;
      this.blocks.forEach((b, i) => {
        const m = Math.min(this.size(i), V - this.starts[i]);
        if (m <= 0) return;
        const pi = tf.slice(p, [0, this.starts[i]], [p.shape[0], m]);
        const bi =
          m < this.size(i)
            ? this.layout === 'rows'
              ? tf.slice(b, [0, 0], [m, this.hidden])
              : tf.slice(b, [0, 0], [this.hidden, m])
            : b;
        const y = (this.layout === 'rows' ? tf.matMul(pi, bi) : tf.matMul(pi, bi, false, true)) as tf.Tensor2D;
        out = out ? tf.add<tf.Tensor2D>(out, y) : y;
      });
      return out!;
    });
  }

  /** The head: h [N, H] · Eᵀ → logits [N, V] (Linear). */
  apply(h: tf.Tensor2D): tf.Tensor2D {
    return this.project(h);
  }

  get inDim(): number {
    return this.hidden;
  }

  get outDim(): number {
    return this.vocab;
  }

  /** H, the width of an embedding row (EmbeddingRows). */
  get width(): number {
    return this.hidden;
  }

  /** Bytes held (float32). */
  get bytes(): number {
    return this.vocab * this.hidden * 4;
  }

  dispose(): void {
    for (const b of this.blocks) b.dispose();
  }
}

export function isVocabBlocks(x: unknown): x is VocabBlocks {
  return x instanceof VocabBlocks;
}
