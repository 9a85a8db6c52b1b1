/**
 * Pluggable input mixers: a training-free rule that turns a decode step's logits and sampled
 * ids into the next input embeddings. MoI is the first; others (e.g. Soft Thinking) can join
 * by implementing the same interface, and the decode loop stays unaware of which one runs.
 */
import { mixInputs, type MixInputsArgs, type MixResult } from './mix.ts';

export interface InputMixer {
  /** short stable name, for logs and traces */
  readonly name: string;
  /** the next inputs of a batch; on device, no host reads, no leaked tensors */
  mix(args: MixInputsArgs): MixResult;
}

/** Mixture of Inputs (arXiv 2505.14827), with per-row mode 'standard' | 'moi' | 'direct'. */
export const moiMixer: InputMixer = {
  name: 'moi',
  mix: (args) => mixInputs(args),
};
