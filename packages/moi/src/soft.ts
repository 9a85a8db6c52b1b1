/**
 * Soft Thinking (arXiv 2505.15778), as its reference (eric-ai-lab/Soft-Thinking, SGLang 0.4.6)
 * computes it. At step t, a row in the soft phase:
 *   1. p = softmax(logits / T) over the whole vocabulary (T = 0: T = 1 with top-k 1, as the reference);
 *   2. S = −Σ p_i ln max(p_i, 1e-12), in nats, over that full distribution, before any filter;
 *   3. filters, each followed by a renormalization: top-k; top-p (the smallest descending prefix
 *      whose mass reaches top_p); min-p (drop p_i < min_p · max p, the max after top-p);
 *   [Dirichlet noise: p ← normalize(Gamma(α·p_i, 1)), over what the filters kept]
 *   4. keep the max_topk largest, renormalize → weights w (fewer may remain);
 *   [Gumbel-softmax noise: w ← softmax((ln w + G) / τ) over those candidates]
 *   5. the recorded token is the candidate of largest weight;
 *   6. the next input is h = Σ w_i E[i] over raw embedding rows (model scaling after, as for MoI);
 *   7. cold stop (threshold > 0): count consecutive steps with S < threshold (step 0 counts; reset
 *      otherwise); when the count reaches cold_stop_steps, the recorded token becomes think-end;
 *   8. a recorded think-end ends the soft phase: the next input is E[think-end] (one-hot).
 * After thinking the row records the sampler's token (the engine samples it with the
 * after-thinking settings) and its next input is E[token].
 *
 * Everything of a step is on the device (no host reads); the host only uploads the per-row
 * constants and, with noise on, the row's uniform draws from its own seeded generator. The
 * cold-stop count lives on the host (row state) and is updated from the step's read (observe).
 */
import * as tf from '@tensorflow/tfjs-core';
import { MIN_P_SLACK, TOP_P_SLACK, UsageError } from '@moi/core';
import { embedRowsOf, embedSourceOf, embedWidth, type EmbedSource } from './embed-source.ts';
import type { ThinkEndReason } from './soft-report.ts';
import type { MixInputsArgs, MixResult, MixRowInit, MixRowReport, MixRowState, NoiseRng } from './types.ts';
import type { MixSettings } from './settings.ts';
import type { SoftSettings } from './soft-settings.ts';

/** Marsaglia–Tsang attempts per Gamma draw (acceptance ≥ 0.95 each: all fail with p < 4e-11). */
export const GAMMA_ATTEMPTS = 8;
/** uniforms per Dirichlet slot: GAMMA_ATTEMPTS normals (Box–Muller pairs), as many accept tests, one boost */
const GAMMA_UNIFORMS = 2 * GAMMA_ATTEMPTS + 1;
/** columns of MixResult.extra: S, S below the cold-stop threshold (0/1), end reason (0 none, 1 argmax, 2 cold stop) */
export const SOFT_EXTRA_COLUMNS = 3;

export interface SoftRowState extends MixRowState {
  readonly kind: 'soft';
  phase: 'thinking' | 'answer';
  /** consecutive soft steps so far with S below the cold-stop threshold */
  lowCount: number;
  /** the noise's generator (null without noise) */
  rng: NoiseRng | null;
  /** the step whose recorded token was think-end, and why */
  endedAt: number | null;
  endReason: ThinkEndReason | null;
}

function softError(message: string): UsageError {
  return new UsageError('E_MOI', `softMix: ${message}`);
}

export function startSoftRow(settings: MixSettings, init: MixRowInit): SoftRowState {
  const soft = settings.soft;
  if (settings.mode !== 'soft' || !soft)
    throw softError(`startSoftRow needs mode 'soft' settings, got mode '${settings.mode}'`);
  return {
    kind: 'soft',
    phase: 'thinking',
    lowCount: 0,
    rng: soft.noise === 'none' ? null : init.makeRng(),
    endedAt: null,
    endReason: null,
  };
}

