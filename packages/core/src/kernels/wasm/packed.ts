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
 * read it in place. A q8 packedMatMul multiplies its input rounded to 16 bits per block of 32
 * (roundActivations16), kernel and composite alike: the decode kernel then works in integers. The ops below (packedMatMul, packedMatMulT, packedRows) are tfjs ops: on the
 * wasm backend with the kernels on, the kernels of packed-wat.ts (registered by initKernels);
 * elsewhere, and with MOI_KERNELS=0, a composite that widens to float32 first (correct everywhere,
 * slow: the engine widens at load instead on other backends).
 */
import * as tf from '@tensorflow/tfjs-core';
import { bf16ToF32, f16ToF32 } from '../../dtype.ts';
import { ModelError } from '../../errors.ts';
import { activeKernels, heapOffset, type KernelExports, type WasmKernelArgs } from './module.ts';
import { countDispatch } from './stats.ts';

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
  if (words.length !== rows * cols)
    throw new ModelError('E_SHAPE', `pack16: ${words.length} words for [${rows}, ${cols}]`);
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
  if (w.kind === 'q8')
    return dequantizeQ8(new Int8Array(bytes.buffer, 0, n), w.scales!.dataSync() as Float32Array, w.rows, w.cols);
  const words = new Uint16Array(bytes.buffer, 0, n);
  return w.kind === 'bf16' ? bf16ToF32(words) : f16ToF32(words);
}

// ---- ops: the wasm kernels, else the composite (widen, then ordinary tfjs ops) ----

export const PACKED_MATMUL = 'MoiPackedMatMul';
export const PACKED_MATMUL_T = 'MoiPackedMatMulT';
export const PACKED_ROWS = 'MoiPackedRows';

function widened(w: PackedWeight): tf.Tensor2D {
  return tf.tensor2d(widenPacked(w), [w.rows, w.cols]);
}

/** Refuse a packed weight whose storage does not hold [rows, cols] (the kernels read it unchecked). */
function checkStorage(op: string, w: PackedWeight): void {
  const bytes = w.rows * w.cols * (w.kind === 'q8' ? 1 : 2);
  const blocks = w.rows * Math.ceil(w.cols / Q8_BLOCK);
  if (
    w.data.dtype !== 'int32' ||
    w.data.size * 4 < bytes ||
    (w.kind === 'q8' ? w.scales?.size !== blocks : w.scales !== null)
  ) {
    throw new ModelError(
      'E_SHAPE',
      `${op}: ${w.kind} storage (${w.data.size} words, ${w.scales?.size ?? 'no'} scales) does not hold [${w.rows}, ${w.cols}]`,
    );
  }
}

/** Attributes every packed kernel gets. */
interface PackedAttrs {
  kind: PackedKind;
  rows: number;
  cols: number;
}

function packedInputs(w: PackedWeight): Record<string, tf.Tensor> {
  return w.scales ? { data: w.data, scales: w.scales } : { data: w.data };
}

/** The heap offsets of a packed weight's data and scales (0 when there are none). */
function weightOffsets(backend: any, inputs: Record<string, tf.TensorInfo | undefined>): [number, number] {
  return [heapOffset(backend, inputs.data!.dataId), inputs.scales ? heapOffset(backend, inputs.scales.dataId) : 0];
}

function kernels(name: string): KernelExports {
  const k = activeKernels();
  if (!k) throw new Error(`${name}: the kernels module is not active`);
  return k;
}

export interface PackedMatMulOptions {
  bias?: tf.Tensor1D | null;
  /** multiplies output feature j (before the bias): e.g. the attention scale on q's columns */
  outScale?: tf.Tensor1D | null;
}

