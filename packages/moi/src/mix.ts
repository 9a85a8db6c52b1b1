/**
 * Mixture of Inputs (arXiv 2505.14827): after the sampler picks y, the next input is not E[y]
 * but h = Σ_i w_i E[i] over a candidate set, blending the model's prior with the sampled token.
 *
 * Per row, with candidates C = top-K of the prior's log-probs plus y (if outside them):
 *   p = softmax of the log-probs restricted to C,   H = entropy(p) / log|C|  (0 if |C| = 1)
 *   w = a·p + b·onehot(y), where
 *     moi:      a = H/(β+1), b = (β+1−H)/(β+1)
 *     direct:   a = 1,       b = 0
 *     standard: a = 0,       b = 1      (h = E[y] exactly)
 * One code path serves a batch with mixed modes, β, K and priors. Everything stays on device:
 * no host reads here (the decode loop spends its one read per step on the sampler).
 *
 * Candidates are ranked by the prior's logits themselves: log_softmax only shifts a row by a
 * constant, so the top-K and the restricted softmax are the same, and the float32 shift cannot
 * create ties the float64 reference does not have. The restricted softmax is computed stably
 * (subtract the candidates' max). A logit of −Infinity (filtered by the sampler) is never a
 * candidate, except y, which always is.
 *
 * Device arithmetic is subnormal-safe (issue 21): GPUs flush float32 below 2^-126 ≈ 1.1755e-38 to
 * zero, so no constant or clamp here may be that small; p·log p is taken where p > 0 by a select.
 */
import * as tf from '@tensorflow/tfjs-core';
import { mixWeights, UsageError, type MixCoefficients } from '@moi/core';
import { embedRowsOf, embedSourceOf, embedWidth, mixAllRows, type EmbedSource } from './embed-source.ts';
import { checkMixSettings } from './settings.ts';
import type { MixInputsArgs, MixResult } from './types.ts';

/** With `returnWeights`: the candidate slots too, for tests and traces. */
export interface MixDebugResult extends MixResult {
  /** int32 [B, N]: N = K+1 (top-K slots, then y), or V when a row mixes the whole vocabulary */
  candidateIds: tf.Tensor2D;
  /** [B, N] weight of each slot (0 where the slot is not a candidate) */
  weights: tf.Tensor2D;
  /** bool [B, N] which slots are candidates */
  candidateMask: tf.Tensor2D;
}

export interface MixInputsOptions {
  returnWeights?: boolean;
  /** force the general path (tests compare it with the lean one) */
  general?: boolean;
}

function moiError(message: string): UsageError {
  return new UsageError('E_MOI', `mixInputs: ${message}`);
}

/** Host-side plan of a batch: shapes and per-row constants, from settings only. */
interface Plan {
  B: number;
  V: number;
  /** the embedding rows' source, and their width H */
  src: EmbedSource;
  Hd: number;
  /** largest K among rows that use a top-K; 0 when every row mixes the whole vocabulary */
  kMax: number;
  kRow: Int32Array;
  isAll: boolean[];
  anyProcessed: boolean;
  useProcessed: Float32Array;
  isMoi: Float32Array;
  isDirect: Float32Array;
  isStandard: Float32Array;
  /** β for moi rows; 1 elsewhere, so unused rows cannot produce 0/0 */
  beta: Float32Array;
}

