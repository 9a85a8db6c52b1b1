/**
 * Teacher-forced checks of the free-running mixing modes (direct, Soft Thinking) on a backend,
 * against a reference run (reference.json's HF trajectory, or another backend's run).
 *
 * Why: without the anchor MoI puts on the sampled token, a mixed input carries every rounding of
 * the step before it, and float32 rounding grows about 4× per step; two correct float32 engines
 * (wasm and cpu; a GPU and wasm) part after a few steps. So "equals another engine's free run" is
 * not a promise a backend can keep. Here every step gets the SAME inputs on every backend: the
 * reference's token and logits, which the backend's own mixer turns into the next input (no
 * feedback of the backend's own rounding). At each step s:
 *   - logits: the backend's logits L' against the reference's L: max|L' − L| ≤ tol · max(1, max|L|)
 *     (the conformance suite's tolerance, 1e-4 by default);
 *   - candidates: the backend's mixer on its own L' (and the reference token) against the
 *     definition in float64 on L: equal sets wherever the reference has no near-tie at the set's
 *     boundary, i.e. the gap between its last candidate's logit and the next is more than 2ε,
 *     ε = max|L' − L| measured at that step (each logit moved by ≤ ε, so no order can flip);
 *   - weights (where the sets are compared): |w' − w| ≤ w·(e^{2ε/T} − 1 + 2^-14) + 2^-30 per
 *     candidate. Derivation: w_i = exp(l_i/T) / Σ_C exp(l_j/T), so a shift of every logit by at
 *     most ε moves log w_i by at most 2ε/T (T = 1 for direct); 2^-14 (6e-5) covers float32 softmax
 *     rounding, (|l_i − max| + |C| + 3) ulps ≤ ~500 ulps (WGSL allows exp an error of 3 + 2|x|
 *     ulps), and 2^-30 absolute covers a weight a GPU flushed from a subnormal to 0.
 * The definitions (moi_definition in the fixtures' reference.json; Soft Thinking with its filters
 * off): direct: C = top-K of L ∪ {y}, w = softmax over C; soft: C = the K largest of L, w =
 * softmax(L/T) over C, the recorded token is C's first (think-end ends the phase: then one-hot).
 */
import * as tf from '@tensorflow/tfjs-core';
import { UsageError } from '@moi/core';
import type { Decoder } from '@moi/models';
import {
  mixInputs,
  resolveMixSettings,
  SOFT_EXTRA_COLUMNS,
  softMix,
  softObserve,
  startSoftRow,
  type MixRowState,
  type MixSettings,
} from '@moi/moi';

/** One step of a reference run: the logits the step chose from, and the token it recorded. */
export interface RefStep {
  logits: ArrayLike<number>;
  token: number;
}

export interface RefRun {
  prompt: number[];
  steps: RefStep[];
}

export interface TeacherForcedOptions {
  /** logits tolerance, relative to max(1, max|L|) (default 1e-4, the conformance suite's) */
  logitTol?: number;
}

export interface TeacherForcedReport {
  mode: 'direct' | 'soft';
  steps: number;
  /** worst max|L' − L| / max(1, max|L|) over the steps */
  worstLogitRel: number;
  /** steps whose candidate set was compared, and steps skipped for a near-tie at its boundary */
  setsCompared: number;
  nearTies: number;
  /** worst |w' − w| / tolerance over the compared weights (≤ 1 passes) */
  worstWeightRatio: number;
  /** what failed, one line each (empty: passed) */
  failures: string[];
}

/** Rounding allowance of a float32 softmax weight, relative (see the file comment). */
export const WEIGHT_ROUNDING = 2 ** -14;
/** Absolute allowance: a weight a GPU flushed to 0. */
export const WEIGHT_FLOOR = 2 ** -30;

// ---------------------------------------------------------------------------------------------
// settings

/** Direct mode with the reference's K (20), raw prior. */
export function directSettings(topK = 20): MixSettings {
  return resolveMixSettings({ mode: 'direct', topK }, {});
}

/**
 * Soft Thinking with its filters off (top-k, top-p, min-p, noise, cold stop), so the candidates
 * are the `maxTopk` largest logits: at temperature T, think-end `thinkEndId`, greedy after it.
 */