function isSoftState(s: MixRowState | undefined): s is SoftRowState {
  return s !== undefined && s.kind === 'soft';
}

/** Whether a row is in Soft Thinking's soft phase (its next step mixes inputs). */
export function inSoftPhase(state: MixRowState | undefined): boolean {
  return isSoftState(state) && state.phase === 'thinking';
}

/** After the step's read: advance the cold-stop count and the phase from the row's extra values. */
export function softObserve(
  settings: MixSettings,
  state: MixRowState | undefined,
  extra: ArrayLike<number>,
  step: number,
): MixRowReport | undefined {
  if (!isSoftState(state)) return undefined;
  if (state.phase === 'answer') return { soft: { phase: 'answer', entropy: null, thinkEnd: null } };
  const [S, low, reason] = [extra[0], extra[1], extra[2]];
  let thinkEnd: ThinkEndReason | null = null;
  if (reason > 0) {
    thinkEnd = reason === 2 ? 'cold_stop' : 'argmax';
    state.phase = 'answer';
    state.endedAt = step;
    state.endReason = thinkEnd;
    state.lowCount = 0;
  } else {
    state.lowCount = low > 0 ? state.lowCount + 1 : 0;
  }
  return { soft: { phase: 'thinking', entropy: S, thinkEnd } };
}

/** u in (0, 1) on a 2^-24 grid (exact in float32, never 0 or 1). */
function uniformOpen(rng: NoiseRng): number {
  return ((rng.nextUint32() >>> 8) + 0.5) / 16777216;
}

/** n standard Gumbel draws −ln(−ln u), in float64. */
export function gumbelDraws(rng: NoiseRng, n: number): Float64Array {
  const g = new Float64Array(n);
  for (let i = 0; i < n; i++) g[i] = -Math.log(-Math.log(uniformOpen(rng)));
  return g;
}

/** With `returnWeights`: the slots of the next input, for tests and traces. */
export interface SoftDebugResult extends MixResult {
  /** int32 [B, N]: candidate ids, then the one-hot slot (think-end or the sampled token) */
  candidateIds: tf.Tensor2D;
  /** [B, N] the weight of each slot in the next input (0 where unused) */
  weights: tf.Tensor2D;
}

interface RowPlan {
  thinking: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  maxTopk: number;
  thinkEnd: number;
  coldStop: number;
  lowCount: number;
  coldSteps: number;
  gumbel: boolean;
  dirichlet: boolean;
  tau: number;
  alpha: number;
}

function planRows(args: MixInputsArgs): { rows: RowPlan[]; src: EmbedSource } {
  const { logits, sampled, settings } = args;
  if (logits.rank !== 2) throw softError(`logits must be [B, V], got shape [${logits.shape}]`);
  const [B, V] = logits.shape;
  if (sampled.rank !== 1 || sampled.shape[0] !== B)
    throw softError(`sampled must be [${B}], got shape [${sampled.shape}]`);
  const src = embedSourceOf(args, V, 'softMix');
  if (settings.length !== B) throw softError(`settings must have one entry per row (${B}), got ${settings.length}`);
  if (!args.rowStates || args.rowStates.length !== B)
    throw softError(`rowStates must have one entry per row (${B}) (made by startRow)`);
  const rows = settings.map((s, r): RowPlan => {
    const soft: SoftSettings | undefined = s.soft;
    if (s.mode !== 'soft' || !soft) throw softError(`settings[${r}]: mode '${s.mode}' is not 'soft'`);
    const state = args.rowStates![r];
    if (!isSoftState(state)) throw softError(`rowStates[${r}] is not a Soft Thinking row state`);
    if (soft.thinkEndId === null) throw softError(`settings[${r}]: the think-end id is not resolved (resolveThinkEnd)`);
    if (soft.thinkEndId >= V)
      throw softError(`settings[${r}]: think-end id ${soft.thinkEndId} is outside the vocabulary (${V})`);
    const f = soft.thinking;
    const greedy = f.temperature === 0;
    const topK = greedy ? 1 : f.topK > 0 && f.topK < V ? f.topK : 0;
    return {
      thinking: state.phase === 'thinking',
      temperature: greedy ? 1 : f.temperature,
      topK,
      topP: f.topP,
      minP: f.minP,
      maxTopk: s.topK === 'all' ? V : Math.min(s.topK, V),
      thinkEnd: soft.thinkEndId,
      coldStop: soft.coldStopEntropy,
      lowCount: state.lowCount,
      coldSteps: soft.coldStopSteps,
      gumbel: soft.noise === 'gumbel',
      dirichlet: soft.noise === 'dirichlet',
      tau: soft.gumbelTau,
      alpha: soft.dirichletAlpha,
    };
  });
  return { rows, src };
}

