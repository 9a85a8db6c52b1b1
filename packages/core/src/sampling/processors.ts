/**
 * Logits processors: small functions `(logits [B,V], ctx) => logits [B,V]`, all tfjs ops, applied
 * in Hugging Face's order: repetition penalty → presence/frequency penalties → temperature →
 * top-k → top-p → min-p. Filtered entries become -Infinity. Every row of the batch has its own
 * parameters, carried by the context as [B,1] columns, so one chain serves a mixed batch; a row
 * whose value means "off" passes through unchanged. The chain holds only processors some row uses.
 *
 * Call processors inside tf.tidy: they and the context's memoized tensors make intermediates.
 */
import * as tf from '@tensorflow/tfjs-core';
import { UsageError } from '../errors.ts';
import type { SamplingParams } from './params.ts';

export type RowParam =
  'temperature' | 'topK' | 'topP' | 'minP' | 'repetitionPenalty' | 'presencePenalty' | 'frequencyPenalty';

/** A row's token history, as host numbers (the decode loop reads the chosen ids each step). */
export interface TokenHistory {
  promptIds: readonly number[];
  generatedIds: readonly number[];
}

export interface ProcessorContext {
  readonly batch: number;
  readonly vocabSize: number;
  /** host copy of each row's parameters (used for sizes such as the batch's largest k) */
  readonly params: readonly SamplingParams[];
  /** per-row value of a parameter as a [B,1] float32 column; uploaded on first use */
  column(name: RowParam): tf.Tensor2D;
  /** [B,V] float32: 1 where the id occurs in the row's prompt or generated ids, else 0 */
  seenMask(): tf.Tensor2D;
  /** [B,V] float32: how often the id occurs in the row's generated ids */
  generatedCounts(): tf.Tensor2D;
}

export type LogitsProcessor = (logits: tf.Tensor2D, ctx: ProcessorContext) => tf.Tensor2D;

/**
 * Float32 slack for the boundary tests of top-p (absolute, on cumulative mass) and min-p
 * (relative, on a probability ratio). Exact arithmetic puts p = 0.7 over probabilities
 * [0.5, 0.2, …] exactly on the boundary; without slack, softmax rounding decides the outcome.
 */
export const TOP_P_SLACK = 1e-6;
export const MIN_P_SLACK = 1e-5;

/**
 * Unique (row, id) pairs of a batch's histories with per-pair values, for one scatter onto [B,V]:
 * the compact upload (O(history), not O(B·V)) of the penalty state.
 */
function historyPairs(
  history: readonly TokenHistory[],
  useRow: (row: number) => boolean,
  value: (prompt: readonly number[], generated: readonly number[], row: number) => Map<number, number>,
): { indices: Int32Array; values: Float32Array } {
  const rowIds: number[] = [];
  const tokenIds: number[] = [];
  const values: number[] = [];
  history.forEach((h, row) => {
    if (!useRow(row)) return;
    for (const [id, v] of value(h.promptIds, h.generatedIds, row)) {
      rowIds.push(row);
      tokenIds.push(id);
      values.push(v);
    }
  });
  const indices = new Int32Array(rowIds.length * 2);
  for (let i = 0; i < rowIds.length; i++) {
    indices[2 * i] = rowIds[i];
    indices[2 * i + 1] = tokenIds[i];
  }
  return { indices, values: Float32Array.from(values) };
}

function checkIds(ids: readonly number[], vocabSize: number, row: number, field: string): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new UsageError(
        'E_SAMPLING',
        `row ${row} ${field}: token id ${id} is outside the vocabulary [0, ${vocabSize})`,
      );
    }
  }
}

/** Scatter (row, id) → value pairs onto a zero [B,V] float32 tensor (duplicates would add). */
function scatterPairs(
  pairs: { indices: Int32Array; values: Float32Array },
  batch: number,
  vocabSize: number,
): tf.Tensor2D {
  const n = pairs.values.length;
  if (n === 0) return tf.zeros([batch, vocabSize]);
  return tf.scatterND(tf.tensor2d(pairs.indices, [n, 2], 'int32'), tf.tensor1d(pairs.values), [
    batch,
    vocabSize,
  ]) as tf.Tensor2D;
}

/**
 * The context of one sampling step. Columns and history tensors are built lazily (only what the
 * chain uses is uploaded) and memoized for the step; create and use it inside tf.tidy.
 */
