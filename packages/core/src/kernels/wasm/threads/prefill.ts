/**
 * Prefill attention in the thread pool: the single-thread kernel's own instructions (kernels.wat's
 * prefill_attention, compiled into the pool's module by wat.ts) run once per (row, query head)
 * across the pool's threads, so its result is the single-thread kernel's, bit for bit, at any
 * thread count (chunked prefill equals one prefill as it does there).
 *
 * q, k and v (the fused qkv rows) and the cache rows the prefix reads are copied into the pool's
 * scratch; the attended values come back into a fresh tensor [B·T, nH·D].
 */
import * as tf from '@tensorflow/tfjs-core';
import { checkPrefillAttention, type PrefillAttentionOptions } from '../prefill-attention.ts';
import { hostValues, outputTensors } from './linear.ts';
import { scratch } from './ops.ts';
import type { ThreadPool } from './pool.ts';

export function pooledPrefillAttention(
  pool: ThreadPool,
  qk: tf.Tensor,
  v: tf.Tensor,
  o: PrefillAttentionOptions,
): tf.Tensor2D {
  const { nH, nKV, D, B, N, T, vCol } = checkPrefillAttention(qk, v, o);
  const p = o.prefix;
  const S = p ? (p.keys.shape[2] ?? 0) : 0;
  const G = nH / nKV;
  const qkW = (nH + nKV) * D;
  const vW = v.shape[1] ?? 0;
  const units = B * nH;
  const scBytes = Math.ceil(((4 * (S + T) + D + 72) * 4) / 64) * 64;
  const kvRow = nKV * S * D;
  return outputTensors(N, [nH * D], ([out]) => {
    const [qkp, vp, kp, vtp, tp, op, sp] = scratch(
      pool,
      N * qkW * 4,
      N * nKV * D * 4,
      B * kvRow * 4,
      B * kvRow * 4,
      units * (S + 2) * 4,
      N * nH * D * 4,
      pool.threads * scBytes,
    );
    const heap = pool.heap;
    heap.f32(qkp, N * qkW).set((hostValues(qk, 'float32') as Float32Array).subarray(0, N * qkW));
    // the value heads only: [N, nKV·D]
    const vv = hostValues(v, 'float32') as Float32Array;
    const vDst = heap.f32(vp, N * nKV * D);
    for (let n = 0; n < N; n++) vDst.set(vv.subarray(n * vW + vCol, n * vW + vCol + nKV * D), n * nKV * D);
    // the prefix: each input row's cache row, in input-row order (unit tables say row·nKV + kv head)
    const tables = heap.i32(tp, units * (S + 2));
    if (p) {
      const keys = hostValues(p.keys, 'float32') as Float32Array;
      const valsT = hostValues(p.valuesT, 'float32') as Float32Array;
      const kDst = heap.f32(kp, B * kvRow);
      const vtDst = heap.f32(vtp, B * kvRow);
      for (let b = 0; b < B; b++) {
        const r = p.rows[b];
        kDst.set(keys.subarray(r * kvRow, (r + 1) * kvRow), b * kvRow);
        vtDst.set(valsT.subarray(r * kvRow, (r + 1) * kvRow), b * kvRow);
      }
    }
    for (let b = 0; b < B; b++) {
      for (let hq = 0; hq < nH; hq++) {
        const at = (b * nH + hq) * (S + 2);
        tables[at] = b * nKV + Math.floor(hq / G);
        tables[at + 1] = o.start[b];
        if (p) tables.set(p.slotPos[p.rows[b]], at + 2);
      }
    }
    const { i32 } = pool.args();
    i32.set([
      qkp,
      qkp + nH * D * 4,
      vp,
      qkW,
      qkW,
      nKV * D,
      p ? kp : 0,
      p ? vtp : 0,
      tp,
      op,
      sp,
      scBytes,
      B,
      T,
      nH,
      nKV,
      D,
      S,
      o.window ?? 0,
      0,
    ]);
    new Float64Array(i32.buffer, i32.byteOffset + 80, 1)[0] = o.softcap ?? 0;
    pool.dispatch('prefill_attn', units);
    // [B][nH][T][D] → [B·T][nH·D]
    const res = heap.f32(op, N * nH * D);
    for (let b = 0; b < B; b++)
      for (let hq = 0; hq < nH; hq++)
        for (let t = 0; t < T; t++) {
          const src = ((b * nH + hq) * T + t) * D;
          out.set(res.subarray(src, src + D), (b * T + t) * nH * D + hq * D);
        }
  })[0];
}