/** y [N, rows] = x [N, cols] · Wᵀ (· outScale) (+ bias). */
export function packedMatMul(x: tf.Tensor2D, w: PackedWeight, o: PackedMatMulOptions = {}): tf.Tensor2D {
  if (x.rank !== 2 || x.shape[1] !== w.cols)
    throw new ModelError('E_SHAPE', `packedMatMul: x [${x.shape}] does not fit a [${w.rows}, ${w.cols}] weight`);
  for (const [name, t] of [
    ['bias', o.bias],
    ['outScale', o.outScale],
  ] as const) {
    if (t && (t.size !== w.rows || t.dtype !== 'float32'))
      throw new ModelError(
        'E_SHAPE',
        `packedMatMul: ${name} [${t.shape}] (${t.dtype}) does not fit ${w.rows} output features`,
      );
  }
  checkStorage('packedMatMul', w);
  if (activeKernels() && x.dtype === 'float32' && x.size > 0 && w.rows > 0) {
    countDispatch(PACKED_MATMUL);
    const inputs = {
      x,
      ...packedInputs(w),
      ...(o.bias ? { bias: o.bias } : {}),
      ...(o.outScale ? { outScale: o.outScale } : {}),
    };
    const attrs: PackedAttrs = { kind: w.kind, rows: w.rows, cols: w.cols };
    return tf.engine().runKernel(PACKED_MATMUL, inputs, attrs as any) as tf.Tensor2D;
  }
  return tf.tidy(() => {
    let y: tf.Tensor2D = tf.matMul(w.kind === 'q8' ? roundActivations16(x) : x, widened(w), false, true);
    if (o.outScale) y = tf.mul(y, o.outScale);
    if (o.bias) y = tf.add(y, o.bias);
    return y;
  });
}

/**
 * What a q8 matmul multiplies its input by: x rounded to 16 bits per block of 32 columns of a row,
 * d = max|x| / 32767, q = round(x / d) (ties away from zero; d = 0 gives 0), values q · d. The
 * kernels multiply the integers (see quantize_x16 and matmul_q8x16 in packed-wat.ts); this is the
 * same rounding in tfjs ops, for the composite.
 */
export function roundActivations16(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const [N, cols] = x.shape;
    const nb = Math.ceil(cols / Q8_BLOCK);
    const pad = nb * Q8_BLOCK - cols;
    const blocks = tf.reshape(
      pad
        ? tf.pad(x, [
            [0, 0],
            [0, pad],
          ])
        : x,
      [N, nb, Q8_BLOCK],
    );
    // d below 2^-126 (a block of |x| < 4e-34) is 0 on a GPU: divNoNan then gives q = 0, an error
    // below 4e-34 per value, where the kernels keep it; never 0/0
    const d = tf.div(tf.max(tf.abs(blocks), 2, true), tf.scalar(32767));
    const v = tf.divNoNan(blocks, d);
    const q = tf.mul(tf.sign(v), tf.floor(tf.add(tf.abs(v), tf.scalar(0.5))));
    const y = tf.reshape(tf.mul(q, d), [N, nb * Q8_BLOCK]) as tf.Tensor2D;
    return pad ? tf.slice(y, [0, 0], [N, cols]) : y;
  });
}

/** y [N, cols] = x [N, rows] · W: a weighted sum of rows (mixing embedding rows over the vocabulary). */
export function packedMatMulT(x: tf.Tensor2D, w: PackedWeight): tf.Tensor2D {
  if (x.rank !== 2 || x.shape[1] !== w.rows)
    throw new ModelError('E_SHAPE', `packedMatMulT: x [${x.shape}] does not fit a [${w.rows}, ${w.cols}] weight`);
  checkStorage('packedMatMulT', w);
  if (activeKernels() && x.dtype === 'float32' && x.size > 0 && w.cols > 0) {
    countDispatch(PACKED_MATMUL_T);
    const attrs: PackedAttrs = { kind: w.kind, rows: w.rows, cols: w.cols };
    return tf.engine().runKernel(PACKED_MATMUL_T, { x, ...packedInputs(w) }, attrs as any) as tf.Tensor2D;
  }
  return tf.tidy(() => tf.matMul(x, widened(w)));
}

