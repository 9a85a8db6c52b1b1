/**
 * The f32 weight storage: matrices held as f32 tensors laid out [in, out] (XNNPACK's fast GEMV
 * layout; transposeB is 5-10x slower on wasm), made in one host pass per matrix straight into the
 * final tensor (no intermediate device copies):
 * - the parts of a fused matrix (q/k/v, gate/up) transposed side by side;
 * - the norm weight feeding a matrix folded into its rows (norm(x)·w·W = norm(x)·(diag(w)·W)),
 *   and the attention scale into q's columns: the decoder applies neither;
 * - on wasm each matmul-only matrix is packed once by XNNPACK and its original heap block
 *   released (pack.ts); a tied head (also the embedding table, gathered) is kept;
 * - a vocabulary matrix over the device's buffer limit (webgpu) held as VocabBlocks (limits.ts).
 * A tied head is stored once, [H, V]: the embedding rows are its columns.
 * On a backend without packed kernels a 16/8-bit plan reads the values it stands for (bf16-
 * rounded, q8 dequantized; convertedF32) and holds them here in f32.
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  F32Columns,
  F32Linear,
  F32Table,
  VocabBlocks,
  type EmbeddingRows,
  type Linear,
  type PackedKind,
  type VocabMatrix,
} from '@moi/core';
import { writableView } from './cache.ts';
import { checkBufferFits, maxTensorBytes } from './limits.ts';
import { packAndRelease } from './pack.ts';
import { convertedF32 } from './packed-weights.ts';
import type { LinearParts, MatrixSource, WeightStorage } from './weights.ts';

export interface F32StorageOptions {
  /** read the values this packed kind stands for (null: the checkpoint's values, widened exactly) */
  convert: PackedKind | null;
  /** release matmul-only matrices after XNNPACK packs them (wasm; see pack.ts) */
  release: boolean;
  /** names the model in errors */
  where: string;
}

export class F32Storage implements WeightStorage {
  readonly foldsNorms = true;

  constructor(
    private readonly src: MatrixSource,
    private readonly o: F32StorageOptions,
  ) {}

  linear({ label, names, rowScale, colScale, bias }: LinearParts): Linear {
    const w = this.transposed(label, names, rowScale, colScale);
    if (this.o.release) this.release(w, names);
    return new F32Linear(w, bias);
  }

  head(name: string, label: string, tied: boolean): VocabMatrix {
    const [V, H] = this.src.info(name).shape;
    const { bytes: max } = maxTensorBytes();
    if (V * H * 4 > max) {
      const host = new Float32Array(V * H);
      transposeInto(this.read(name), V, H, host, V, 0, null, null);
      return VocabBlocks.fromValues(host, [H, V], 'cols', max);
    }
    const w = this.transposed(label, [name], null, null);
    // a tied head is also the embedding table (its columns gathered): never released
    if (this.o.release && !tied) this.release(w, [name]);
    return new F32Columns(w);
  }

  embedding(name: string): EmbeddingRows {
    const shape = this.src.info(name).shape;
    const data = this.read(name);
    const { bytes: max } = maxTensorBytes();
    if (data.length * 4 > max) return VocabBlocks.fromValues(data, shape as [number, number], 'rows', max);
    return new F32Table(makeTensor(shape, (dst) => dst.set(data)) as tf.Tensor2D);
  }

  /** One checkpoint matrix as f32 host values (row-major, [out, in]). */
  private read(name: string): Float32Array {
    const data = this.o.convert ? convertedF32(this.src, name, this.o.convert) : this.src.readFloat32(name);
    this.src.done?.(name);
    return data;
  }

  /** [out_i, in] matrices → one [in, Σout_i] tensor; rows scaled by rowScale, columns by colScale. */
  private transposed(
    label: string,
    names: string[],
    rowScale: Float32Array | null,
    colScale: Float32Array | null,
  ): tf.Tensor2D {
    const shapes = names.map((n) => this.src.info(n).shape);
    const inDim = shapes[0][1];
    const total = shapes.reduce((n, s) => n + s[0], 0);
    checkBufferFits(this.o.where, label, [inDim, total]);
    const parts = names.map((n) => this.read(n));
    return makeTensor([inDim, total], (dst) => {
      let off = 0;
      parts.forEach((p, i) => {
        transposeInto(p, shapes[i][0], inDim, dst, total, off, rowScale, colScale);
        off += shapes[i][0];
      });
    }) as tf.Tensor2D;
  }

  private release(w: tf.Tensor2D, names: string[]): void {
    try {
      packAndRelease(w, names.join('+'));
    } catch (err) {
      w.dispose();
      throw err;
    }
  }
}

/**
 * A float32 tensor of `shape` filled by `fill` writing straight into its memory: on wasm a heap
 * block allocated uninitialised, elsewhere one host array handed to the backend.
 */
function makeTensor(shape: number[], fill: (dst: Float32Array) => void): tf.Tensor {
  if (tf.getBackend() === 'wasm') {
    const info = (tf.backend() as any).makeOutput(shape, 'float32');
    const t = tf.engine().makeTensorFromTensorInfo(info);
    const view = writableView(t);
    if (view) {
      fill(view);
      return t;
    }
    t.dispose();
  }
  const host = new Float32Array(shape.reduce((x, y) => x * y, 1));
  fill(host);
  return tf.tensor(host, shape, 'float32');
}

/**
 * dst[c·ld + off + r] = src[r·C + c] · rowScale[c] · colScale[off + r]: the transpose of an
 * [R, C] block into columns off.. of a [C, ld] matrix, eight source rows per sweep (the reads
 * then stream and the writes land eight at a time).
 */
function transposeInto(
  src: Float32Array,
  R: number,
  C: number,
  dst: Float32Array,
  ld: number,
  off: number,
  rowScale: Float32Array | null,
  colScale: Float32Array | null,
): void {
  const cs = (r: number) => (colScale ? colScale[off + r] : 1);
  const TILE = 64; // tiles keep the strided writes of a tall matrix within a few pages
  const R8 = R - (R % 8);
  for (let r0 = 0; r0 < R8; r0 += TILE) {
    const r1 = Math.min(R8, r0 + TILE);
    for (let c0 = 0; c0 < C; c0 += TILE) {
      const c1 = Math.min(C, c0 + TILE);
      for (let r = r0; r < r1; r += 8) {
        const k0 = cs(r),
          k1 = cs(r + 1),
          k2 = cs(r + 2),
          k3 = cs(r + 3),
          k4 = cs(r + 4),
          k5 = cs(r + 5),
          k6 = cs(r + 6),
          k7 = cs(r + 7);
        for (let c = c0; c < c1; c++) {
          const sc = rowScale ? rowScale[c] : 1;
          const d = c * ld + off + r;
          const i = r * C + c;
          dst[d] = src[i] * sc * k0;
          dst[d + 1] = src[i + C] * sc * k1;
          dst[d + 2] = src[i + 2 * C] * sc * k2;
          dst[d + 3] = src[i + 3 * C] * sc * k3;
          dst[d + 4] = src[i + 4 * C] * sc * k4;
          dst[d + 5] = src[i + 5 * C] * sc * k5;
          dst[d + 6] = src[i + 6 * C] * sc * k6;
          dst[d + 7] = src[i + 7 * C] * sc * k7;
        }
      }
    }
  }
  for (let r = R8; r < R; r++) {
    const k = cs(r);
    for (let c = 0; c < C; c++) dst[c * ld + off + r] = src[r * C + c] * (rowScale ? rowScale[c] : 1) * k;
  }
}
