/**
 * Prefill attention (T > 1 new tokens per row) as one op:
 * - on the wasm backend with the kernels on, one call of kernels.wat's prefill_attention, which
 *   reads q, k and v in place in the [B·T, heads·D] layout of the fused qkv projection (no
 *   transposes, no per-head loop) and the cache's prefix in place (no gather, no mask tensor);
 * - everywhere else, the composite from ordinary tfjs ops: q, k, v sliced and transposed to
 *   [B, heads, T, D], the prefix gathered and concatenated before the new keys, a position mask,
 *   and nn.ts's attention (the decoder's graph before the kernel existed).
 *
 * Causal, all heads, GQA (nH a multiple of nKV), sliding windows, softcap, rows at different
 * start positions, keys = the cache's prefix (the slots as they are before this chunk is written)
 * plus the new tokens. The caller writes the new k, v into the cache afterwards.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '../../errors.ts';
import { attention, positionMask } from '../../nn.ts';
import { activeKernels, heapOffset, type WasmKernelArgs } from './module.ts';
import { fusedRmsNorm } from './norm.ts';
import { ropeDecode } from './rope.ts';
import { countDispatch } from './stats.ts';

export const PREFILL_ATTENTION = 'MoiPrefillAttention';
export const PREFILL_QK = 'MoiPrefillQk';

/** The cache's prefix the new tokens also attend to. */
export interface PrefillPrefix {
  /** the cache's whole buffers: keys [Bc, nKV, S, D], values transposed [Bc, nKV, D, S] */
  keys: tf.Tensor;
  valuesT: tf.Tensor;
  /** the cache row each input row reads */
  rows: number[];
  /** the position each slot of each cache row holds (−1 = empty), indexed by cache row */
  slotPos: number[][];
}

export interface PrefillAttentionOptions {
  heads: number;
  kvHeads: number;
  headDim: number;
  /** position of each row's first new token */
  start: number[];
  /** sliding window (a key is seen when qpos − pos < window); null = none */
  window: number | null;
  /** attention-logit softcap; null = none */
  softcap: number | null;
  /** the cache prefix; null = the new tokens only */
  prefix: PrefillPrefix | null;
  /** the column of `v` where the value heads start (default 0) */
  vColumn?: number;
}

/** The shapes prefillAttention reads, checked (E_ATTENTION naming what does not fit). */
export function checkPrefillAttention(
  qk: tf.Tensor,
  v: tf.Tensor,
  o: PrefillAttentionOptions,
): { nH: number; nKV: number; D: number; B: number; N: number; T: number; vCol: number } {
  const nH = o.heads;
  const nKV = o.kvHeads;
  const D = o.headDim;
  const B = o.start.length;
  const N = qk.shape[0] ?? 0;
  const T = N / B;
  const vCol = o.vColumn ?? 0;
  if (
    qk.rank !== 2 ||
    v.rank !== 2 ||
    qk.shape[1] !== (nH + nKV) * D ||
    v.shape[0] !== N ||
    vCol < 0 ||
    (v.shape[1] ?? 0) < vCol + nKV * D ||
    !Number.isInteger(T) ||
    T < 1 ||
    nH % nKV !== 0
  ) {
    throw new ModelError(
      'E_ATTENTION',
      `prefillAttention: shapes do not fit (qk ${qk.shape}, v ${v.shape} from column ${vCol}, ${B} rows, ${nH}/${nKV} heads of ${D})`,
    );
  }
  const p = o.prefix;
  if (p) {
    const [Bc, nKVc, S, Dk] = p.keys.shape;
    if (
      p.keys.rank !== 4 ||
      nKVc !== nKV ||
      Dk !== D ||
      p.valuesT.shape.join() !== [Bc, nKV, D, S].join() ||
      p.rows.length !== B
    ) {
      throw new ModelError(
        'E_ATTENTION',
        `prefillAttention: the cache prefix does not fit (keys ${p.keys.shape}, valuesT ${p.valuesT.shape}, ${p.rows.length} rows)`,
      );
    }
    for (const r of p.rows) {
      if (!Number.isInteger(r) || r < 0 || r >= Bc || p.slotPos[r]?.length !== S) {
        throw new ModelError(
          'E_ATTENTION',
          `prefillAttention: cache row ${r} is outside the cache's ${Bc} rows of ${S} slots`,
        );
      }
    }
  }
  return { nH, nKV, D, B, N, T, vCol };
}

/**
 * qk [B·T, (nH + nKV)·D]: each row's query heads then its key heads (attention scale folded into
 * q); v [B·T, W] with the nKV value heads at columns vColumn.. (e.g. the fused qkv projection
 * itself). Returns the attended values [B·T, nH·D].
 */