function checkArgs(args: MixInputsArgs): Plan {
  const { logits, processedLogits, sampled, settings } = args;
  if (logits.rank !== 2) throw moiError(`logits must be [B, V], got shape [${logits.shape}]`);
  const [B, V] = logits.shape;
  if (sampled.rank !== 1 || sampled.shape[0] !== B)
    throw moiError(`sampled must be [${B}], got shape [${sampled.shape}]`);
  const src = embedSourceOf(args, V, 'mixInputs');
  if (!Array.isArray(settings) || settings.length !== B) {
    throw moiError(
      `settings must have one entry per row (${B}), got ${Array.isArray(settings) ? settings.length : typeof settings}`,
    );
  }
  const plan: Plan = {
    B,
    V,
    src,
    Hd: embedWidth(src),
    kMax: 0,
    kRow: new Int32Array(B),
    isAll: [],
    anyProcessed: false,
    useProcessed: new Float32Array(B),
    isMoi: new Float32Array(B),
    isDirect: new Float32Array(B),
    isStandard: new Float32Array(B),
    beta: new Float32Array(B),
  };
  settings.forEach((s, r) => {
    checkMixSettings(s, V, `settings[${r}]`);
    if (s.mode === 'soft')
      throw moiError(`settings[${r}]: mode 'soft' is Soft Thinking (softMix, or defaultMixer for mixed batches)`);
    const all = s.topK === 'all' || s.topK >= V;
    plan.isAll.push(all);
    if (!all) plan.kMax = Math.max(plan.kMax, s.topK as number);
    plan.kRow[r] = all ? V : (s.topK as number);
    if (s.prior === 'processed') {
      plan.anyProcessed = true;
      plan.useProcessed[r] = 1;
    }
    plan.isMoi[r] = s.mode === 'moi' ? 1 : 0;
    plan.isDirect[r] = s.mode === 'direct' ? 1 : 0;
    plan.isStandard[r] = s.mode === 'standard' ? 1 : 0;
    plan.beta[r] = s.mode === 'moi' ? s.beta : 1;
  });
  if (plan.anyProcessed) {
    if (!processedLogits) throw moiError(`a row uses prior 'processed' but processedLogits was not given`);
    if (processedLogits.rank !== 2 || processedLogits.shape[0] !== B || processedLogits.shape[1] !== V) {
      throw moiError(`processedLogits must be [${B}, ${V}] like logits, got shape [${processedLogits.shape}]`);
    }
  }
  return plan;
}

/** [B, V] float32 scores each row ranks and softmaxes: raw or processed logits. */
function priorScores(args: MixInputsArgs, plan: Plan): tf.Tensor2D {
  const raw = args.logits.dtype === 'float32' ? args.logits : tf.cast(args.logits, 'float32');
  if (!plan.anyProcessed) return raw;
  const proc =
    args.processedLogits!.dtype === 'float32' ? args.processedLogits! : tf.cast(args.processedLogits!, 'float32');
  if (plan.useProcessed.every((u) => u === 1)) return proc;
  const use = tf.tensor2d(plan.useProcessed, [plan.B, 1]);
  return tf.where(tf.cast(use, 'bool'), proc, raw);
}

/** Candidate slots of a batch: ids [B, N], scores [B, N], which are candidates, which is y. */
interface Slots {
  ids: tf.Tensor2D;
  scores: tf.Tensor2D;
  valid: tf.Tensor2D;
  isY: tf.Tensor2D;
}

/** Top-K slots (K = kMax; ranks ≥ K_row masked) plus a last slot for y, valid when y is outside. */
function topKSlots(scores: tf.Tensor2D, y: tf.Tensor2D, plan: Plan): Slots {
  const { B, V, kMax } = plan;
  const { values, indices } = tf.topk(scores, kMax);
  const rank = tf.reshape(tf.range(0, kMax, 1, 'int32'), [1, kMax]);
  const inTop = tf.less(rank, tf.tensor2d(plan.kRow, [B, 1], 'int32'));
  const topIsY = tf.equal(indices, y);
  const topValid = tf.logicalAnd(inTop, tf.logicalOr(tf.greater(values, -Infinity), topIsY));
  const yInTop = tf.any(tf.logicalAnd(inTop, topIsY), 1, true);
  // y's own score, by a flat gather at r·V + y.
  const flat = tf.add(tf.mul(tf.reshape(tf.range(0, B, 1, 'int32'), [B, 1]), tf.scalar(V, 'int32')), y);
  const yScore = tf.reshape(tf.gather(tf.reshape(scores, [-1]), tf.reshape(flat, [-1])), [B, 1]);
  const ids = tf.concat([indices, y], 1) as tf.Tensor2D;
  const valid = tf.concat([topValid, tf.logicalNot(yInTop)], 1) as tf.Tensor2D;
  return {
    ids,
    scores: tf.concat([values, yScore], 1) as tf.Tensor2D,
    valid,
    isY: tf.logicalAnd(valid, tf.equal(ids, y)),
  };
}

/** Every vocabulary entry as a slot: candidates are the finite scores, and y. */
function vocabSlots(scores: tf.Tensor2D, y: tf.Tensor2D, plan: Plan): Slots {
  const ids = tf.tile(tf.reshape(tf.range(0, plan.V, 1, 'int32'), [1, plan.V]), [plan.B, 1]) as tf.Tensor2D;
  const isY = tf.equal(ids, y) as tf.Tensor2D;
  return { ids, scores, valid: tf.logicalOr(tf.greater(scores, -Infinity), isY) as tf.Tensor2D, isY };
}

interface Weights {
  w: tf.Tensor2D;
  entropy: tf.Tensor1D;
  weightOnSampled: tf.Tensor1D;
  numCandidates: tf.Tensor1D;
}

