/**
 * The packed 16/8-bit weight storage (issue 15), streamed: a matrix is read from the checkpoint a
 * few rows at a time, each chunk converted (16-bit words kept as they are, or f32 rounded to bf16,
 * or quantized to q8) straight into the final tensor's memory, so the load never holds more than
 * the final weights plus one chunk. Fusing q/k/v or gate/up is writing the parts' rows one after
 * the other (exact: q8 blocks never cross a row). The builder (weights.ts) makes the layers.
 *
 * The packed layout keeps the checkpoint's [out, in]; no norm is folded into a packed matrix (that
 * would re-round it): the decoder applies the input and pre-MLP norms with fusedRmsNorm's weight,
 * and the attention scale is packedMatMul's outScale on q's columns.
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  heapValues,
  bf16ToF32,
  bytesToFloat32,
  dequantizeQ8,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  ModelError,
  PackedLinear,
  Q8_BLOCK,
  quantizeQ8,
  type EmbeddingRows,
  type Linear,
  type PackedKind,
  type PackedWeight,
  type VocabMatrix,
} from '@moi/core';
import type { LinearParts, MatrixSource, WeightStorage } from './weights.ts';

/** Source bytes converted per chunk (rows of a matrix). */
export const CHUNK_BYTES = 8 << 20;

/** Bytes of a packed [rows, cols] matrix: data words (+ q8 scales). */
export function packedSize(kind: PackedKind, rows: number, cols: number): number {
  if (kind === 'q8') return Math.ceil((rows * cols) / 4) * 4 + rows * Math.ceil(cols / Q8_BLOCK) * 4;
  return Math.ceil((rows * cols * 2) / 4) * 4;
}

// ---- destination tensors ----

/** A tensor of `n` elements of `dtype`, allocated uninitialised: in the wasm heap, or a host array elsewhere. */
interface Dest {
  tensor(): tf.Tensor1D;
  /** a byte view over its memory (re-made per call: heap growth detaches old views) */
  bytes(): Uint8Array;
}

function makeDest(n: number, dtype: 'int32' | 'float32', what: string): Dest {
  if (tf.getBackend() === 'wasm') {
    const backend: any = tf.backend();
    const info = backend.makeOutput([n], dtype);
    const t = tf.engine().makeTensorFromTensorInfo(info) as tf.Tensor1D;
    const at = heapValues(t)?.byteOffset; // 0 or none: the allocation failed
    if (!at && n > 0) {
      t.dispose();
      throw new ModelError(
        'E_MEMORY',
        `${what}: could not allocate ${n * 4} bytes in the wasm heap (4 GiB in all); try a smaller --dtype (q8)`,
      );
    }
    return {
      tensor: () => t,
      bytes: () => {
        const v = heapValues(t)!;
        return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      },
    };
  }
  const host = new ArrayBuffer(n * 4);
  let t: tf.Tensor1D | null = null;
  return {
    tensor: () => (t ??= tf.tensor1d(dtype === 'int32' ? new Int32Array(host) : new Float32Array(host), dtype)),
    bytes: () => new Uint8Array(host),
  };
}

// ---- conversion ----

/**
 * Pack the matrices `names` (checkpoint [out, in] each, same `in`), their rows concatenated, as
 * `kind`. Each is read and converted a chunk of rows at a time into the final tensor.
 */
