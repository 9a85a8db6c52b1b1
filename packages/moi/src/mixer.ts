/**
 * Pluggable input mixers: a training-free rule that turns a decode step's logits and sampled
 * ids into the next input embeddings. MoI and Soft Thinking implement the same interface, and the
 * decode loop stays unaware of which one runs.
 *
 * A decode step calls, per batch of live rows:
 *   1. `startRow` once per row when it starts (per-row state, e.g. Soft Thinking's phase);
 *   2. `mix` inside the step's tidy, after the sampler: the next inputs, and optionally the token
 *      each row records (replacing the sampler's choice) and extra per-row values for the read;
 *   3. `observe` per row after the step's single device→host read, with that row's extra values.
 */
import * as tf from '@tensorflow/tfjs-core';
import { mixInputs } from './mix.ts';
import type { MixSettings } from './settings.ts';
import { softMix, softObserve, startSoftRow } from './soft.ts';
import type { MixInputsArgs, MixResult, MixRowInit, MixRowReport, MixRowState, MixSlots } from './types.ts';

export interface InputMixer {
  /** short stable name, for logs and traces */
  readonly name: string;
  /** state for a row that starts now; undefined when the row needs none */
  startRow?(settings: MixSettings, init: MixRowInit): MixRowState | undefined;
  /** the next inputs of a batch; on device, no host reads, no leaked tensors */
  mix(args: MixInputsArgs): MixResult;
  /**
   * After the step's read: update the row's state from its `MixResult.extra` row (the `extra`
   * columns the loop packed beside its own), and say what to report for this step.
   */
  observe?(
    settings: MixSettings,
    state: MixRowState | undefined,
    extra: ArrayLike<number>,
    step: number,
  ): MixRowReport | undefined;
}

/** Mixture of Inputs (arXiv 2505.14827), with per-row mode 'standard' | 'moi' | 'direct'. */
export const moiMixer: InputMixer = {
  name: 'moi',
  mix: (args) => mixInputs(args),
};

/** Soft Thinking (arXiv 2505.15778): every row in mode 'soft'. */
export const softMixer: InputMixer = {
  name: 'soft',
  startRow: (settings, init) => startSoftRow(settings, init),
  mix: (args) => softMix(args),
  observe: (settings, state, extra, step) => softObserve(settings, state, extra, step),
};

/** Rows [idx] of a tensor (the tensor itself when idx is every row in order). */
function rowsOf<T extends tf.Tensor>(t: T, idx: number[], B: number): T {
  if (idx.length === B && idx.every((v, i) => v === i)) return t;
  return tf.gather(t, tf.tensor1d(idx, 'int32')) as T;
}

/**
 * Every mode in one batch: soft rows go to Soft Thinking, the others to MoI (standard / moi /
 * direct), each on its own rows; the results are put back in row order. Rows MoI serves record
 * the sampler's token and carry zeros in the extra columns.
 */
export const defaultMixer: InputMixer = {
  name: 'default',
  startRow: (settings, init) => (settings.mode === 'soft' ? startSoftRow(settings, init) : undefined),
  observe: (settings, state, extra, step) =>
    settings.mode === 'soft' ? softObserve(settings, state, extra, step) : undefined,
  mix(args) {
    const B = args.settings.length;
    const soft: number[] = [];
    const other: number[] = [];
    args.settings.forEach((s, r) => (s.mode === 'soft' ? soft : other).push(r));
    if (soft.length === 0) return mixInputs(args);
    if (other.length === 0) return softMix(args);
    return tf.tidy((): tf.TensorContainer => {
      const part = (idx: number[]): MixInputsArgs => ({
        ...args,
        logits: rowsOf(args.logits, idx, B),
        processedLogits: args.processedLogits ? rowsOf(args.processedLogits, idx, B) : undefined,
        sampled: rowsOf(args.sampled, idx, B),
        settings: idx.map((r) => args.settings[r]),
        rowStates: args.rowStates ? idx.map((r) => args.rowStates![r]) : undefined,
      });
      const s = softMix(part(soft));
      const m = mixInputs(part(other));
      const mSampled = rowsOf(args.sampled, other, B);
      const width = s.extra!.shape[1];
      // rows in order soft ++ other; put back with the inverse permutation
      const order = [...soft, ...other];
      const inverse = new Int32Array(B);
      order.forEach((r, k) => {
        inverse[r] = k;
      });
      const inv = tf.tensor1d(inverse, 'int32');
      const back = <T extends tf.Tensor>(a: tf.Tensor, b: tf.Tensor): T => tf.gather(tf.concat([a, b], 0), inv) as T;
      return {
        embeds: back<tf.Tensor2D>(s.embeds, m.embeds),
        entropy: back<tf.Tensor1D>(s.entropy, m.entropy),
        weightOnSampled: back<tf.Tensor1D>(s.weightOnSampled, m.weightOnSampled),
        numCandidates: back<tf.Tensor1D>(s.numCandidates, m.numCandidates),
        tokens: back<tf.Tensor1D>(s.tokens!, tf.cast(mSampled, 'int32')),
        extra: back<tf.Tensor2D>(s.extra!, tf.zeros([other.length, width])),
        ...(s.slots ? { slots: padSlots(s.slots, other.length, back) as unknown as tf.TensorContainer } : {}),
      };
    }) as unknown as MixResult;
  },
};

/** Soft rows' slots followed by `n` empty rows (id −1, weight 0), put back in row order. */
function padSlots(s: MixSlots, n: number, back: <T extends tf.Tensor>(a: tf.Tensor, b: tf.Tensor) => T): MixSlots {
  const N = s.ids.shape[1];
  return {
    ids: back<tf.Tensor2D>(s.ids, tf.fill([n, N], -1, 'int32')),
    weights: back<tf.Tensor2D>(s.weights, tf.zeros([n, N])),
    prior: back<tf.Tensor2D>(s.prior, tf.zeros([n, N])),
  };
}

/** [B] log-softmax of the raw logits at ids [B] (the logprob of a token the mixer recorded). */
export function logprobAt(logits: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => {
    const [B, V] = logits.shape;
    const flat = tf.add(tf.cast(ids, 'int32'), tf.range(0, B * V, V, 'int32'));
    return tf.gather(tf.reshape(tf.logSoftmax(logits), [B * V]), flat) as tf.Tensor1D;
  });
}
