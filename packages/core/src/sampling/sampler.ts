/**
 * One sampling step for a batch: logits [B,V] → chosen ids [B], all on the device. The sampler
 * returns tensors and never reads them back, so the decode loop can read the ids (and logprobs)
 * in its single device→host transfer of the step.
 *
 * Greedy rows (temperature 0) take the argmax of the processed logits. Random rows use inverse-CDF
 * sampling from one uniform number per row, drawn on the host from the row's seeded Rng:
 * probs = softmax(processed), cdf = cumsum(probs), id = #{i : cdf_i < u · cdf_last}. The draw u lies
 * in (0, 1] and is scaled by the row's total mass, so the chosen token is always one where the cdf
 * rises, i.e. one of non-zero probability: a filtered token (-Infinity) can never be chosen.
 */
import * as tf from '@tensorflow/tfjs-core';
import { UsageError } from '../errors.ts';
import { isRandom, type SamplingParams } from './params.ts';
import { applyChain, buildChain, createContext } from './processors.ts';
import { uniformOpenClosed24, type Rng } from './rng.ts';

export interface RowState {
  params: SamplingParams;
  rng: Rng;
  promptIds: number[];
  generatedIds: number[];
}

// Type aliases (not interfaces) so that tf.tidy accepts them as tensor containers.
export type SampleLogprobs = {
  /** [B] float32: log-softmax of the raw logits at the chosen id */
  chosen: tf.Tensor1D;
  /** [B,n] int32, n = the batch's largest `logprobs` (clamped to V); rows asking fewer use the first columns */
  topIds?: tf.Tensor2D;
  /** [B,n] float32: the matching raw log-softmax values, descending */
  topLogprobs?: tf.Tensor2D;
};

export type SampleResult = {
  /** [B] int32 chosen token ids */
  ids: tf.Tensor1D;
  /** [B,V] float32 logits after the processor chain, before sampling (the MoI layer's prior) */
  processedLogits: tf.Tensor2D;
  /** present when some row asked for logprobs */
  logprobs?: SampleLogprobs;
};

/**
 * Sample one token per row. The caller owns every tensor of the result (`tf.dispose(result)`);
 * nothing else is left behind. Each random row consumes exactly one draw of its Rng per call.
 */
export function sample(logits: tf.Tensor2D, rows: readonly RowState[]): SampleResult {
  if (logits.rank !== 2)
    throw new UsageError('E_SAMPLING', `sample: logits must be [B, V], got shape [${logits.shape.join(', ')}]`);
  const [batch, vocab] = logits.shape;
  if (rows.length !== batch)
    throw new UsageError('E_SAMPLING', `sample: ${rows.length} row states for ${batch} rows of logits`);
  const params = rows.map((r) => r.params);
  const random = params.map(isRandom);
  // Host draws happen before any op so that they do not depend on what the device does.
  const u = rows.map((r, i) => (random[i] ? uniformOpenClosed24(r.rng) : 1));
  const logprobRows = params.filter((p) => p.logprobs !== undefined);
  const topN = Math.min(vocab, Math.max(0, ...logprobRows.map((p) => p.logprobs ?? 0)));

  return tf.tidy((): SampleResult => {
    const ctx = createContext(params, rows, vocab);
    const chained = applyChain(logits, buildChain(params, vocab), ctx);
    // The result must own its tensors: never hand back the caller's logits themselves.
    const processedLogits = chained === logits ? tf.clone(logits) : chained;

    let ids: tf.Tensor1D;
    const greedyIds = () => tf.argMax(processedLogits, 1) as tf.Tensor1D;
    const sampledIds = () => {
      // GPU-safe: the target is u · total with u ≥ 2^-24, far above 2^-126; a probability that
      // underflowed (0 on a GPU) cannot be chosen, as a filtered one cannot
      const cdf = tf.cumsum(tf.softmax(processedLogits), 1);
      const total = tf.slice(cdf, [0, vocab - 1], [batch, 1]);
      const target = tf.mul(tf.tensor2d(u, [batch, 1], 'float32'), total);
      const below = tf.sum(tf.cast(tf.less(cdf, target), 'int32'), 1);
      return tf.minimum(below, tf.scalar(vocab - 1, 'int32')) as tf.Tensor1D; // a plain number would upcast to float32
    };
    if (random.every((r) => !r)) ids = greedyIds();
    else if (random.every((r) => r)) ids = sampledIds();
    else ids = tf.where(tf.tensor1d(random, 'bool'), sampledIds(), greedyIds()) as tf.Tensor1D;

    if (logprobRows.length === 0) return { ids, processedLogits };

    // Logprobs follow OpenAI and vLLM (its default raw mode): the log-softmax of the RAW model
    // logits, before penalties, temperature and filters, so they describe the model, not the
    // sampler's settings. They are computed for every row; rows that did not ask ignore them.
    const logp = tf.logSoftmax(logits);
    // Flat gather at row·V + id (gather with batchDims returns garbage on the wasm backend).
    const flatIds = tf.add(ids, tf.range(0, batch * vocab, vocab, 'int32'));
    const chosen = tf.gather(tf.reshape(logp, [batch * vocab]), flatIds) as tf.Tensor1D;
    const logprobs: SampleLogprobs = { chosen };
    if (topN > 0) {
      const top = tf.topk(logp, topN);
      logprobs.topIds = top.indices as tf.Tensor2D;
      logprobs.topLogprobs = top.values as tf.Tensor2D;
    }
    return { ids, processedLogits, logprobs };
  });
}

/** Holds nothing between calls; a class for callers that prefer an object to pass around. */
export class Sampler {
  sample(logits: tf.Tensor2D, rows: readonly RowState[]): SampleResult {
    return sample(logits, rows);
  }
}