/** Rows [n, cols] as f32 for ids [n] (int32): the embedding lookup. */
export function packedRows(w: PackedWeight, ids: tf.Tensor1D): tf.Tensor2D {
  if (ids.rank !== 1 || ids.dtype !== 'int32')
    throw new ModelError('E_DTYPE', `packedRows: ids must be int32 [n], got ${ids.dtype} [${ids.shape}]`);
  checkStorage('packedRows', w);
  if (activeKernels() && ids.size > 0 && w.cols > 0) {
    countDispatch(PACKED_ROWS);
    const attrs: PackedAttrs = { kind: w.kind, rows: w.rows, cols: w.cols };
    return tf.engine().runKernel(PACKED_ROWS, { ids, ...packedInputs(w) }, attrs as any) as tf.Tensor2D;
  }
  return tf.tidy(() => tf.gather(widened(w), ids) as tf.Tensor2D);
}

// ---- the wasm kernels behind the ops (registered by initKernels) ----

/**
 * From this many x rows on, packedMatMul runs gemm_K (weights widened per block of 8 rows into an
 * f32 panel, then a broadcast-form micro-kernel) instead of matmul_K (dot products, every weight
 * widened in registers, the weights read once per x row). Measured (bf16, µs per call, CPU time,
 * quiet machine; matmul_K at N rows = N × its N = 1 time): 576→1728 N = 1: 97, N = 8: 606 (gemm)
 * vs 776; 576→3072: 146, 1,082 vs 1,168; 1536→576: 75, 519 vs 600; the 576→49152 head: 2,369,
 * 21,558 vs 18,952; at N = 4 the head took 15,338 in gemm against 4 × 2,473. Below 6 rows the
 * dot products win where most of a step's bytes are (heads, MLPs): batch-4 bf16 decode of
 * SmolLM2 ran 48 tok/s in all with the GEMM from 4 rows, against 64 for one sequence.
 */
export const GEMM_MIN_ROWS = 6;

/**
 * q8 runs matmul_q8x16 (16-bit x, integer dot products, weights read once per x row) below this
 * many x rows, else gemm_q8 on x's rounded values. Measured (µs, CPU time; matmul_q8x16 at N rows
 * = N × its N = 1 time): at N = 16, 576→1728 gemm 1,075 vs 1,168, 576→3072 2,011 vs 1,632,
 * 1536→576 1,031 vs 848, the 576→49152 head 33,734 vs 29,216; at N = 64, 3,781 vs 4,672, 6,898 vs
 * 6,528, 3,687 vs 3,392. With the GEMM from 12 rows, SmolLM2's batch-16 q8 decode ran 82.6 tok/s
 * in all against 91.6 at batch 4.
 */
export const Q8_GEMM_MIN_ROWS = 32;

/** PACKED_MATMUL: matmul_K (few x rows) or gemm_K (many), then the outScale/bias epilogue if given. */
export function packedMatMulKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo {
  const k = kernels(PACKED_MATMUL);
  const { kind, rows, cols } = attrs as PackedAttrs;
  const x = inputs.x as tf.TensorInfo;
  const N = x.shape[0];
  const out = backend.makeOutput([N, rows], 'float32');
  const q8 = kind === 'q8';
  const panel = N >= (q8 ? Q8_GEMM_MIN_ROWS : GEMM_MIN_ROWS) ? backend.makeOutput([cols * 8], 'float32') : null;
  // x rewritten for the kernel: de-interleaved for matmul_K (see packed-wat.ts, wideVec); for q8
  // rounded to 16 bits per block of 32 (quantize_x16), as integers (N·cols i16, in f32-sized room)
  // and scales xs for matmul_q8x16, or as their f32 values for gemm_q8
  const xq = panel && !q8 ? null : backend.makeOutput([N, cols], 'float32');
  const xs = panel || !q8 ? null : backend.makeOutput([N * Math.ceil(cols / Q8_BLOCK)], 'float32');
  try {
    // offsets are read after the allocations (which may grow the heap)
    const [w, s] = weightOffsets(backend, inputs);
    const xo = heapOffset(backend, x.dataId);
    const oo = heapOffset(backend, out.dataId);
    if (q8) {
      const xqo = heapOffset(backend, xq.dataId);
      if (panel) {
        k.quantize_x16(xo, 0, 0, xqo, N, cols);
        k.gemm_q8(w, s, xqo, oo, N, rows, cols, heapOffset(backend, panel.dataId));
      } else {
        const xso = heapOffset(backend, xs!.dataId);
        k.quantize_x16(xo, xqo, xso, 0, N, cols);
        k.matmul_q8x16(w, s, xqo, xso, oo, N, rows, cols);
      }
    } else if (panel) {
      const po = heapOffset(backend, panel.dataId);
      if (kind === 'bf16') k.gemm_bf16(w, s, xo, oo, N, rows, cols, po);
      else k.gemm_f16(w, s, xo, oo, N, rows, cols, po);
    } else {
      const xdo = heapOffset(backend, xq.dataId);
      k.deinterleave(xo, xdo, N, cols);
      if (kind === 'bf16') k.matmul_bf16(w, s, xdo, oo, N, rows, cols);
      else k.matmul_f16(w, s, xdo, oo, N, rows, cols);
    }
    if (inputs.outScale || inputs.bias) {
      k.epilogue(
        oo,
        N,
        rows,
        inputs.outScale ? heapOffset(backend, inputs.outScale.dataId) : 0,
        inputs.bias ? heapOffset(backend, inputs.bias.dataId) : 0,
      );
    }
  } finally {
    if (panel) backend.disposeData(panel.dataId);
    if (xq) backend.disposeData(xq.dataId);
    if (xs) backend.disposeData(xs.dataId);
  }
  return out;
}

