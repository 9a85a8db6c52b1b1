/**
 * The weights of a Mixture of Inputs step as one op (README's "Mixture of Inputs, exactly"; the
 * rule is @moi/moi's mix.ts): per row, candidates = the top-K of the raw scores ∪ {y},
 * p = the softmax over them, H = entropy(p) / log(#candidates) (0 with one candidate), and
 * w = a·p + b·[i = y] with a = H·ca + da, b = db − H·cb from the row's coefficients.
 *
 * Slots: [B, K+1] (the top-K in descending order, ties to the lower id, then y; y's own slot
 * weighs 0 when y is inside the top-K). It runs every decode step, and as ~35 small tfjs ops it
 * cost ~0.6 ms of a 27 ms SmolLM2 step (each wasm op ~10–20 µs of dispatch); on the wasm backend
 * with the kernels on it is one call of a host loop over the heap (the scores never leave it: no
 * device→host read), elsewhere the composite below (GPU-safe: no subnormal constants, 0·log 0 by
 * selection; see issue 21). The loop takes exp and log in float64 and rounds once at the end, so
 * its values are the composite's to within float32 rounding, its ids the same.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '../../errors.ts';
import { activeKernels, heapOffset, type WasmKernelArgs } from './module.ts';
import { countDispatch } from './stats.ts';

export const MIX_WEIGHTS = 'MoiMixWeights';

/** One row's mode coefficients: a = H·ca + da, b = db − H·cb. */
export interface MixCoefficients {
  ca: number;
  da: number;
  db: number;
  cb: number;
}

export interface MixWeights {
  /** int32 [B, K+1]: the top-K ids, then y */
  ids: tf.Tensor2D;
  /** [B, K+1] the slots' weights */
  w: tf.Tensor2D;
  /** [B] normalized entropy H */
  entropy: tf.Tensor1D;
  /** [B] the weight on y */
  weightOnSampled: tf.Tensor1D;
  /** int32 [B] candidates per row (K, or K+1 when y is outside the top-K) */
  numCandidates: tf.Tensor1D;
}

/** The mixing weights of float32 scores [B, V] (raw logits), sampled ids int32 [B], top-K. */
export function mixWeights(scores: tf.Tensor2D, sampled: tf.Tensor1D, coef: MixCoefficients[], K: number): MixWeights {
  const [B, V] = scores.shape;
  if (scores.rank !== 2 || sampled.rank !== 1 || sampled.shape[0] !== B || coef.length !== B)
    throw new ModelError(
      'E_SHAPE',
      `mixWeights: scores [${scores.shape}], sampled [${sampled.shape}], ${coef.length} rows of coefficients`,
    );
  if (!Number.isInteger(K) || K < 1 || K >= V)
    throw new ModelError('E_SHAPE', `mixWeights: K = ${K} must be in [1, ${V - 1}] for a vocabulary of ${V}`);
  const flat = coef.flatMap((c) => [c.ca, c.da, c.db, c.cb]);
  if (activeKernels() && scores.dtype === 'float32' && sampled.dtype === 'int32') {
    countDispatch(MIX_WEIGHTS);
    const [ids, w, entropy, weightOnSampled, numCandidates] = tf
      .engine()
      .runKernel(MIX_WEIGHTS, { scores, sampled }, { k: K, coef: flat } as any) as tf.Tensor[];
    return { ids, w, entropy, weightOnSampled, numCandidates } as MixWeights;
  }
  return composite(scores, sampled, flat, K);
}

/** The same weights from tfjs ops (every backend). */
function composite(scores: tf.Tensor2D, sampled: tf.Tensor1D, coef: number[], K: number): MixWeights {
  const [B, V] = scores.shape;
  return tf.tidy((): Record<string, tf.Tensor> => {
    const s = scores.dtype === 'float32' ? scores : tf.cast(scores, 'float32');
    const y = tf.reshape(sampled.dtype === 'int32' ? sampled : tf.cast(sampled, 'int32'), [B, 1]);
    const { values, indices } = tf.topk(s, K);
    const topIsY = tf.cast(tf.equal(indices, y), 'float32'); // [B, K]
    const yInTop = tf.sum(topIsY, 1, true); // [B, 1], 0 or 1
    const at =
      B === 1
        ? tf.reshape(y, [1])
        : tf.reshape(
            tf.add(
              y,
              tf.tensor2d(
                Array.from({ length: B }, (_, r) => r * V),
                [B, 1],
                'int32',
              ),
            ),
            [B],
          );
    const yScore = tf.reshape(tf.gather(tf.reshape(s, [-1]), at), [B, 1]);
    // y's own slot counts only when y is outside the top-K (then its score is below the top-K's)
    const extra = tf.where(tf.greater(yInTop, 0), tf.fill([B, 1], -Infinity), yScore);
    // the top-1 slot gives e^0 = 1, so the sum is ≥ 1; y's empty slot (−∞) and any exp that
    // underflows give p = 0 (exactly 0 on a GPU, which flushes below 2^-126)
    const e = tf.exp(tf.sub(tf.concat([values, extra], 1), tf.slice(values, [0, 0], [B, 1]))); // [B, K+1]
    const p = tf.div(e, tf.sum(e, 1, true));
    const n = tf.sub(K + 1, yInTop); // candidates per row
    // −entropy, with 0·log 0 = 0 by selection, not by a clamp: a p below 2^-126 (an underflowed
    // exp, or y's empty slot) is 0 on a GPU, where a clamp such as max(p, 1e-38) is 0 too and
    // 0·log 0 = NaN. The select discards the NaN of the unused branch; p·log p is exact where p > 0.
    const ent = tf.sum(tf.where(tf.greater(p, 0), tf.mul(p, tf.log(p)), tf.zerosLike(p)), 1, true);
    // H = 0 with a single candidate (K = 1, y on top): there ent = 0 and log n = 0, and 0/0 = NaN
    const H = tf.where(tf.greater(n, 1), tf.clipByValue(tf.div(ent, tf.neg(tf.log(n))), 0, 1), tf.zerosLike(n)); // [B, 1]
    const isY = tf.concat([topIsY, tf.sub(1, yInTop)], 1); // [B, K+1]
    const [ca, da, db, cb] = tf.split(tf.tensor2d(coef, [B, 4]), 4, 1);
    const a = tf.add(tf.mul(H, ca), da);
    const b = tf.sub(db, tf.mul(H, cb));
    const w = tf.add(tf.mul(a, p), tf.mul(b, isY)); // [B, K+1]
    return {
      ids: tf.concat([indices, y], 1),
      w,
      entropy: tf.reshape(H, [B]),
      weightOnSampled: tf.reshape(tf.sum(tf.mul(w, isY), 1), [B]),
      numCandidates: tf.cast(tf.reshape(n, [B]), 'int32'),
    };
  }) as unknown as MixWeights;
}