/** The mixing weights of the slots, with the per-row mode coefficients a, b. */
function slotWeights(
  slots: Slots,
  coef: { a: (H: tf.Tensor1D) => tf.Tensor1D; b: (H: tf.Tensor1D) => tf.Tensor1D },
): Weights {
  const { scores, valid, isY } = slots;
  const isYf = tf.cast(isY, 'float32');
  // Restricted, stable softmax: subtract the candidates' max (0 if none is finite). GPU-safe
  // (issue 21): the max candidate's term is e^0 = 1, so z ≥ 1; an exp that underflows (a GPU
  // flushes below 2^-126 to 0) only makes that slot's p 0, which the entropy's select handles.
  const m0 = tf.max(tf.where(valid, scores, tf.fill(scores.shape, -Infinity)), 1, true);
  const m = tf.where(tf.greater(m0, -Infinity), m0, tf.zerosLike(m0));
  const e = tf.where(valid, tf.exp(tf.sub(scores, m)), tf.zerosLike(scores));
  const z = tf.sum(e, 1, true);
  // A row whose only candidate, y, has score −Infinity: all prior mass on y.
  const p = tf.where(tf.greater(z, 0), tf.div(e, z), isYf);
  const n = tf.sum(tf.cast(valid, 'float32'), 1);
  // 0·log 0 = 0 by selection (the unused branch's NaN is discarded): no clamp constant, which on a
  // GPU would have to be a normal float; the division by log n only where n > 1.
  const ent = tf.neg(tf.sum(tf.where(tf.greater(p, 0), tf.mul(p, tf.log(p)), tf.zerosLike(p)), 1));
  const H = tf.clipByValue(tf.where(tf.greater(n, 1), tf.div(ent, tf.log(n)), tf.zerosLike(n)), 0, 1) as tf.Tensor1D;
  const a = tf.expandDims(coef.a(H), 1);
  const b = tf.expandDims(coef.b(H), 1);
  const w = tf.add(tf.mul(a, p), tf.mul(b, isYf)) as tf.Tensor2D;
  return {
    w,
    entropy: H,
    weightOnSampled: tf.sum(tf.mul(w, isYf), 1) as tf.Tensor1D,
    numCandidates: tf.cast(n, 'int32') as tf.Tensor1D,
  };
}

/**
 * The common case (it runs every decode step): every row takes the same top-K of the raw prior.
 * Same rule as the general path: candidates = top-K ∪ {y}, p the softmax over them,
 * H = entropy / log(#candidates), w = a·p + b·[i = y] with per-row a, b from mode and β. The
 * weights are one op (@moi/core's mixWeights: a wasm kernel, or the same rule in tfjs ops).
 */
function leanMix(args: MixInputsArgs, plan: Plan, Hd: number): MixResult {
  const { B, kMax: K } = plan;
  // per-row constants: a = H·ca + da, b = db − H·cb
  const coef: MixCoefficients[] = Array.from({ length: B }, (_, r) => {
    const inv = 1 / (plan.beta[r] + 1);
    return {
      ca: plan.isMoi[r] * inv,
      da: plan.isDirect[r],
      db: plan.isMoi[r] + plan.isStandard[r],
      cb: plan.isMoi[r] * inv,
    };
  });
  return tf.tidy((): Record<string, tf.Tensor> => {
    const scores = args.logits.dtype === 'float32' ? args.logits : tf.cast(args.logits, 'float32');
    const { ids, w, entropy, weightOnSampled, numCandidates } = mixWeights(scores, args.sampled, coef, K);
    const rows = tf.reshape(embedRowsOf(plan.src, tf.reshape(ids, [-1]) as tf.Tensor1D), [B, K + 1, Hd]);
    const embeds = tf.reshape(tf.matMul(tf.reshape(w, [B, 1, K + 1]), rows), [B, Hd]) as tf.Tensor2D;
    return { embeds, entropy, weightOnSampled, numCandidates };
  }) as unknown as MixResult;
}