export function prefillAttention(qk: tf.Tensor, v: tf.Tensor, o: PrefillAttentionOptions): tf.Tensor2D {
  const { nH, nKV, D, B, N, T, vCol } = checkPrefillAttention(qk, v, o);
  const p = o.prefix;
  if (activeKernels() && qk.dtype === 'float32' && v.dtype === 'float32') {
    countDispatch(PREFILL_ATTENTION);
    const S = p ? (p.keys.shape[2] ?? 0) : 0;
    return tf.tidy(() => {
      const table = new Int32Array(B * (S + 2));
      for (let i = 0; i < B; i++) {
        table[i * (S + 2)] = p ? p.rows[i] : 0;
        table[i * (S + 2) + 1] = o.start[i];
        if (p) table.set(p.slotPos[p.rows[i]], i * (S + 2) + 2);
      }
      const inputs: Record<string, tf.Tensor> = { qk, v, table: tf.tensor2d(table, [B, S + 2], 'int32') };
      if (p) {
        inputs.keys = p.keys;
        inputs.valuesT = p.valuesT;
      }
      return tf.engine().runKernel(PREFILL_ATTENTION, inputs, {
        heads: nH,
        kvHeads: nKV,
        headDim: D,
        vColumn: vCol,
        window: o.window ?? 0,
        softcap: o.softcap ?? 0,
      } as any) as tf.Tensor2D;
    });
  }
  return tf.tidy(() => {
    const heads = (x: tf.Tensor, col: number, n: number) =>
      tf.transpose(tf.reshape(tf.slice(x, [0, col], [N, n * D]), [B, T, n, D]), [0, 2, 1, 3]) as tf.Tensor4D;
    const q = heads(qk, 0, nH);
    const k = heads(qk, nH * D, nKV);
    const vv = heads(v, vCol, nKV);
    const positions = o.start.map((p0) => Array.from({ length: T }, (_, t) => p0 + t));
    if (!p)
      return flat(attention(q, k, vv, positionMask(positions, positions, o.window), { scale: 1, softcap: o.softcap }));
    const allRows = p.rows.length === p.keys.shape[0] && p.rows.every((r, i) => r === i);
    const keys = tf.concat([allRows ? p.keys : tf.gather(p.keys, p.rows), k], 2) as tf.Tensor4D;
    const valuesT = tf.concat(
      [allRows ? p.valuesT : tf.gather(p.valuesT, p.rows), tf.transpose(vv, [0, 1, 3, 2])],
      3,
    ) as tf.Tensor4D;
    const mask = positionMask(
      positions,
      p.rows.map((r, i) => [...p.slotPos[r], ...positions[i]]),
      o.window,
    );
    return flat(attention(q, keys, valuesT, mask, { scale: 1, softcap: o.softcap, valuesTransposed: true }));
  });
  function flat(x: tf.Tensor4D): tf.Tensor2D {
    return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [N, nH * D]) as tf.Tensor2D;
  }
}

// ---------------------------------------------------------------------------------------------
// q/k heads of prefill rows: norms and RoPE

export interface PrefillQkOptions {
  /** q heads plus k heads, each headDim wide, at the start of each row of x */
  heads: number;
  headDim: number;
  /** per-head RMSNorm weights [heads, headDim] (Qwen3/Gemma3 q/k norms); null = no norm */
  normWeight: tf.Tensor | null;
  eps: number;
  /** row n's RoPE tables [N, headDim] (rotate-half, full rotary dim) */
  cos: tf.Tensor;
  sin: tf.Tensor;
}

/**
 * The first `heads` heads of each row of x [N, W] (the fused qkv projection: q heads then k
 * heads) as [N, heads, D], normed (if a weight is given) and rotated. On the wasm backend with
 * the kernels on, one call of kernels.wat's prefill_qk reading x in place (no slice copy); else
 * slice, fusedRmsNorm and ropeDecode, which the kernel matches operation for operation.
 */