/** The wasm kernel behind MIX_WEIGHTS (registered by initKernels): a host loop over the heap. */
export function mixWeightsKernel({ inputs, backend, attrs }: WasmKernelArgs): tf.TensorInfo[] {
  const k = activeKernels();
  if (!k) throw new Error(`${MIX_WEIGHTS}: the kernels module is not active`);
  const { scores, sampled } = inputs as Record<string, tf.TensorInfo>;
  const K = attrs.k as number;
  const coef = attrs.coef as number[];
  const [B, V] = scores.shape;
  const N = K + 1;
  const outs = [
    backend.makeOutput([B, N], 'int32'),
    backend.makeOutput([B, N], 'float32'),
    backend.makeOutput([B], 'float32'),
    backend.makeOutput([B], 'float32'),
    backend.makeOutput([B], 'int32'),
  ];
  // views made after the outputs (a heap that grows detaches older views)
  const heap = backend.wasm.HEAPU8.buffer as ArrayBuffer;
  const sPtr = heapOffset(backend, scores.dataId);
  const s = new Float32Array(heap, sPtr, B * V);
  const y = new Int32Array(heap, heapOffset(backend, sampled.dataId), B);
  const ids = new Int32Array(heap, heapOffset(backend, outs[0].dataId), B * N);
  const w = new Float32Array(heap, heapOffset(backend, outs[1].dataId), B * N);
  const ent = new Float32Array(heap, heapOffset(backend, outs[2].dataId), B);
  const wy = new Float32Array(heap, heapOffset(backend, outs[3].dataId), B);
  const cnt = new Int32Array(heap, heapOffset(backend, outs[4].dataId), B);
  const vals = new Float64Array(K);
  const e = new Float64Array(N);
  for (let r = 0; r < B; r++) {
    const yr = y[r];
    if (!(yr >= 0 && yr < V)) {
      for (const o of outs) backend.disposeData(o.dataId);
      throw new ModelError('E_INDEX', `mixWeights: row ${r}'s sampled id ${yr} is outside the vocabulary of ${V}`);
    }
    const row = r * V;
    const top = ids.subarray(r * N, r * N + K);
    // top-K by insertion: descending, an equal score after the ones already held (lower id first);
    // NaN is never a candidate (such a row fails its finite check)
    let held = 0;
    let i = 0;
    for (; i < V && held < K; i++) {
      const v = s[row + i];
      if (v !== v) continue;
      let j = held++;
      for (; j > 0 && v > vals[j - 1]; j--) {
        vals[j] = vals[j - 1];
        top[j] = top[j - 1];
      }
      vals[j] = v;
      top[j] = i;
    }
    for (; held < K; held++) {
      vals[held] = -Infinity; // fewer than K scores that are not NaN: empty slots, weight 0
      top[held] = 0;
    }
    // the rest: kernels.wat's first_above skips, 16 at a time, every score not above the K-th
    let least = vals[K - 1];
    for (; i < V; i++) {
      i += k.first_above(sPtr + 4 * (row + i), V - i, least);
      if (i >= V) break;
      const v = s[row + i];
      let j = K - 1;
      for (; j > 0 && v > vals[j - 1]; j--) {
        vals[j] = vals[j - 1];
        top[j] = top[j - 1];
      }
      vals[j] = v;
      top[j] = i;
      least = vals[K - 1];
    }
    let yInTop = false;
    for (let j = 0; j < K; j++) if (top[j] === yr) yInTop = true;
    ids[r * N + K] = yr;
    // restricted softmax, shifted by the top-1 score
    const m = vals[0];
    let z = 0;
    for (let j = 0; j < K; j++) z += e[j] = Math.exp(Math.fround(vals[j] - m));
    z += e[K] = yInTop ? 0 : Math.exp(Math.fround(s[row + yr] - m));
    let plogp = 0;
    for (let j = 0; j < N; j++) {
      const p = (e[j] /= z);
      if (p > 0) plogp += p * Math.log(p);
    }
    const n = yInTop ? K : N;
    const H = n > 1 ? Math.min(1, Math.max(0, plogp / -Math.log(n))) : 0;
    const a = H * coef[r * 4] + coef[r * 4 + 1];
    const b = coef[r * 4 + 2] - H * coef[r * 4 + 3];
    let onY = 0;
    for (let j = 0; j < N; j++) {
      const isY = j === K ? !yInTop : top[j] === yr;
      const wj = a * e[j] + (isY ? b : 0);
      w[r * N + j] = wj;
      if (isY) onY += wj;
    }
    ent[r] = H;
    wy[r] = onY;
    cnt[r] = n;
  }
  return outs;
}
