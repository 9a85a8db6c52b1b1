/**
 * The types every input mixer shares (MoI's mixInputs, Soft Thinking's softMix, the pluggable
 * InputMixer): what a step hands a mixer, what it returns, and the per-row state it may keep.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { EmbedSource } from './embed-source.ts';
import type { MixSettings } from './settings.ts';
import type { SoftStepReport } from './soft-report.ts';

export interface MixInputsArgs {
  /** [B, V] raw logits of this step */
  logits: tf.Tensor2D;
  /** [B, V] after temperature / top-k / top-p / min-p (filtered = −Infinity); for prior 'processed' */
  processedLogits?: tf.Tensor2D;
  /** int32 [B]: the ids the sampler chose (still on device) */
  sampled: tf.Tensor1D;
  /** where the raw embedding rows live (the model's own storage: Decoder.embedSource()) */
  embed?: EmbedSource;
  /** or, as a shorthand: [V, H] raw embedding rows (embed_tokens.weight), before any model scaling */
  embedTable?: tf.Tensor2D;
  /** or the same table stored as columns [H, V] (a tied lm_head), when no [V, H] copy exists */
  embedColumns?: tf.Tensor2D;
  /** one per row */
  settings: MixSettings[];
  /** one per row: the state the mixer's startRow made (mixers with per-row state need it) */
  rowStates?: (MixRowState | undefined)[];
  /** also return the slots of the next input (MixResult.slots), for traces */
  withSlots?: boolean;
}

export interface MixResult {
  /** [B, H] the next inputs */
  embeds: tf.Tensor2D;
  /** [B] normalized entropy H of the prior over the candidates, in [0, 1] */
  entropy: tf.Tensor1D;
  /** [B] total weight on the sampled token */
  weightOnSampled: tf.Tensor1D;
  /** int32 [B] how many candidates the row had */
  numCandidates: tf.Tensor1D;
  /** int32 [B]: the token each row records, when the mixer chooses it (Soft Thinking); else the sampler's */
  tokens?: tf.Tensor1D;
  /** float32 [B, E]: per-row values for the step's read, handed back to the mixer's observe */
  extra?: tf.Tensor2D;
  /**
   * Soft Thinking, with `withSlots`: the slots of the next input, for traces: ids (int32 [B, N]), their weights
   * [B, N] (0 where unused) and their prior p (the full distribution at the soft temperature).
   */
  slots?: MixSlots;
}

export interface MixSlots {
  ids: tf.Tensor2D;
  weights: tf.Tensor2D;
  prior: tf.Tensor2D;
}

/** Per-row state a mixer keeps across steps; `kind` names the mixer that made it. */
export interface MixRowState {
  readonly kind: string;
}

/** A 32-bit random source (the engine's seeded xoshiro128**, structurally). */
export interface NoiseRng {
  nextUint32(): number;
}

export interface MixRowInit {
  /** a generator of the row's own, seeded by the request's seed (unseeded: from crypto) */
  makeRng: () => NoiseRng;
}

/** What a mixer reports for one row and step, beside MixDiagnostics. */
export interface MixRowReport {
  soft?: SoftStepReport;
}
