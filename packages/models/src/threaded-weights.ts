/**
 * The threaded weight storage (issue 26): every matrix held in the wasm thread pool's shared
 * memory (@moi/core's ThreadPool), as a ThreadedLinear in the checkpoint's [out, in] layout, and
 * multiplied by all of the pool's threads, split by output rows (the same bits at any thread
 * count). One matrix at a time is read whole, converted on the host and uploaded; tfjs's heap
 * then holds only activations, norms and biases.
 *
 * - f32: the checkpoint's values (or, on a plan that widens, the values a 16/8-bit kind stands
 *   for), with the input / pre-MLP norm weight folded into the columns and the attention scale
 *   into q's rows, as the f32 storage folds them (the same products, the same rounding);
 * - bf16 / f16: the checkpoint's own words when it stores that kind, else f32 rounded to it;
 *   nothing folded (that would re-round): the decoder applies the norms, q's scale is the
 *   ThreadedLinear's outScale;
 * - q8: Q8_0 blocks of 32 (packed.ts's quantizeQ8, per checkpoint matrix: a block never crosses
 *   a row, so fusing q/k/v after quantizing is exact); multiplied with int8 activations.
 * A vocabulary matrix is both the head and the embedding rows (a tied head is stored once).
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  bytesToFloat32,
  f32ToBf16,
  f32ToF16,
  ModelError,
  quantizeQ8,
  Q8_BLOCK,
  ThreadedLinear,
  type EmbeddingRows,
  type Linear,
  type PackedKind,
  type ThreadPool,
  type VocabMatrix,
} from '@moi/core';
import { convertedF32 } from './packed-weights.ts';
import type { LinearParts, MatrixSource, WeightStorage } from './weights.ts';

export type ThreadedKind = 'f32' | PackedKind;

export interface ThreadedStorageOptions {
  /** how the matrices are held in the pool */
  kind: ThreadedKind;
  /** f32 only: read the values this packed kind stands for (null: the checkpoint's values) */
  convert: PackedKind | null;
}

export class ThreadedStorage implements WeightStorage {
  readonly foldsNorms: boolean;

  constructor(
    private readonly src: MatrixSource,
    private readonly pool: ThreadPool,
    private readonly o: ThreadedStorageOptions,
  ) {
    this.foldsNorms = o.kind === 'f32';
  }

  linear({ label, names, rowScale, colScale, bias }: LinearParts): Linear {
    if (rowScale && !this.foldsNorms)
      throw new ModelError(
        'E_WEIGHTS',
        `${label}: a ${this.o.kind} matrix folds no norm weight (the decoder applies it)`,
      );
    const fold = this.o.kind === 'f32';
    return this.upload(label, names, fold ? rowScale : null, fold ? colScale : null, {
      bias,
      outScale: !fold && colScale ? tf.tensor1d(colScale) : null,
    });
  }

  head(name: string, label: string): VocabMatrix {
    return this.upload(label, [name], null, null, {});
  }

  embedding(name: string, label: string): EmbeddingRows {
    return this.head(name, label);
  }

  private upload(
    label: string,
    names: string[],
    rowScale: Float32Array | null,
    colScale: Float32Array | null,
    extra: { bias?: tf.Tensor1D | null; outScale?: tf.Tensor1D | null },
  ): ThreadedLinear {
    const shapes = names.map((n) => this.src.info(n).shape);
    const cols = shapes[0][1];
    const rows = shapes.reduce((s, sh) => s + sh[0], 0);
    const kind = this.o.kind;
    try {
      if (kind === 'f32') {
        const values = new Float32Array(rows * cols);
        let r0 = 0;
        names.forEach((n, p) => {
          const R = shapes[p][0];
          const part = this.o.convert ? convertedF32(this.src, n, this.o.convert) : this.src.readFloat32(n);
          this.src.done?.(n);
          if (!rowScale && !colScale) values.set(part, r0 * cols);
          else {
            for (let r = 0; r < R; r++) {
              const k = colScale ? colScale[r0 + r] : 1;
              const o = (r0 + r) * cols;
              for (let c = 0; c < cols; c++) values[o + c] = part[r * cols + c] * (rowScale ? rowScale[c] : 1) * k;
            }
          }
          r0 += R;
        });
        return ThreadedLinear.upload(this.pool, { kind: 'f32', values }, rows, cols, { ...extra, label });
      }
      if (kind === 'q8') {
        const nb = Math.ceil(cols / Q8_BLOCK);
        const q = new Int8Array(rows * cols);
        const d = new Float32Array(rows * nb);
        let r0 = 0;
        names.forEach((n, p) => {
          const R = shapes[p][0];
          const part = quantizeQ8(this.src.readFloat32(n), R, cols);
          this.src.done?.(n);
          q.set(part.q, r0 * cols);
          d.set(part.d, r0 * nb);
          r0 += R;
        });
        return ThreadedLinear.upload(this.pool, { kind: 'q8', q, d }, rows, cols, { ...extra, label });
      }
      const words = new Uint16Array(rows * cols);
      let r0 = 0;
      names.forEach((n, p) => {
        const info = this.src.info(n);
        const R = shapes[p][0];
        const read = this.src.readRange(n, 0, info.byteLength);
        const raw = read.byteOffset % 2 ? read.slice() : read; // a Uint16Array view needs an even offset
        if ((info.dtype === 'BF16' && kind === 'bf16') || (info.dtype === 'F16' && kind === 'f16')) {
          words.set(new Uint16Array(raw.buffer, raw.byteOffset, R * cols), r0 * cols);
        } else {
          const f = bytesToFloat32(info.dtype, raw);
          words.set(kind === 'bf16' ? f32ToBf16(f) : f32ToF16(f), r0 * cols);
        }
        this.src.done?.(n);
        r0 += R;
      });
      return ThreadedLinear.upload(this.pool, { kind, words }, rows, cols, { ...extra, label });
    } catch (err) {
      extra.outScale?.dispose();
      throw err;
    }
  }
}