export function createContext(
  params: readonly SamplingParams[],
  history: readonly TokenHistory[],
  vocabSize: number,
): ProcessorContext {
  const batch = params.length;
  if (history.length !== batch) {
    throw new UsageError('E_SAMPLING', `sampling context: ${history.length} token histories for ${batch} rows`);
  }
  const columns = new Map<RowParam, tf.Tensor2D>();
  let seen: tf.Tensor2D | undefined;
  let counts: tf.Tensor2D | undefined;
  return {
    batch,
    vocabSize,
    params,
    column(name) {
      let c = columns.get(name);
      if (!c) {
        c = tf.tensor2d(
          params.map((p) => p[name]),
          [batch, 1],
          'float32',
        );
        columns.set(name, c);
      }
      return c;
    },
    seenMask() {
      if (!seen) {
        const pairs = historyPairs(
          history,
          (r) => params[r].repetitionPenalty !== 1,
          (prompt, generated, row) => {
            checkIds(prompt, vocabSize, row, 'promptIds');
            checkIds(generated, vocabSize, row, 'generatedIds');
            const m = new Map<number, number>();
            for (const id of prompt) m.set(id, 1);
            for (const id of generated) m.set(id, 1);
            return m;
          },
        );
        seen = scatterPairs(pairs, batch, vocabSize);
      }
      return seen;
    },
    generatedCounts() {
      if (!counts) {
        const uses = (r: number) => params[r].presencePenalty !== 0 || params[r].frequencyPenalty !== 0;
        const pairs = historyPairs(history, uses, (_prompt, generated, row) => {
          checkIds(generated, vocabSize, row, 'generatedIds');
          const m = new Map<number, number>();
          for (const id of generated) m.set(id, (m.get(id) ?? 0) + 1);
          return m;
        });
        counts = scatterPairs(pairs, batch, vocabSize);
      }
      return counts;
    },
  };
}

/** HF repetition penalty over prompt + generated ids: logit > 0 → logit / p, else logit × p. */
export const repetitionPenalty: LogitsProcessor = (logits, ctx) => {
  const p = ctx.column('repetitionPenalty');
  const factor = tf.add(1, tf.mul(ctx.seenMask(), tf.sub(p, 1))); // p where seen, else 1 (p > 0: validated)
  return tf.where(tf.greater(logits, 0), tf.div(logits, factor), tf.mul(logits, factor)) as tf.Tensor2D;
};

/** OpenAI/vLLM penalties over generated ids: logit -= frequency × count + presence × [count > 0]. */
export const presenceFrequencyPenalty: LogitsProcessor = (logits, ctx) => {
  const counts = ctx.generatedCounts();
  const present = tf.cast(tf.greater(counts, 0), 'float32');
  const penalty = tf.add(
    tf.mul(counts, ctx.column('frequencyPenalty')),
    tf.mul(present, ctx.column('presencePenalty')),
  );
  return tf.sub(logits, penalty) as tf.Tensor2D;
};

/** logits / T per row; greedy rows (T = 0) are divided by 1 (argmax does not depend on T). */
export const temperature: LogitsProcessor = (logits, ctx) => {
  const t = ctx.column('temperature');
  // never a division by 0: greedy rows divide by 1. (A T below ~1e-36 overflows logits / T to ±∞
  // on every backend, and below 2^-126 a GPU reads it as 0, i.e. divides by 1: both are wrong, and
  // such a T is accepted today; see issue 21's notes.)
  return tf.div(logits, tf.where(tf.greater(t, 0), t, tf.onesLike(t))) as tf.Tensor2D;
};

/**
 * Keep, per row, the sorted positions flagged in `keepSorted` [B,m] (positions of `sortedIds`
 * [B,m], the token ids in descending order); everything else becomes -Infinity.
 */
function keepSortedPositions(logits: tf.Tensor2D, sortedIds: tf.Tensor2D, keepSorted: tf.Tensor2D): tf.Tensor2D {
  const [batch, vocab] = logits.shape;
  const m = sortedIds.shape[1];
  const rowIds = tf.tile(tf.reshape(tf.range(0, batch, 1, 'int32'), [batch, 1]), [1, m]);
  const indices = tf.stack([rowIds, sortedIds], 2); // [B,m,2] of (row, token id)
  const keep = tf.scatterND(indices, tf.cast(keepSorted, 'float32'), [batch, vocab]);
  return tf.where(tf.greater(keep, 0), logits, tf.fill([batch, vocab], -Infinity)) as tf.Tensor2D;
}

