/**
 * Per-step trace columns, computed on the device inside the decode step and packed into its one
 * read: for each row the normalized entropy H of the mixing prior, the weight w_y the next input
 * puts on the sampled token y, y's prior probability p_y, and the top-N candidates with their
 * prior p and mixing weight w. Same rule as the MoI mixer (candidates = top-K of the prior ∪ {y},
 * p = softmax over them, w = a·p + b·[i = y] with a, b from the row's mode and β), evaluated for
 * every mode, so standard rows get H too (there w = [i = y]).
 *
 * Layout of a row: [H, w_y, p_y, id_0..id_{N-1}, p_0..p_{N-1}, w_0..w_{N-1}] (3 + 3N floats).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { MixSettings, MixSlots } from '@moi/moi';

export interface TraceCandidate {
  id: number;
  p: number;
  w: number;
}
export interface TokenTrace {
  /** normalized entropy of the prior over the candidates, in [0, 1] */
  entropy: number;
  /** weight of the next input on the sampled token (1 in standard mode) */
  weight: number;
  /** the sampled token's prior probability */
  pSampled: number;
  /** the N most likely candidates, best first */
  candidates: TraceCandidate[];
}

export function traceWidth(n: number): number {
  return 3 + 3 * n;
}

/** Soft Thinking rows of a step: the mixer's own slots, its S, and which rows are thinking. */
export interface SoftTraceInput {
  slots: MixSlots;
  /** [B] S in nats (the mixer's entropy column) */
  entropy: tf.Tensor1D;
  /** per row: in the soft phase at this step (host-known before the step) */
  thinking: boolean[];
}

/**
 * [B, 3 + 3N] trace columns (float32). `logits` are the step's raw logits, `processed` the
 * sampler's (for rows whose prior is 'processed'), `sampled` the chosen ids. Rows in Soft
 * Thinking's soft phase show the mixer's own slots instead (see softTraceColumns).
 */
export function traceColumns(
  logits: tf.Tensor2D,
  processed: tf.Tensor2D | undefined,
  sampled: tf.Tensor1D,
  settings: MixSettings[],
  n: number,
  soft?: SoftTraceInput,
): tf.Tensor2D {
  const plain = priorTraceColumns(logits, processed, sampled, settings, n);
  if (!soft || !soft.thinking.some(Boolean)) return plain;
  return tf.tidy(() => {
    const B = logits.shape[0];
    const rows = tf.cast(
      tf.tensor2d(
        soft.thinking.map((t) => (t ? 1 : 0)),
        [B, 1],
      ),
      'bool',
    );
    return tf.where(rows, softTraceColumns(soft, sampled, logits.shape[1], n), plain) as tf.Tensor2D;
  });
}

/**
 * Trace columns of rows in the soft phase: H = S / ln V (the entropy of the full distribution at
 * the soft temperature, normalized), the slots of the next input ranked by weight with their prior
 * p and weight w (empty slots: id −1), and w_y, p_y of the recorded token.
 */
function softTraceColumns(soft: SoftTraceInput, recorded: tf.Tensor1D, V: number, n: number): tf.Tensor2D {
  return tf.tidy(() => {
    const { ids, weights, prior } = soft.slots;
    const [B, N] = ids.shape;
    const k = Math.min(n, N);
    const top = tf.topk(weights, k);
    const flat = tf.add(top.indices, tf.reshape(tf.range(0, B * N, N, 'int32'), [B, 1]));
    const pick = (t: tf.Tensor2D) => tf.reshape(tf.gather(tf.reshape(t, [-1]), tf.reshape(flat, [-1])), [B, k]);
    const used = tf.greater(top.values, 0);
    const candIds = tf.where(used, tf.cast(pick(ids), 'float32'), tf.fill([B, k], -1));
    const pad = (t: tf.Tensor, v: number) => (k < n ? tf.concat([t, tf.fill([B, n - k], v)], 1) : t);
    const holdsY = tf.equal(ids, tf.reshape(tf.cast(recorded, 'int32'), [B, 1]));
    // w_y: the recorded token's weight; p_y: its prior, from any slot that holds it
    const wY = tf.sum(tf.where(holdsY, weights, tf.zerosLike(weights)), 1, true);
    const pY = tf.max(tf.where(holdsY, prior, tf.zerosLike(prior)), 1, true);
    const H = tf.clipByValue(tf.div(tf.reshape(soft.entropy, [B, 1]), Math.log(Math.max(2, V))), 0, 1);
    return tf.concat(
      [H, wY, pY, pad(candIds, -1), pad(tf.where(used, pick(prior), tf.zerosLike(top.values)), 0), pad(top.values, 0)],
      1,
    ) as tf.Tensor2D;
  });
}

