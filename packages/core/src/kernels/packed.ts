/**
 * Weights kept in 16 or 8 bits: bf16 / f16 words exactly as the checkpoint stores them, or q8
 * (llama.cpp's Q8_0 scheme: blocks of 32 int8 along the input dimension, one f32 scale each,
 * d = max|x| / 127 and q = round(x / d), ties away from zero).
 *
 * A packed weight keeps the checkpoint's [out, in] layout: row r (an output feature, or a
 * vocabulary entry for an embedding table) is `cols` contiguous values. That one layout serves
 * the linear layer (x · Wᵀ), the embedding lookup (rows) and the mixing of embedding rows, so a
 * tied head is stored once.
 *
 * Storage is an int32 tfjs tensor holding the raw bytes (tfjs has no 16- or 8-bit dtype); kernels
 * read it in place. The ops below (packedMatMul, packedMatMulT, packedRows) are tfjs ops: on the
 * wasm backend with the kernels on, kernels of kernels.wat; elsewhere a composite that widens to
 * float32 first (correct everywhere, slow: the engine widens at load instead on other backends).
 */
import * as tf from '@tensorflow/tfjs-core';
import { bf16ToF32, f16ToF32 } from '../dtype.ts';
import { ModelError } from '../errors.ts';

export type PackedKind = 'bf16' | 'f16' | 'q8';

/** q8 block length along the input dimension (the last block of a row may be shorter) */
export const Q8_BLOCK = 32;

export interface PackedWeight {
  readonly kind: PackedKind;
  /** output features (checkpoint dim 0) */
  readonly rows: number;
  /** input features (checkpoint dim 1), contiguous within a row */
  readonly cols: number;
  /**
   * Raw bytes as int32 words: bf16/f16 → rows·cols little-endian u16 words, row-major;
   * q8 → rows·cols int8 values, row-major (padded with zeros to a whole word).
   */
  readonly data: tf.Tensor1D;
  /** q8 only: f32 [rows · ceil(cols / 32)], the scale of block b of row r at r·nb + b */
  readonly scales: tf.Tensor1D | null;
}

/** Bytes one packed weight holds (data + scales). */
export function packedBytes(w: PackedWeight): number {
  return w.data.size * 4 + (w.scales ? w.scales.size * 4 : 0);
}

export function isPacked(w: unknown): w is PackedWeight {
  return typeof w === 'object' && w !== null && 'kind' in w && 'data' in w && 'rows' in w;
}

export function disposePacked(w: PackedWeight): void {
  w.data.dispose();
  w.scales?.dispose();
}

// ---- host-side formats (any backend) ----

/** q8 quantization of a row-major [rows, cols] f32 matrix: q int8 [rows·cols], d f32 [rows·nb]. */
export function quantizeQ8(x: Float32Array, rows: number, cols: number): { q: Int8Array; d: Float32Array } {
  const nb = Math.ceil(cols / Q8_BLOCK);
  const q = new Int8Array(rows * cols);
  const d = new Float32Array(rows * nb);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const s = r * cols + b * Q8_BLOCK;
      const e = r * cols + Math.min(cols, (b + 1) * Q8_BLOCK);
      let amax = 0;
      for (let i = s; i < e; i++) amax = Math.max(amax, Math.abs(x[i]));
      const scale = Math.fround(amax / 127);
      d[r * nb + b] = scale;
      if (scale === 0) continue;
      for (let i = s; i < e; i++) {
        const v = x[i] / scale;
        q[i] = Math.sign(v) * Math.round(Math.abs(v)); // ties away from zero, as llama.cpp's roundf
      }
    }
  }
  return { q, d };
}

/** The f32 values a q8 matrix stands for: q · d, per block. */
export function dequantizeQ8(q: Int8Array, d: Float32Array, rows: number, cols: number): Float32Array {
  const nb = Math.ceil(cols / Q8_BLOCK);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = q[r * cols + c] * d[r * nb + Math.floor(c / Q8_BLOCK)];
  }
  return out;
}