const col = (rows: RowPlan[], f: (p: RowPlan) => number, dtype: 'float32' | 'int32' = 'float32') =>
  tf.tensor2d(rows.map(f), [rows.length, 1], dtype);

/**
 * log Gamma(a, 1) draws [B, M] for shapes a [B, M] (a > 0 where `valid`), from uniforms
 * u [B, M, GAMMA_UNIFORMS]: Marsaglia–Tsang on a + 1 (the first accepted of GAMMA_ATTEMPTS), then
 * Gamma(a) = Gamma(a + 1) · U^(1/a), in log space so that tiny shapes cannot underflow to 0/0.
 */
export function logGamma(a: tf.Tensor2D, valid: tf.Tensor2D, u: tf.Tensor3D): tf.Tensor2D {
  const R = GAMMA_ATTEMPTS;
  const [B, M] = a.shape;
  const aSafe = tf.where(valid, a, tf.onesLike(a));
  const d = tf.expandDims(tf.add(aSafe, 2 / 3), 2); // (a + 1) − 1/3
  const c = tf.div(1, tf.sqrt(tf.mul(d, 9)));
  const d2 = tf.reshape(d, [B, M]);
  const c2 = tf.reshape(c, [B, M]);
  const uAt = (k: number) => tf.reshape(tf.slice(u, [0, 0, k], [B, M, 1]), [B, M]);
  // R standard normals by Box–Muller pairs (uniforms 0..R−1), accept tests (R..2R−1), boost (2R).
  const normals: tf.Tensor[] = [];
  for (let k = 0; k < R / 2; k++) {
    const radius = tf.sqrt(tf.mul(-2, tf.log(uAt(k))));
    const angle = tf.mul(2 * Math.PI, uAt(R / 2 + k));
    normals.push(tf.mul(radius, tf.cos(angle)), tf.mul(radius, tf.sin(angle)));
  }
  // the first accepted attempt wins: walk them backwards
  let vSel: tf.Tensor = tf.onesLike(d2);
  for (let i = R - 1; i >= 0; i--) {
    const n = normals[i];
    const base = tf.add(1, tf.mul(c2, n));
    const v = tf.mul(tf.mul(base, base), base); // (pow would be NaN for a negative base on some backends)
    // 1e-30 is a normal float32 (GPU-safe); only rejected attempts (v ≤ 0) meet the clamp
    const lnv = tf.log(tf.maximum(v, 1e-30));
    const bound = tf.add(tf.mul(0.5, tf.square(n)), tf.add(tf.sub(d2, tf.mul(d2, v)), tf.mul(d2, lnv)));
    const accept = tf.logicalAnd(tf.greater(v, 0), tf.less(tf.log(uAt(R + i)), bound));
    vSel = tf.where(accept, v, vSel);
  }
  const ub = uAt(2 * R);
  const logG1 = tf.log(tf.mul(d2, vSel)); // log Gamma(a + 1) (d·1 if every attempt failed, p < 4e-11)
  // ln U / a: U ≥ 2^-25 (uniformOpen), so ln U is finite; a tiny a gives a very negative (or −∞)
  // log weight, i.e. weight 0, never NaN. A shape a below 2^-126 is 0 on a GPU and the slot is
  // dropped (valid requires a > 0): its weight is 0 either way, only numCandidates may differ.
  const logG = tf.add(logG1, tf.div(tf.log(ub), aSafe));
  return tf.where(valid, logG, tf.fill([B, M], -Infinity)) as tf.Tensor2D;
}