/** Trace columns from the prior (top-K of the raw or processed logits ∪ {y}) and the row's mode. */
function priorTraceColumns(
  logits: tf.Tensor2D,
  processed: tf.Tensor2D | undefined,
  sampled: tf.Tensor1D,
  settings: MixSettings[],
  n: number,
): tf.Tensor2D {
  return tf.tidy(() => {
    const [B, V] = logits.shape;
    const kRow = settings.map((s) => (s.topK === 'all' ? V : Math.min(V, s.topK)));
    const K = Math.max(n, ...kRow);
    const useProc = settings.map((s) => (s.prior === 'processed' && processed ? 1 : 0));
    const scores =
      useProc.some((u) => u) && processed
        ? tf.where(tf.cast(tf.tensor2d(useProc, [B, 1]), 'bool'), processed, logits)
        : logits;
    const y = tf.reshape(tf.cast(sampled, 'int32'), [B, 1]);
    const { values, indices } = tf.topk(scores, K);
    const rank = tf.reshape(tf.range(0, K, 1, 'int32'), [1, K]);
    const inTop = tf.logicalAnd(tf.less(rank, tf.tensor2d(kRow, [B, 1], 'int32')), tf.greater(values, -Infinity));
    const topIsY = tf.logicalAnd(inTop, tf.equal(indices, y));
    const yInTop = tf.any(topIsY, 1, true);
    const flat = tf.add(tf.mul(tf.reshape(tf.range(0, B, 1, 'int32'), [B, 1]), tf.scalar(V, 'int32')), y);
    const yScore = tf.reshape(tf.gather(tf.reshape(scores, [-1]), tf.reshape(flat, [-1])), [B, 1]);
    const valid = tf.concat([inTop, tf.logicalNot(yInTop)], 1);
    const all = tf.concat([values, yScore], 1);
    const isY = tf.cast(tf.concat([topIsY, tf.logicalNot(yInTop)], 1), 'float32');
    // restricted, stable softmax over the valid slots
    const m = tf.max(tf.where(valid, all, tf.fill(all.shape, -Infinity)), 1, true);
    const safeM = tf.where(tf.greater(m, -Infinity), m, tf.zerosLike(m));
    const e = tf.where(valid, tf.exp(tf.sub(all, safeM)), tf.zerosLike(all));
    const z = tf.sum(e, 1, true);
    // z ≥ 1 wherever a slot is valid (the max's own term is e^0); the clamp only keeps the unused
    // branch of the select finite where z = 0, and 1e-30 is a normal float32 (not flushed on a GPU)
    const p = tf.where(tf.greater(z, 0), tf.div(e, tf.maximum(z, 1e-30)), isY);
    const count = tf.sum(tf.cast(valid, 'float32'), 1, true);
    // −entropy with 0·log 0 = 0 by selection: a clamp max(p, 1e-38) is subnormal, 0 on a GPU, and
    // gave 0·log 0 = NaN there (issue 21); the select discards the unused branch's NaN
    const negEnt = tf.sum(tf.where(tf.greater(p, 0), tf.mul(p, tf.log(p)), tf.zerosLike(p)), 1, true);
    const H = tf.clipByValue(
      tf.where(tf.greater(count, 1), tf.div(negEnt, tf.neg(tf.log(tf.maximum(count, 2)))), tf.zerosLike(count)),
      0,
      1,
    );
    // per-row mode coefficients
    const ab = settings.flatMap((s) =>
      s.mode === 'moi' ? [1 / (s.beta + 1), 0, 1, 1 / (s.beta + 1)] : s.mode === 'direct' ? [0, 1, 0, 0] : [0, 0, 1, 0],
    );
    const [ca, da, db, cb] = tf.split(tf.tensor2d(ab, [B, 4]), 4, 1);
    const a = tf.add(tf.mul(H, ca), da);
    const b = tf.sub(db, tf.mul(H, cb));
    const w = tf.add(tf.mul(a, p), tf.mul(b, isY));
    const wY = tf.sum(tf.mul(w, isY), 1, true);
    const pY = tf.sum(tf.mul(p, isY), 1, true);
    const topN = (t: tf.Tensor2D) => tf.slice(t, [0, 0], [B, n]);
    return tf.concat(
      [H, wY, pY, topN(tf.cast(indices, 'float32')), topN(p as tf.Tensor2D), topN(w as tf.Tensor2D)],
      1,
    ) as tf.Tensor2D;
  });
}

/** Read one row's trace from the step's packed values, starting at `offset`. */
export function readTrace(values: ArrayLike<number>, offset: number, n: number, keep: number): TokenTrace {
  const candidates: TraceCandidate[] = [];
  for (let j = 0; j < Math.min(n, keep); j++) {
    if (values[offset + 3 + j] < 0) break; // an empty soft slot
    candidates.push({ id: values[offset + 3 + j], p: values[offset + 3 + n + j], w: values[offset + 3 + 2 * n + j] });
  }
  return { entropy: values[offset], weight: values[offset + 1], pSampled: values[offset + 2], candidates };
}