export function softSettings(vocabSize: number, thinkEndId: number, temperature = 0.6, maxTopk = 10): MixSettings {
  return resolveMixSettings(
    {
      mode: 'soft',
      topK: maxTopk,
      soft: {
        temperature,
        topK: 0,
        topP: 1,
        minP: 0,
        thinkEndId,
        coldStopEntropy: 0,
        noise: 'none',
        afterThinking: { temperature: 0 },
      },
    },
    {},
    vocabSize,
  );
}

function checkSettings(s: MixSettings): 'direct' | 'soft' {
  if (s.mode === 'direct' && s.prior === 'raw' && typeof s.topK === 'number') return 'direct';
  const f = s.soft?.thinking;
  if (
    s.mode === 'soft' &&
    s.soft &&
    f &&
    f.temperature > 0 &&
    f.topK === 0 &&
    f.topP === 1 &&
    f.minP === 0 &&
    s.soft.noise === 'none' &&
    s.soft.coldStopEntropy === 0 &&
    s.soft.afterThinking.temperature === 0 &&
    typeof s.topK === 'number'
  )
    return 'soft';
  throw new UsageError(
    'E_MOI',
    `teacher-forced checks take direct mode (raw prior, a top-K) or Soft Thinking with its filters, noise and cold stop off ` +
      `and greedy after thinking (softSettings); got ${JSON.stringify({ mode: s.mode, topK: s.topK, prior: s.prior, soft: s.soft })}`,
  );
}

// ---------------------------------------------------------------------------------------------
// the definition, in float64