export function prefillQk(x: tf.Tensor, o: PrefillQkOptions): tf.Tensor3D {
  const N = x.shape[0] ?? 0;
  const D = o.headDim;
  const width = o.heads * D;
  if (
    x.rank !== 2 ||
    (x.shape[1] ?? 0) < width ||
    D % 2 !== 0 ||
    o.cos.size !== N * D ||
    o.sin.size !== N * D ||
    (o.normWeight !== null && o.normWeight.size !== width)
  ) {
    throw new ModelError(
      'E_ROPE',
      `prefillQk: shapes do not fit (x ${x.shape}, ${o.heads} heads of ${D}, cos ${o.cos.shape}, norm ${o.normWeight?.shape ?? '-'})`,
    );
  }
  if (activeKernels() && x.dtype === 'float32') {
    countDispatch(PREFILL_QK);
    const inputs: Record<string, tf.Tensor> = { x, cos: o.cos, sin: o.sin };
    if (o.normWeight) inputs.weight = o.normWeight;
    return tf.engine().runKernel(PREFILL_QK, inputs, { heads: o.heads, headDim: D, eps: o.eps } as any) as tf.Tensor3D;
  }
  return tf.tidy(() => {
    let qk: tf.Tensor = tf.reshape(x.shape[1] === width ? x : tf.slice(x, [0, 0], [N, width]), [N, o.heads, D]);
    if (o.normWeight) qk = fusedRmsNorm(qk, o.eps, { weight: o.normWeight }).y;
    return ropeDecode(qk, tf.reshape(o.cos, [N, 1, D]), tf.reshape(o.sin, [N, 1, D])) as tf.Tensor3D;
  });
}

/** The wasm kernel behind PREFILL_QK (registered by initKernels). */
export function prefillQkKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo {
  const k = activeKernels() as unknown as PrefillExports | null;
  if (!k) throw new Error(`${PREFILL_QK}: the kernels module is not active`);
  const { x, cos, sin, weight } = inputs as Record<string, tf.TensorInfo | undefined>;
  const { heads, headDim: D, eps } = attrs as Record<string, number>;
  const [N, W] = x!.shape as [number, number];
  const out = backend.makeOutput([N, heads, D], 'float32');
  k.prefill_qk(
    heapOffset(backend, x!.dataId),
    W,
    weight ? heapOffset(backend, weight.dataId) : 0,
    heapOffset(backend, cos!.dataId),
    heapOffset(backend, sin!.dataId),
    heapOffset(backend, out.dataId),
    N,
    heads,
    D,
    eps,
  );
  return out;
}

// ---------------------------------------------------------------------------------------------

/** The kernels' entry points (kernels.wat); pointers are byte offsets into the wasm heap. */
interface PrefillExports {
  prefill_qk(
    x: number,
    xs: number,
    w: number,
    cos: number,
    sin: number,
    out: number,
    N: number,
    heads: number,
    D: number,
    eps: number,
  ): void;
  prefill_attention(
    q: number,
    k: number,
    v: number,
    qs: number,
    ks: number,
    vs: number,
    keys: number,
    valsT: number,
    table: number,
    out: number,
    scratch: number,
    B: number,
    T: number,
    nH: number,
    nKV: number,
    D: number,
    S: number,
    window: number,
    cap: number,
  ): void;
}

/** The wasm kernel behind PREFILL_ATTENTION (registered by initKernels). */
export function prefillAttentionKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo {
  const k = activeKernels() as unknown as PrefillExports | null;
  if (!k) throw new Error(`${PREFILL_ATTENTION}: the kernels module is not active`);
  const { qk, v, table, keys, valuesT } = inputs as Record<string, tf.TensorInfo | undefined>;
  const { heads: nH, kvHeads: nKV, headDim: D, vColumn, window, softcap } = attrs as Record<string, number>;
  const [B, S2] = table!.shape;
  const S = S2 - 2;
  const N = qk!.shape[0];
  const T = N / B;
  if (table!.dtype !== 'int32' || (S > 0 && (!keys || keys.shape[2] !== S))) {
    throw new Error(
      `${PREFILL_ATTENTION}: table ${table!.shape} (${table!.dtype}) does not fit the cache prefix ${keys?.shape ?? '-'}`,
    );
  }
  const out = backend.makeOutput([N, nH * D], 'float32');
  const scratch = backend.makeOutput([4 * (S + T) + D + 8 + 64], 'float32');
  try {
    // offsets are read after both allocations (which may grow the heap)
    const qkAt = heapOffset(backend, qk!.dataId);
    const qkW = qk!.shape[1];
    k.prefill_attention(
      qkAt,
      qkAt + nH * D * 4,
      heapOffset(backend, v!.dataId) + vColumn * 4,
      qkW,
      qkW,
      v!.shape[1],
      S > 0 ? heapOffset(backend, keys!.dataId) : 0,
      S > 0 ? heapOffset(backend, valuesT!.dataId) : 0,
      heapOffset(backend, table!.dataId),
      heapOffset(backend, out.dataId),
      heapOffset(backend, scratch.dataId),
      B,
      T,
      nH,
      nKV,
      D,
      S,
      window,
      softcap,
    );
  } finally {
    backend.disposeData(scratch.dataId);
  }
  return out;
}