function int32Words(bytes: Uint8Array): Int32Array {
  const words = new Int32Array(Math.ceil(bytes.length / 4));
  new Uint8Array(words.buffer).set(bytes);
  return words;
}

/** Pack 16-bit words (bf16 or f16 bit patterns, row-major [rows, cols]) as they are. */
export function pack16(kind: 'bf16' | 'f16', words: Uint16Array, rows: number, cols: number): PackedWeight {
  if (words.length !== rows * cols) throw new ModelError('E_SHAPE', `pack16: ${words.length} words for [${rows}, ${cols}]`);
  const data = tf.tensor1d(int32Words(new Uint8Array(words.buffer, words.byteOffset, words.byteLength)), 'int32');
  return { kind, rows, cols, data, scales: null };
}

/** Quantize a row-major [rows, cols] f32 matrix to q8 and pack it. */
export function packQ8(x: Float32Array, rows: number, cols: number): PackedWeight {
  if (x.length !== rows * cols) throw new ModelError('E_SHAPE', `packQ8: ${x.length} values for [${rows}, ${cols}]`);
  const { q, d } = quantizeQ8(x, rows, cols);
  return packQ8Blocks(q, d, rows, cols);
}

/** Pack already-quantized q8 data. */
export function packQ8Blocks(q: Int8Array, d: Float32Array, rows: number, cols: number): PackedWeight {
  const data = tf.tensor1d(int32Words(new Uint8Array(q.buffer, q.byteOffset, q.byteLength)), 'int32');
  return { kind: 'q8', rows, cols, data, scales: tf.tensor1d(d) };
}

/** The f32 values of a packed weight, row-major [rows, cols] (exact for bf16/f16, q·d for q8). */
export function widenPacked(w: PackedWeight): Float32Array {
  const bytes = new Uint8Array(w.data.dataSync().buffer.slice(0));
  const n = w.rows * w.cols;
  if (w.kind === 'q8') return dequantizeQ8(new Int8Array(bytes.buffer, 0, n), w.scales!.dataSync() as Float32Array, w.rows, w.cols);
  const words = new Uint16Array(bytes.buffer, 0, n);
  return w.kind === 'bf16' ? bf16ToF32(words) : f16ToF32(words);
}

// ---- ops (composite: widen, then ordinary tfjs ops) ----

function widened(w: PackedWeight): tf.Tensor2D {
  return tf.tensor2d(widenPacked(w), [w.rows, w.cols]);
}

export interface PackedMatMulOptions {
  bias?: tf.Tensor1D | null;
  /** multiplies output feature j (before the bias): e.g. the attention scale on q's columns */
  outScale?: tf.Tensor1D | null;
}

/** y [N, rows] = x [N, cols] · Wᵀ (· outScale) (+ bias). */
export function packedMatMul(x: tf.Tensor2D, w: PackedWeight, o: PackedMatMulOptions = {}): tf.Tensor2D {
  if (x.rank !== 2 || x.shape[1] !== w.cols) throw new ModelError('E_SHAPE', `packedMatMul: x [${x.shape}] does not fit a [${w.rows}, ${w.cols}] weight`);
  return tf.tidy(() => {
    let y: tf.Tensor2D = tf.matMul(x, widened(w), false, true);
    if (o.outScale) y = tf.mul(y, o.outScale);
    if (o.bias) y = tf.add(y, o.bias);
    return y;
  });
}

/** y [N, cols] = x [N, rows] · W: a weighted sum of rows (mixing embedding rows over the vocabulary). */
export function packedMatMulT(x: tf.Tensor2D, w: PackedWeight): tf.Tensor2D {
  if (x.rank !== 2 || x.shape[1] !== w.rows) throw new ModelError('E_SHAPE', `packedMatMulT: x [${x.shape}] does not fit a [${w.rows}, ${w.cols}] weight`);
  return tf.tidy(() => tf.matMul(x, widened(w)));
}

/** Rows [n, cols] as f32 for ids [n] (int32): the embedding lookup. */
export function packedRows(w: PackedWeight, ids: tf.Tensor1D): tf.Tensor2D {
  return tf.tidy(() => tf.gather(widened(w), ids) as tf.Tensor2D);
}