/** Ids by descending value, ties to the lower id (tf.topk's order). */
function ranked(logits: ArrayLike<number>): number[] {
  return Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

interface Expected {
  /** candidate id → weight */
  w: Map<number, number>;
  /** logit gap at the set's boundary (Infinity where the set has no boundary: one-hot) */
  gap: number;
  /** the recorded token, and the gap that decides it (soft; direct records the given y) */
  token: number;
  tokenGap: number;
  /** 1 for direct, T for soft: weights are softmax(L / T) */
  temperature: number;
}

function softmaxOver(ids: number[], logits: ArrayLike<number>, T: number): Map<number, number> {
  const m = Math.max(...ids.map((i) => logits[i]));
  const e = ids.map((i) => Math.exp((logits[i] - m) / T));
  const z = e.reduce((a, b) => a + b, 0);
  return new Map(ids.map((i, k) => [i, e[k] / z]));
}

function expected(
  mode: 'direct' | 'soft',
  s: MixSettings,
  logits: ArrayLike<number>,
  y: number,
  thinking: boolean,
): Expected {
  const order = ranked(logits);
  const K = Math.min(s.topK as number, logits.length);
  const gapAt = (k: number) => (k < order.length ? logits[order[k - 1]] - logits[order[k]] : Infinity);
  if (mode === 'direct') {
    const ids = order.slice(0, K);
    if (!ids.includes(y)) ids.push(y);
    return { w: softmaxOver(ids, logits, 1), gap: gapAt(K), token: y, tokenGap: Infinity, temperature: 1 };
  }
  if (!thinking) return { w: new Map([[y, 1]]), gap: Infinity, token: y, tokenGap: Infinity, temperature: 1 };
  const T = s.soft!.thinking.temperature;
  const token = order[0];
  if (token === s.soft!.thinkEndId)
    return { w: new Map([[token, 1]]), gap: Infinity, token, tokenGap: gapAt(1), temperature: T };
  return { w: softmaxOver(order.slice(0, K), logits, T), gap: gapAt(K), token, tokenGap: gapAt(1), temperature: T };
}

// ---------------------------------------------------------------------------------------------
// the mixer on the backend

interface Mixed {
  /** [1, H] the next input (when asked for) */
  embeds: tf.Tensor2D | null;
  /** candidate id → weight (every candidate slot, zero weights included) */
  w: Map<number, number>;
  token: number;
  extra: Float32Array | null;
}

/**
 * The backend's mixer on one row: logits [1, V], token y, the row's state (soft). `next`: also
 * the next input, made by the decode path's own mixer (direct: the lean path; returnWeights takes
 * the general one). One read: the slots' ids, weights (and token, extra columns) packed together.
 */
async function mixRow(
  model: Decoder,
  mode: 'direct' | 'soft',
  s: MixSettings,
  logits: tf.Tensor2D,
  y: number,
  state: MixRowState | undefined,
  next: boolean,
): Promise<Mixed> {
  const embed = model.embedSource();
  if (mode === 'direct') {
    const [packed, embeds = null] = tf.tidy((): tf.Tensor2D[] => {
      const sampled = tf.tensor1d([y], 'int32');
      const r = mixInputs({ logits, sampled, embed, settings: [s] }, { returnWeights: true });
      const packed: tf.Tensor2D = tf.concat(
        [tf.cast(r.candidateIds, 'float32'), r.weights, tf.cast(r.candidateMask, 'float32')],
        1,
      );
      return next ? [packed, mixInputs({ logits, sampled, embed, settings: [s] }).embeds] : [packed];
    });
    const v = (await packed.data()) as Float32Array;
    packed.dispose();
    const N = v.length / 3;
    const w = new Map<number, number>();
    for (let i = 0; i < N; i++) if (v[2 * N + i] > 0) w.set(v[i], v[N + i]);
    return { embeds, w, token: y, extra: null };
  }
  const [packed, embeds = null] = tf.tidy((): tf.Tensor2D[] => {
    const r = softMix(
      { logits, sampled: tf.tensor1d([y], 'int32'), embed, settings: [s], rowStates: [state] },
      { returnWeights: true },
    );
    const packed = tf.concat(
      [
        tf.cast(r.candidateIds, 'float32'),
        r.weights,
        tf.cast(tf.reshape(r.tokens!, [1, 1]), 'float32'),
        r.extra! as tf.Tensor2D,
      ],
      1,
    ) as tf.Tensor2D;
    return next ? [packed, r.embeds] : [packed];
  });
  const v = (await packed.data()) as Float32Array;
  packed.dispose();
  const N = (v.length - 1 - SOFT_EXTRA_COLUMNS) / 2; // slots: the candidates, then the one-hot slot
  const w = new Map<number, number>();
  if (v[2 * N - 1] > 0)
    w.set(v[N - 1], v[2 * N - 1]); // one-hot: think-end, or after thinking
  else for (let i = 0; i < N - 1; i++) w.set(v[i], v[N + i]);
  return { embeds, w, token: v[2 * N], extra: v.slice(2 * N + 1) };
}

function startState(mode: 'direct' | 'soft', s: MixSettings): MixRowState | undefined {
  return mode === 'soft'
    ? startSoftRow(s, {
        makeRng: () => {
          throw new Error('no noise');
        },
      })
    : undefined;
}

function thinkingOf(state: MixRowState | undefined): boolean {
  return (state as { phase?: string } | undefined)?.phase === 'thinking';
}

async function lastLogits(t: tf.Tensor3D): Promise<{ tensor: tf.Tensor2D; values: Float32Array }> {
  const tensor = tf.reshape(t, [1, -1]) as tf.Tensor2D;
  t.dispose();
  return { tensor, values: (await tensor.data()) as Float32Array };
}

// ---------------------------------------------------------------------------------------------
// runs

/**
 * A free-running reference run on the current backend: prefill, then n steps of greedy sampling,
 * the mixer's next input, forward. Records each step's logits and token.
 */
export async function recordRun(model: Decoder, prompt: number[], n: number, settings: MixSettings): Promise<RefRun> {
  const mode = checkSettings(settings);
  const cache = model.makeCache(1, prompt.length + n);
  const state = startState(mode, settings);
  const steps: RefStep[] = [];
  try {
    let L = await lastLogits(model.forward({ ids: [prompt] }, { cache, lastOnly: true }));
    for (let s = 0; s < n; s++) {
      const y = argmax(L.values);
      const last = s + 1 === n;
      const m = await mixRow(model, mode, settings, L.tensor, y, state, !last);
      L.tensor.dispose();
      steps.push({ logits: L.values, token: m.token });
      if (m.extra) softObserve(settings, state, m.extra, s);
      if (last) break;
      const e = tf.reshape(m.embeds!, [1, 1, -1]) as tf.Tensor3D;
      m.embeds!.dispose();
      L = await lastLogits(model.forward({ embeds: e }, { cache, lastOnly: true }));
      e.dispose();
    }
    return { prompt, steps };
  } finally {
    for (const c of cache) c.dispose();
  }
}

/**
 * The backend (current, holding `model`) teacher-forced along `ref`: see the file comment.
 * Failures are collected, not thrown, so a report can say everything that failed.
 */
export async function teacherForced(
  model: Decoder,
  ref: RefRun,
  settings: MixSettings,
  opts: TeacherForcedOptions = {},
): Promise<TeacherForcedReport> {
  const mode = checkSettings(settings);
  const tol = opts.logitTol ?? 1e-4;
  const n = ref.steps.length;
  const report: TeacherForcedReport = {
    mode,
    steps: n,
    worstLogitRel: 0,
    setsCompared: 0,
    nearTies: 0,
    worstWeightRatio: 0,
    failures: [],
  };
  const fail = (msg: string) => {
    if (report.failures.length < 8) report.failures.push(msg);
  };
  const cache = model.makeCache(1, ref.prompt.length + n);
  const state = startState(mode, settings);
  try {
    let L = await lastLogits(model.forward({ ids: [ref.prompt] }, { cache, lastOnly: true }));
    for (let s = 0; s < n; s++) {
      const { logits: refL, token: y } = ref.steps[s];
      if (refL.length !== L.values.length)
        throw new UsageError(
          'E_SHAPE',
          `teacher-forced: reference step ${s} has ${refL.length} logits, the model ${L.values.length}`,
        );
      // logits
      let eps = 0;
      let scale = 1;
      for (let v = 0; v < refL.length; v++) {
        const d = Math.abs(L.values[v] - refL[v]);
        eps = Number.isNaN(d) ? Infinity : Math.max(eps, d);
        scale = Math.max(scale, Math.abs(refL[v]));
      }
      report.worstLogitRel = Math.max(report.worstLogitRel, eps / scale);
      if (!(eps <= tol * scale))
        fail(`step ${s}: logits max |diff| ${eps.toExponential(2)} > ${tol} × ${scale.toFixed(2)}`);

      // the backend's mixer on its own logits (the reference's token and phase) vs the definition on the reference's
      const want = expected(mode, settings, refL, y, thinkingOf(state));
      const own = await mixRow(model, mode, settings, L.tensor, y, state && { ...state }, false);
      L.tensor.dispose();
      const tokenComparable = want.tokenGap > 2 * eps;
      if (tokenComparable && own.token !== want.token)
        fail(
          `step ${s}: recorded token ${own.token}, the reference's ${want.token} (gap ${want.tokenGap.toExponential(2)})`,
        );
      if (want.gap > 2 * eps && (tokenComparable || own.token === want.token)) {
        report.setsCompared++;
        const got = [...own.w.keys()].sort((a, b) => a - b);
        const exp = [...want.w.keys()].sort((a, b) => a - b);
        if (got.join() !== exp.join()) {
          fail(
            `step ${s}: candidates {${got.join(',')}} ≠ the reference's {${exp.join(',')}} (boundary gap ${want.gap.toExponential(2)} > 2ε = ${(2 * eps).toExponential(2)})`,
          );
        } else {
          for (const [id, w] of want.w) {
            const bound = w * (Math.expm1((2 * eps) / want.temperature) + WEIGHT_ROUNDING) + WEIGHT_FLOOR;
            const ratio = Math.abs(own.w.get(id)! - w) / bound;
            report.worstWeightRatio = Math.max(report.worstWeightRatio, Number.isNaN(ratio) ? Infinity : ratio);
            if (!(ratio <= 1))
              fail(`step ${s}: weight of ${id} ${own.w.get(id)} vs ${w} (tolerance ${bound.toExponential(2)})`);
          }
        }
      } else {
        report.nearTies++;
      }

      // the next input: the backend's mixer on the reference's logits and token
      if (s + 1 === n) break;
      const refT = tf.tensor2d(Float32Array.from(refL), [1, refL.length]);
      const next = await mixRow(model, mode, settings, refT, y, state, true);
      refT.dispose();
      if (next.extra) softObserve(settings, state, next.extra, s);
      const e = tf.reshape(next.embeds!, [1, 1, -1]) as tf.Tensor3D;
      next.embeds!.dispose();
      L = await lastLogits(model.forward({ embeds: e }, { cache, lastOnly: true }));
      e.dispose();
    }
    return report;
  } finally {
    for (const c of cache) c.dispose();
  }
}

/** How many leading tokens two trajectories share (for the free-running report). */
export function agreeing(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}