/** The k of a row that filters anything: 0 when off (k = 0) or when k ≥ V keeps everything. */
export function effectiveTopK(p: SamplingParams, vocabSize: number): number {
  return p.topK > 0 && p.topK < vocabSize ? p.topK : 0;
}

/**
 * Top-k by rank: one tf.topk with the batch's largest k, then keep ranks < k_row. Exactly k tokens
 * survive; ties at the boundary go to the lower token id (tf.topk's order). Off rows keep all.
 */
export const topK: LogitsProcessor = (logits, ctx) => {
  const ks = ctx.params.map((p) => effectiveTopK(p, ctx.vocabSize));
  const kMax = Math.max(...ks);
  if (kMax === 0) return logits;
  const { indices } = tf.topk(logits, kMax);
  const rank = tf.reshape(tf.range(0, kMax, 1, 'float32'), [1, kMax]);
  const k = tf.tensor2d(ks, [ctx.batch, 1], 'float32');
  const kept = keepSortedPositions(logits, indices as tf.Tensor2D, tf.less(rank, k) as tf.Tensor2D);
  return tf.where(tf.equal(k, 0), logits, kept) as tf.Tensor2D;
};

/**
 * Top-p as HF: sort descending, cumulative softmax, keep the smallest prefix whose mass is ≥ p,
 * i.e. token i survives while the mass before it is < p; the top token always survives.
 * Rows with p = 1 keep everything (not even float32 rounding of the tail may drop a token).
 */
export const topP: LogitsProcessor = (logits, ctx) => {
  const vocab = ctx.vocabSize;
  const { values, indices } = tf.topk(logits, vocab);
  // exclusive: mass strictly before. Underflowed probabilities (0 on a GPU) only add nothing to it.
  const before = tf.cumsum(tf.softmax(values), 1, true);
  const p = ctx.column('topP');
  const limit = tf.where(tf.greaterEqual(p, 1), tf.fill(p.shape, 2), tf.sub(p, TOP_P_SLACK));
  const first = tf.equal(tf.reshape(tf.range(0, vocab, 1, 'int32'), [1, vocab]), 0);
  const keepSorted = tf.logicalOr(tf.less(before, limit), first) as tf.Tensor2D;
  return keepSortedPositions(logits, indices as tf.Tensor2D, keepSorted);
};

/** Min-p: keep tokens with prob ≥ minP × max prob, i.e. exp(logit − max logit) ≥ minP. */
export const minP: LogitsProcessor = (logits, ctx) => {
  // an underflowed ratio (0 on a GPU, which flushes below 2^-126) is below any min-p but a
  // subnormal one, which a GPU reads as 0 (keep everything): the tokens that differ have p < 1e-38
  const ratio = tf.exp(tf.sub(logits, tf.max(logits, 1, true)));
  const floor = tf.mul(ctx.column('minP'), 1 - MIN_P_SLACK);
  return tf.where(tf.greaterEqual(ratio, floor), logits, tf.fill(logits.shape, -Infinity)) as tf.Tensor2D;
};

/** The processors some row of the batch uses, in HF's order. */
export function buildChain(params: readonly SamplingParams[], vocabSize: number): LogitsProcessor[] {
  const any = (f: (p: SamplingParams) => boolean) => params.some(f);
  const chain: LogitsProcessor[] = [];
  if (any((p) => p.repetitionPenalty !== 1)) chain.push(repetitionPenalty);
  if (any((p) => p.presencePenalty !== 0 || p.frequencyPenalty !== 0)) chain.push(presenceFrequencyPenalty);
  if (any((p) => p.temperature > 0 && p.temperature !== 1)) chain.push(temperature);
  if (any((p) => effectiveTopK(p, vocabSize) > 0)) chain.push(topK);
  if (any((p) => p.topP < 1)) chain.push(topP);
  if (any((p) => p.minP > 0)) chain.push(minP);
  return chain;
}

/** Run a chain (inside tf.tidy). Returns the input itself when the chain is empty. */
export function applyChain(logits: tf.Tensor2D, chain: readonly LogitsProcessor[], ctx: ProcessorContext): tf.Tensor2D {
  let x = logits;
  for (const process of chain) x = process(x, ctx);
  return x;
}