function widenRow(
  k: KernelExports,
  kind: PackedKind,
  w: number,
  s: number,
  row: number,
  cols: number,
  dst: number,
): void {
  const nb = Math.ceil(cols / Q8_BLOCK);
  if (kind === 'bf16') k.widen_bf16(w + row * cols * 2, 0, dst, cols);
  else if (kind === 'f16') k.widen_f16(w + row * cols * 2, 0, dst, cols);
  else k.widen_q8(w + row * cols, s + row * nb * 4, dst, cols);
}

/** PACKED_MATMUL_T: matmul_t_K (rows with all-zero x skipped; the rest widened once, added). */
export function packedMatMulTKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo {
  const k = kernels(PACKED_MATMUL_T);
  const { kind, rows, cols } = attrs as PackedAttrs;
  const x = inputs.x as tf.TensorInfo;
  const N = x.shape[0];
  const out = backend.makeOutput([N, cols], 'float32');
  const scratch = backend.makeOutput([cols], 'float32');
  try {
    const [w, s] = weightOffsets(backend, inputs);
    const args = [
      w,
      s,
      heapOffset(backend, x.dataId),
      heapOffset(backend, out.dataId),
      N,
      rows,
      cols,
      heapOffset(backend, scratch.dataId),
    ] as const;
    if (kind === 'bf16') k.matmul_t_bf16(...args);
    else if (kind === 'f16') k.matmul_t_f16(...args);
    else k.matmul_t_q8(...args);
  } finally {
    backend.disposeData(scratch.dataId);
  }
  return out;
}

/** PACKED_ROWS: each id's row widened straight into the output (ids checked against rows first). */
export function packedRowsKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo {
  const k = kernels(PACKED_ROWS);
  const { kind, rows, cols } = attrs as PackedAttrs;
  const idsT = inputs.ids as tf.TensorInfo;
  const n = idsT.shape[0];
  const readIds = () =>
    new Int32Array((backend.wasm.asm.memory as WebAssembly.Memory).buffer, heapOffset(backend, idsT.dataId), n);
  for (const id of readIds()) {
    if (id < 0 || id >= rows)
      throw new ModelError('E_SHAPE', `packedRows: id ${id} is outside the weight's ${rows} rows`);
  }
  const out = backend.makeOutput([n, cols], 'float32');
  const [w, s] = weightOffsets(backend, inputs);
  const oo = heapOffset(backend, out.dataId);
  const ids = readIds(); // a fresh view: the allocation may have grown the heap
  for (let i = 0; i < n; i++) widenRow(k, kind, w, s, ids[i], cols, oo + i * cols * 4);
  return out;
}