export function packMatrices(
  src: MatrixSource,
  names: string[],
  kind: PackedKind,
  chunkBytes = CHUNK_BYTES,
): PackedWeight {
  const infos = names.map((n) => src.info(n));
  const cols = infos[0].shape[1];
  const rows = infos.reduce((s, i) => s + i.shape[0], 0);
  const label = names.join('+');
  const nb = Math.ceil(cols / Q8_BLOCK);
  const dataBytes = kind === 'q8' ? rows * cols : rows * cols * 2;
  const words = Math.ceil(dataBytes / 4);
  const data = makeDest(words, 'int32', label);
  let scales: Dest | null = null;
  try {
    if (kind === 'q8') scales = makeDest(rows * nb, 'float32', `${label} (q8 scales)`);
    if (words > 0) data.bytes().fill(0, (words - 1) * 4); // the padding of the last word is zero
    let rowOff = 0;
    for (let p = 0; p < names.length; p++) {
      const info = infos[p];
      const name = names[p];
      const R = info.shape[0];
      const es = info.byteLength / Math.max(1, R * cols);
      const chunk = Math.max(1, Math.floor(chunkBytes / Math.max(1, cols * es)));
      for (let r0 = 0; r0 < R; r0 += chunk) {
        const n = Math.min(chunk, R - r0);
        const raw = src.readRange(name, r0 * cols * es, n * cols * es);
        const at = (rowOff + r0) * cols;
        if (kind !== 'q8') {
          // 16-bit words: the checkpoint's own when it stores this kind, else rounded from f32
          let w16: Uint16Array;
          if ((info.dtype === 'BF16' && kind === 'bf16') || (info.dtype === 'F16' && kind === 'f16')) {
            w16 = new Uint16Array(raw.buffer, raw.byteOffset, n * cols);
          } else {
            const f = bytesToFloat32(info.dtype, raw);
            w16 = kind === 'bf16' ? f32ToBf16(f) : f32ToF16(f);
          }
          data.bytes().set(new Uint8Array(w16.buffer, w16.byteOffset, w16.byteLength), at * 2);
        } else {
          const { q, d } = quantizeQ8(bytesToFloat32(info.dtype, raw), n, cols);
          data.bytes().set(new Uint8Array(q.buffer, q.byteOffset, q.byteLength), at);
          scales!.bytes().set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), (rowOff + r0) * nb * 4);
        }
      }
      src.done?.(name);
      rowOff += R;
    }
    return { kind, rows, cols, data: data.tensor(), scales: scales ? scales.tensor() : null };
  } catch (err) {
    if (tf.getBackend() === 'wasm') {
      data.tensor().dispose();
      scales?.tensor().dispose();
    }
    throw err;
  }
}

/**
 * One checkpoint matrix as the f32 values `kind` stands for (bf16-rounded, or q8 dequantized), row
 * chunk by row chunk: what a backend without packed kernels holds (widened at load).
 */
export function convertedF32(src: MatrixSource, name: string, kind: PackedKind): Float32Array {
  const info = src.info(name);
  const [R, cols] = info.shape;
  const out = new Float32Array(R * cols);
  const es = info.byteLength / Math.max(1, R * cols);
  const chunk = Math.max(1, Math.floor(CHUNK_BYTES / Math.max(1, cols * es)));
  for (let r0 = 0; r0 < R; r0 += chunk) {
    const n = Math.min(chunk, R - r0);
    const f = bytesToFloat32(info.dtype, src.readRange(name, r0 * cols * es, n * cols * es));
    let v: Float32Array;
    if (kind === 'q8') {
      const { q, d } = quantizeQ8(f, n, cols);
      v = dequantizeQ8(q, d, n, cols);
    } else if (kind === 'bf16') {
      v = info.dtype === 'BF16' ? f : bf16ToF32(f32ToBf16(f));
    } else {
      v = info.dtype === 'F16' ? f : f16ToF32(f32ToF16(f));
    }
    out.set(v, r0 * cols);
  }
  return out;
}

// ---- the storage ----

/**
 * The packed weight storage: every matrix packed as `kind` (streamed, above), in the checkpoint's
 * [out, in] layout with nothing folded into it (that would re-round it): the decoder applies the
 * input and pre-MLP norms with fusedRmsNorm's weight, and the attention scale is q's outScale. A
 * packed vocabulary matrix is both the head and the embedding rows (a tied head is stored once).
 */
export class PackedStorage implements WeightStorage {
  readonly foldsNorms = false;

  constructor(
    private readonly src: MatrixSource,
    private readonly kind: PackedKind,
  ) {}

  linear({ label, names, rowScale, colScale, bias }: LinearParts): Linear {
    if (rowScale)
      throw new ModelError('E_WEIGHTS', `${label}: a packed matrix folds no norm weight (the decoder applies it)`);
    return new PackedLinear(packMatrices(this.src, names, this.kind), bias, colScale ? tf.tensor1d(colScale) : null);
  }

  head(name: string): VocabMatrix {
    return new PackedLinear(packMatrices(this.src, [name], this.kind));
  }

  embedding(name: string): EmbeddingRows {
    return this.head(name);
  }
}