export function softMix(args: MixInputsArgs): MixResult;
export function softMix(args: MixInputsArgs, opts: { returnWeights: true }): SoftDebugResult;
export function softMix(args: MixInputsArgs, opts: { returnWeights?: boolean } = {}): MixResult | SoftDebugResult {
  const { rows: plan, src } = planRows(args);
  const [B, V] = args.logits.shape;
  const thinkingRows = plan.filter((p) => p.thinking);
  const anyThinking = thinkingRows.length > 0;
  // Sorted slots: enough for every thinking row's top-k (all of V when a row has top-k off).
  const M = !anyThinking
    ? 0
    : thinkingRows.some((p) => p.topK === 0)
      ? V
      : Math.max(...thinkingRows.map((p) => p.topK));
  const Kc = !anyThinking ? 0 : Math.min(M, Math.max(...thinkingRows.map((p) => p.maxTopk)));
  const anyDirichlet = thinkingRows.some((p) => p.dirichlet);
  const anyGumbel = thinkingRows.some((p) => p.gumbel);

  // Host draws first (they must not depend on the device). A row draws for its own slots only
  // (its top-k; its candidates), never for the batch's widths, so batched equals alone.
  let dirU: Float32Array | null = null;
  if (anyDirichlet) {
    dirU = new Float32Array(B * M * GAMMA_UNIFORMS);
    plan.forEach((p, r) => {
      if (!p.thinking || !p.dirichlet) return;
      const rng = (args.rowStates![r] as SoftRowState).rng!;
      const n = (p.topK === 0 ? V : p.topK) * GAMMA_UNIFORMS;
      for (let i = r * M * GAMMA_UNIFORMS; i < r * M * GAMMA_UNIFORMS + n; i++) dirU![i] = uniformOpen(rng);
    });
  }
  let gumbel: Float32Array | null = null;
  if (anyGumbel) {
    gumbel = new Float32Array(B * Kc);
    plan.forEach((p, r) => {
      if (!p.thinking || !p.gumbel) return;
      const n = Math.min(p.maxTopk, p.topK === 0 ? V : p.topK);
      gumbel!.set(gumbelDraws((args.rowStates![r] as SoftRowState).rng!, n), r * Kc);
    });
  }

  return tf.tidy(() => {
    const logits = args.logits.dtype === 'float32' ? args.logits : tf.cast(args.logits, 'float32');
    const y = args.sampled.dtype === 'int32' ? args.sampled : tf.cast(args.sampled, 'int32');
    const thinking = tf.cast(
      col(plan, (p) => (p.thinking ? 1 : 0)),
      'bool',
    ); // [B, 1]
    const thinkEnd = col(plan, (p) => p.thinkEnd, 'int32'); // [B, 1]
    const Hd = embedWidth(src);

    if (!anyThinking) {
      // After thinking: the sampler's token, one-hot.
      const embeds = embedRowsOf(src, y);
      const out: Record<string, tf.Tensor> = {
        embeds,
        entropy: tf.fill([B], NaN),
        weightOnSampled: tf.ones([B]),
        numCandidates: tf.ones([B], 'int32'),
        tokens: tf.clone(y),
        extra: tf.zeros([B, SOFT_EXTRA_COLUMNS]),
      };
      if (opts.returnWeights) {
        out.candidateIds = tf.reshape(y, [B, 1]);
        out.weights = tf.ones([B, 1]);
      }
      return out;
    }

    // 1–2. The full distribution at temperature, and its entropy S (nats).
    const x = tf.div(
      logits,
      col(plan, (p) => p.temperature),
    ); // [B, V]
    const logp = tf.logSoftmax(x);
    const p = tf.exp(logp);
    // the reference's own clamp; 1e-12 is a normal float32, so a GPU keeps it (a p flushed to 0
    // gives 0·log 1e-12 = 0, as the reference's p < 1e-12 terms are ~0)
    const S = tf.neg(tf.sum(tf.mul(p, tf.log(tf.maximum(p, 1e-12))), 1)); // [B]

    // 3. Filters over the sorted slots (descending; ties to the lower id), with the sampler's
    //    float32 slack at the top-p and min-p boundaries (@moi/core's sampling).
    const { values, indices } = tf.topk(x, M);
    const rank = tf.reshape(tf.range(0, M, 1, 'float32'), [1, M]);
    const neg = tf.fill([B, M], -Infinity);
    const kCol = col(plan, (p) => (p.topK === 0 ? M : p.topK));
    const keepK = tf.less(rank, kCol);
    const q1 = tf.softmax(tf.where(keepK, values, neg)); // renormalized after top-k
    const before = tf.cumsum(q1, 1, true); // mass strictly before each slot
    const pCol = col(plan, (p) => (p.topP >= 1 ? 2 : p.topP - TOP_P_SLACK));
    const keepP = tf.logicalOr(tf.less(before, pCol), tf.equal(rank, 0));
    // p_i / max p (the max survives every filter); an underflowed ratio (0 on a GPU) is below any
    // min-p a person sets (a min-p itself below 2^-126 would read as 0 there: it keeps everything)
    const ratio = tf.exp(tf.sub(values, tf.slice(values, [0, 0], [B, 1])));
    const keepMin = tf.greaterEqual(
      ratio,
      col(plan, (p) => p.minP * (1 - MIN_P_SLACK)),
    );
    const kept = tf.logicalAnd(tf.logicalAnd(keepK, keepP), keepMin);
    let score = tf.where(kept, values, neg) as tf.Tensor2D; // log-weights up to a per-row constant

    // Dirichlet noise over what the filters kept, for the rows that ask for it.
    if (anyDirichlet) {
      const q3 = tf.softmax(score);
      const alpha = col(plan, (p) => p.alpha);
      const a = tf.mul(q3, alpha);
      const valid = tf.logicalAnd(kept, tf.greater(a, 0));
      const lg = logGamma(a as tf.Tensor2D, valid as tf.Tensor2D, tf.tensor3d(dirU!, [B, M, GAMMA_UNIFORMS]));
      const isDir = tf.cast(
        col(plan, (p) => (p.dirichlet && p.thinking ? 1 : 0)),
        'bool',
      );
      score = tf.where(isDir, lg, score) as tf.Tensor2D;
    }

    // 4. The max_topk largest (a prefix of the slots unless Dirichlet reordered them).
    let candIds: tf.Tensor2D;
    let candScore: tf.Tensor2D;
    if (anyDirichlet) {
      const top = tf.topk(score, Kc);
      candScore = top.values as tf.Tensor2D;
      candIds = tf.reshape(
        tf.gather(
          tf.reshape(indices, [-1]),
          tf.reshape(tf.add(top.indices, tf.reshape(tf.range(0, B * M, M, 'int32'), [B, 1])), [-1]),
        ),
        [B, Kc],
      ) as tf.Tensor2D;
    } else {
      candScore = tf.slice(score, [0, 0], [B, Kc]);
      candIds = tf.slice(indices, [0, 0], [B, Kc]) as tf.Tensor2D;
    }
    const cRank = tf.reshape(tf.range(0, Kc, 1, 'float32'), [1, Kc]);
    const cValid = tf.logicalAnd(
      tf.less(
        cRank,
        col(plan, (p) => p.maxTopk),
      ),
      tf.greater(candScore, -Infinity),
    );
    const negK = tf.fill([B, Kc], -Infinity);
    // ln w (−Infinity off the candidates): in log space, so a tiny weight cannot underflow into
    // a log or a division; exp(ln w) below 2^-126 is 0 on a GPU, a weight that adds nothing anyway
    const logw = tf.logSoftmax(tf.where(cValid, candScore, negK));
    let w = tf.exp(logw);

    // Gumbel-softmax noise over the candidates.
    if (anyGumbel) {
      const G = tf.tensor2d(gumbel!, [B, Kc]);
      const noisy = tf.softmax(
        tf.where(
          cValid,
          tf.div(
            tf.add(logw, G),
            col(plan, (p) => p.tau),
          ),
          negK,
        ),
      );
      w = tf.where(
        tf.cast(
          col(plan, (p) => (p.gumbel && p.thinking ? 1 : 0)),
          'bool',
        ),
        noisy,
        w,
      );
    }

    // 5. The recorded token: the candidate of largest weight.
    const best = tf.argMax(w, 1); // [B]
    const flatBest = tf.add(best, tf.range(0, B * Kc, Kc, 'int32'));
    const recorded = tf.gather(tf.reshape(candIds, [-1]), flatBest); // [B]
    const wBest = tf.gather(tf.reshape(w, [-1]), flatBest);

    // 7. Cold stop, 8. think-end.
    const low = tf.logicalAnd(
      tf.greater(
        col(plan, (p) => p.coldStop),
        0,
      ),
      tf.less(
        tf.reshape(S, [B, 1]),
        col(plan, (p) => p.coldStop),
      ),
    );
    const fire = tf.logicalAnd(
      low,
      tf.greaterEqual(
        tf.add(
          col(plan, (p) => p.lowCount),
          1,
        ),
        col(plan, (p) => p.coldSteps),
      ),
    );
    const softToken = tf.where(fire, thinkEnd, tf.reshape(recorded, [B, 1])); // [B, 1]
    const ended = tf.logicalAnd(thinking, tf.equal(softToken, thinkEnd));
    const tokens = tf.reshape(tf.where(thinking, softToken, tf.reshape(y, [B, 1])), [B]) as tf.Tensor1D;
    const reason = tf.where(ended, tf.where(fire, tf.fill([B, 1], 2), tf.fill([B, 1], 1)), tf.zeros([B, 1]));

    // 6. The next input: Σ w E over the candidates, or one-hot (think-end, or after thinking the sampler's token).
    const soft = tf.logicalAnd(thinking, tf.logicalNot(ended)); // [B, 1]
    const oneHotId = tf.where(thinking, thinkEnd, tf.reshape(y, [B, 1]));
    const slotIds = tf.concat([candIds, oneHotId], 1); // [B, Kc + 1]
    const slotW = tf.concat([tf.where(soft, w, tf.zerosLike(w)), tf.cast(tf.logicalNot(soft), 'float32')], 1);
    const rows = tf.reshape(embedRowsOf(src, tf.reshape(slotIds, [-1]) as tf.Tensor1D), [B, Kc + 1, Hd]);
    const embeds = tf.reshape(tf.matMul(tf.reshape(slotW, [B, 1, Kc + 1]), rows), [B, Hd]);

    const softRow = tf.reshape(soft, [B]);
    const out: Record<string, tf.Tensor> = {
      embeds,
      entropy: tf.where(tf.reshape(thinking, [B]), S, tf.fill([B], NaN)),
      weightOnSampled: tf.where(softRow, wBest, tf.onesLike(wBest)),
      numCandidates: tf.where(softRow, tf.sum(tf.cast(cValid, 'int32'), 1), tf.ones([B], 'int32')),
      tokens: tf.cast(tokens, 'int32'),
      extra: tf.concat([tf.reshape(S, [B, 1]), tf.cast(low, 'float32'), reason], 1),
    };
    if (opts.returnWeights) {
      out.candidateIds = slotIds;
      out.weights = slotW;
    }
    if (!args.withSlots) return out;
    // the slots with their prior p (at the soft temperature), for traces
    const prior = tf.gather(tf.reshape(p, [-1]), tf.add(slotIds, tf.reshape(tf.range(0, B * V, V, 'int32'), [B, 1])));
    return { ...out, slots: { ids: slotIds, weights: slotW, prior } };
  }) as unknown as MixResult | SoftDebugResult;
}
