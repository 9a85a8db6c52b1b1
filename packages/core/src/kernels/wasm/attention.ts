/**
 * Decode attention (one query token per row) over a KV cache, as one op:
 * - on the wasm backend with the kernels on, one call of kernels.wat's decode_attention, which
 *   reads the cache buffers in place (no gather of rows, no mask tensor, no batched matmuls);
 * - everywhere else, the composite: scores = softcap(q·Kᵀ) + mask, softmax, ·V, from ordinary
 *   tfjs ops (the same graph the decoder used before the kernel existed).
 *
 * All heads, GQA (nH a multiple of nKV), the causal/position mask with an optional sliding
 * window over a rotating buffer, softcap, and rows at different positions.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '../../errors.ts';
import { softcap as softcapOp } from '../../nn.ts';
import { activeKernels, heapOffset, type WasmKernelArgs } from './module.ts';
import { countDispatch } from './stats.ts';

export const DECODE_ATTENTION = 'MoiDecodeAttention';

export interface DecodeAttentionOptions {
  /** the cache row each input row reads */
  rows: number[];
  /** sliding window (a slot is seen when qpos − pos < window); null = none */
  window: number | null;
  /** attention-logit softcap; null = none */
  softcap: number | null;
  /** the int32 slot table for the kernel (see slotTable); called only when the kernel runs */
  slots: () => tf.Tensor;
  /** the additive mask [B, 1, 1, S] for the composite; called only when the composite runs */
  mask: () => tf.Tensor;
}

/**
 * The kernel's slot table, int32 [B, S + 2]: per input row, its cache row, its query position,
 * then the position each of the S slots holds (−1 = empty).
 */
export function slotTable(rows: number[], queryPos: number[], slotPos: number[][]): tf.Tensor2D {
  const S = slotPos[rows[0]].length;
  const t = new Int32Array(rows.length * (S + 2));
  for (let i = 0; i < rows.length; i++) {
    const o = i * (S + 2);
    t[o] = rows[i];
    t[o + 1] = queryPos[i];
    t.set(slotPos[rows[i]], o + 2);
  }
  return tf.tensor2d(t, [rows.length, S + 2], 'int32');
}

/**
 * q [B, nH, D] (attention scale folded in), keys [Bc, nKV, S, D] and valuesT [Bc, nKV, D, S]
 * the cache's whole buffers; returns the attended values [B, nH·D].
 */
export function decodeAttention(
  q: tf.Tensor,
  keys: tf.Tensor,
  valuesT: tf.Tensor,
  o: DecodeAttentionOptions,
): tf.Tensor2D {
  const [B, nH, D] = q.shape;
  const [Bc, nKV, S, Dk] = keys.shape;
  if (
    q.rank !== 3 ||
    keys.rank !== 4 ||
    valuesT.rank !== 4 ||
    Dk !== D ||
    nH % nKV !== 0 ||
    valuesT.shape.join() !== [Bc, nKV, D, S].join() ||
    o.rows.length !== B
  ) {
    throw new ModelError(
      'E_ATTENTION',
      `decodeAttention: shapes do not fit (q ${q.shape}, keys ${keys.shape}, valuesT ${valuesT.shape}, ${o.rows.length} rows)`,
    );
  }
  for (const r of o.rows) {
    if (!Number.isInteger(r) || r < 0 || r >= Bc)
      throw new ModelError('E_ATTENTION', `decodeAttention: cache row ${r} is outside the cache's ${Bc} rows`);
  }
  if (activeKernels()) {
    countDispatch(DECODE_ATTENTION);
    return tf.engine().runKernel(DECODE_ATTENTION, { q, keys, valuesT, slots: o.slots() }, {
      window: o.window ?? 0,
      softcap: o.softcap ?? 0,
    } as any) as tf.Tensor2D;
  }
  return tf.tidy(() => {
    const G = nH / nKV;
    const allRows = B === Bc && o.rows.every((r, i) => r === i);
    const K = allRows ? keys : tf.gather(keys, o.rows);
    const V = allRows ? valuesT : tf.gather(valuesT, o.rows);
    const scores = tf.add(softcapOp(tf.matMul(tf.reshape(q, [B, nKV, G, D]), K, false, true), o.softcap), o.mask());
    return tf.reshape(tf.matMul(tf.softmax(scores), V, false, true), [B, nH * D]) as tf.Tensor2D;
  });
}

/** The wasm kernel behind DECODE_ATTENTION (registered by initKernels). */
export function decodeAttentionKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo {
  const k = activeKernels();
  if (!k) throw new Error(`${DECODE_ATTENTION}: the kernels module is not active`);
  const { q, keys, valuesT, slots } = inputs as Record<string, tf.TensorInfo>;
  const [B, nH, D] = q.shape;
  const [, nKV, S] = keys.shape;
  if (slots.dtype !== 'int32' || slots.shape[0] !== B || slots.shape[1] !== S + 2) {
    throw new Error(
      `${DECODE_ATTENTION}: slot table ${slots.shape} (${slots.dtype}) does not fit ${B} rows of ${S} slots`,
    );
  }
  const out = backend.makeOutput([B, nH * D], 'float32');
  const scratch = backend.makeOutput([S], 'float32');
  try {
    // offsets are read after both allocations (which may grow the heap)
    k.decode_attention(
      heapOffset(backend, q.dataId),
      heapOffset(backend, keys.dataId),
      heapOffset(backend, valuesT.dataId),
      heapOffset(backend, slots.dataId),
      heapOffset(backend, out.dataId),
      heapOffset(backend, scratch.dataId),
      B,
      nH,
      nKV,
      S,
      D,
      attrs?.window ?? 0,
      attrs?.softcap ?? 0,
    );
  } finally {
    backend.disposeData(scratch.dataId);
  }
  return out;
}