/** Mix the next input embeddings of a batch. */
export function mixInputs(args: MixInputsArgs): MixResult;
export function mixInputs(args: MixInputsArgs, opts: { returnWeights: true }): MixDebugResult;
export function mixInputs(args: MixInputsArgs, opts?: MixInputsOptions): MixResult | MixDebugResult;
export function mixInputs(args: MixInputsArgs, opts: MixInputsOptions = {}): MixResult | MixDebugResult {
  const plan = checkArgs(args);
  const { B, V } = plan;
  const Hd = plan.Hd;
  const lean =
    !opts.returnWeights &&
    !opts.general &&
    !plan.anyProcessed &&
    !plan.isAll.some((x) => x) &&
    plan.kRow.every((k) => k === plan.kMax);
  if (lean) return leanMix(args, plan, Hd);
  const result = tf.tidy((): Record<string, tf.Tensor> => {
    const scores = priorScores(args, plan);
    const y = tf.reshape(args.sampled.dtype === 'int32' ? args.sampled : tf.cast(args.sampled, 'int32'), [
      B,
      1,
    ]) as tf.Tensor2D;

    // Per-row mode coefficients, so one path serves a mixed batch.
    const isMoi = tf.tensor1d(plan.isMoi);
    const beta1 = tf.add(tf.tensor1d(plan.beta), 1);
    const coef = {
      a: (H: tf.Tensor1D) => tf.add(tf.mul(isMoi, tf.div(H, beta1)), tf.tensor1d(plan.isDirect)) as tf.Tensor1D,
      b: (H: tf.Tensor1D) =>
        tf.add(tf.mul(isMoi, tf.div(tf.sub(beta1, H), beta1)), tf.tensor1d(plan.isStandard)) as tf.Tensor1D,
    };

    const anyAll = plan.isAll.some((x) => x);
    const allAll = plan.isAll.every((x) => x);
    type Part = Weights & { slots: Slots; embeds: tf.Tensor2D };
    let sparse: Part | null = null;
    let dense: Part | null = null;

    if (!allAll) {
      const slots = topKSlots(scores, y, plan);
      const wts = slotWeights(slots, coef);
      const N = plan.kMax + 1;
      const rows = tf.reshape(embedRowsOf(plan.src, tf.reshape(slots.ids, [-1]) as tf.Tensor1D), [B, N, Hd]);
      const embeds = tf.reshape(tf.matMul(tf.reshape(wts.w, [B, 1, N]), rows), [B, Hd]) as tf.Tensor2D;
      sparse = { ...wts, slots, embeds };
    }
    if (anyAll) {
      const slots = vocabSlots(scores, y, plan);
      const wts = slotWeights(slots, coef);
      dense = { ...wts, slots, embeds: mixAllRows(plan.src, wts.w, V) };
    }

    // Pick per row: the dense result for rows that mix the whole vocabulary.
    const rowIsAll =
      anyAll && !allAll
        ? tf.tensor1d(
            plan.isAll.map((x) => (x ? 1 : 0)),
            'bool',
          )
        : null;
    const pick = <T extends tf.Tensor>(f: (p: Part) => T): T => {
      if (!sparse) return f(dense!);
      if (!dense) return f(sparse);
      const d = f(dense);
      const cond = d.rank === 2 ? tf.reshape(rowIsAll!, [B, 1]) : rowIsAll!;
      return tf.where(cond, d, f(sparse)) as T;
    };
    const out: Record<string, tf.Tensor> = {
      embeds: pick((p) => p.embeds),
      entropy: pick((p) => p.entropy),
      weightOnSampled: pick((p) => p.weightOnSampled),
      numCandidates: pick((p) => p.numCandidates),
    };
    if (!opts.returnWeights) return out;

    if (!dense || !sparse) {
      const only = (dense ?? sparse)!;
      return { ...out, candidateIds: only.slots.ids, weights: only.w, candidateMask: only.slots.valid };
    }
    // Mixed batch: spread the top-K rows' slots over the vocabulary (duplicate slots carry 0).
    const N = plan.kMax + 1;
    const rowIds = tf.tile(tf.reshape(tf.range(0, B, 1, 'int32'), [B, 1]), [1, N]);
    const at = tf.stack([tf.reshape(rowIds, [-1]), tf.reshape(sparse.slots.ids, [-1])], 1);
    const wSparse = tf.scatterND(at, tf.reshape(sparse.w, [-1]), [B, V]);
    const mSparse = tf.scatterND(at, tf.reshape(tf.cast(sparse.slots.valid, 'float32'), [-1]), [B, V]);
    const cond = tf.reshape(rowIsAll!, [B, 1]);
    // (select on float: the wasm backend's Select kernel fails on bool branches)
    const mask = tf.where(cond, tf.cast(dense.slots.valid, 'float32'), mSparse);
    return {
      ...out,
      candidateIds: dense.slots.ids,
      weights: tf.where(cond, dense.w, wSparse),
      candidateMask: tf.greater(mask, 0),
    };
  });
  return result as unknown as MixResult | MixDebugResult;
}
