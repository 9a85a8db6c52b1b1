/**
 * Generation as a stream. `generate()` decodes a batch of prompts together (one forward per step
 * for all live rows), each row with its own sampling and MoI settings, and yields an event per
 * token and one when a row finishes.
 *
 * One decode step:
 *   logits [B,V] → sampler (processor chain, on device) → ids
 *                → MoI mixer (on device) → next input embeddings
 *   one device→host read: the ids, plus the diagnostics and logprobs packed beside them
 *   → EOS / stop strings / length checks and text on the host → forward of the next inputs.
 * With no row mixing, the next input is the ids themselves (plain decoding, no embedding work).
 */
import * as tf from '@tensorflow/tfjs-core';
import { UsageError } from '@moi/core';
import type { Decoder, KVCache } from '@moi/models';
import { defaultMixer, type InputMixer } from '@moi/moi';
import type { Engine } from './engine.ts';
import { gpuFallbackReason, gpuGenerate, mergeStreams } from './gpu-decode.ts';
import { prefillChunkEnd } from './prefill.ts';
import {
  decodeStep,
  finishRow,
  forwardNext,
  planRow,
  startRow,
  type DoneEvent,
  type GenerateRequest,
  type GenerationEvent,
  type StepContext,
  type StepRow,
  type TokenEvent,
} from './step.ts';

export type {
  DoneEvent,
  FinishReason,
  GenerateRequest,
  GenerationEvent,
  GenerationStats,
  MixDiagnostics,
  TokenEvent,
  TokenLogprobs,
} from './step.ts';

export interface GenerateOptions {
  signal?: AbortSignal;
  /** the input mixer (MoI by default); the roadmap adds others */
  mixer?: InputMixer;
  /** prompt tokens per prefill forward (bounds memory; progress is reported per chunk) */
  prefillChunk?: number;
  onPrefill?: (p: { row: number; done: number; total: number }) => void;
  /**
   * Continue in an existing cache (a chat session): row i of the batch is row i of the cache,
   * whose offset says how many tokens it already holds; promptIds are only the new tokens.
   * The caller keeps and disposes it. Without it a fresh cache is made for the call.
   */
  cache?: KVCache[];
}

/** Validate a batch up front: every error a request can cause is raised before any work. */
function planRows(
  engine: Engine,
  requests: GenerateRequest[],
  cache?: KVCache[],
): { rows: StepRow[]; capacity: number } {
  if (requests.length === 0) throw new UsageError('E_REQUEST', 'generate: no requests');
  const spec = engine.spec;
  if (cache && cache[0].batch < requests.length)
    throw new UsageError('E_REQUEST', `generate: ${requests.length} requests for a cache of ${cache[0].batch} rows`);
  const maxContext = cache ? cache[0].capacity : spec.maxPositionEmbeddings;
  let capacity = 0;
  const rows = requests.map((request, index): StepRow => {
    const where = requests.length > 1 ? `request ${index}: ` : '';
    const held = cache ? cache[0].offset[index] : 0;
    const row = planRow(engine, request, {
      index,
      slot: index,
      where,
      maxContext,
      held,
      cacheName: cache ? 'the session cache' : 'max_position_embeddings',
    });
    capacity = cache ? maxContext : Math.max(capacity, Math.min(maxContext, request.promptIds.length + row.maxTokens));
    return row;
  });
  for (const row of rows) row.capacity = capacity;
  return { rows, capacity };
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Decode a batch of requests together. Yields token events as they come and a done event per
 * row; rows finish independently (EOS, stop string, max tokens, context full, or abort).
 * (The Scheduler runs the same decode step with rows that join and leave between steps.)
 */
export async function* generate(
  engine: Engine,
  requests: GenerateRequest[],
  opts: GenerateOptions = {},
): AsyncGenerator<GenerationEvent> {
  const { rows, capacity } = planRows(engine, requests, opts.cache);
  const mixer = opts.mixer ?? defaultMixer;
  for (const row of rows) startRow(mixer, row);
  // ---- issue 23 phase B: on webgpu, rows the GPU plan's tail covers run on a plan (gpu-decode.ts),
  // each row by itself: the others run on the composite path beside them, in the same call
  if (engine.gpu) {
    const onPlan = rows.filter((r) => gpuFallbackReason([r], opts) === null);
    const rest = rows.filter((r) => !onPlan.includes(r));
    const reason = rest.length ? gpuFallbackReason(rest, { ...opts, batch: rows.length }) : null;
    engine.lastRoute = { path: rest.length === 0 ? 'gpu-plan' : onPlan.length === 0 ? 'composite' : 'both', reason };
    if (onPlan.length > 0) {
      const gpu = engine.gpu;
      onPlan.forEach((r, i) => {
        r.slot = i;
      });
      const planStream = async function* (): AsyncGenerator<GenerationEvent> {
        const plan = await gpu.acquire(onPlan.length, capacity);
        try {
          yield* gpuGenerate(plan, onPlan, new Set(engine.eosTokenIds), opts);
        } finally {
          gpu.release(plan);
        }
      };
      yield* rest.length ? mergeStreams([planStream(), compositeGenerate(engine, rest, capacity, opts)]) : planStream();
      return;
    }
  }
  yield* compositeGenerate(engine, rows, capacity, opts);
}

/** The composite path (tfjs ops) over `rows` (their slots are rows of the call's cache). */
async function* compositeGenerate(
  engine: Engine,
  rows: StepRow[],
  capacity: number,
  opts: GenerateOptions,
): AsyncGenerator<GenerationEvent> {
  const model: Decoder = engine.model;
  const mixer = opts.mixer ?? defaultMixer;
  const B = Math.max(...rows.map((r) => r.slot)) + 1;
  const chunk = Math.max(1, opts.prefillChunk ?? 512);
  const cache: KVCache[] = opts.cache ?? model.makeCache(B, capacity);
  const ctx: StepContext = { model, cache, mixer, eos: new Set(engine.eosTokenIds) };
  let logits: tf.Tensor2D | null = null;
  let next: { ids: number[][] } | { embeds: tf.Tensor2D } | null = null;

  try {
    // ---- prefill, row by row (prompts differ in length), in chunks
    const last: tf.Tensor2D[] = [];
    for (const row of rows) {
      const p = row.request.promptIds;
      let rowLogits: tf.Tensor | null = null;
      for (let s = 0; s < p.length;) {
        if (opts.signal?.aborted) break;
        const end = prefillChunkEnd(s, p.length, chunk);
        rowLogits?.dispose();
        rowLogits = model.forward(
          { ids: [p.slice(s, end)] },
          { cache, rows: [row.slot], lastOnly: true, prefillTokensLeft: p.length - s },
        );
        opts.onPrefill?.({ row: row.index, done: end, total: p.length });
        s = end;
        if (p.length > chunk) await yieldToEventLoop();
      }
      if (rowLogits) last.push(tf.reshape(rowLogits, [1, -1]) as tf.Tensor2D);
      rowLogits?.dispose();
    }
    if (opts.signal?.aborted) {
      tf.dispose(last);
      for (const row of rows) yield finishRow(row, 'abort');
      return;
    }
    logits = tf.concat(last, 0) as tf.Tensor2D;
    tf.dispose(last);

    // ---- decode
    let live = rows.slice();
    while (live.length > 0) {
      const out = await decodeStep(ctx, live, logits, true);
      logits.dispose();
      logits = null;
      const now = performance.now();
      for (const row of live) if (!row.prefillEnd) row.prefillEnd = now;
      live = out.live;
      next = out.next;

      for (const e of out.events) yield e;
      await yieldToEventLoop();
      if (opts.signal?.aborted) {
        for (const row of live) yield finishRow(row, 'abort');
        return;
      }
      if (!next) break;
      const n = next;
      next = null;
      logits = forwardNext(model, cache, live, n);
    }
  } finally {
    logits?.dispose();
    if (next && 'embeds' in next) next.embeds.dispose();
    if (!opts.cache) for (const c of cache) c.dispose();
  }
}

/** Run one request to the end and collect it (a convenience over the stream). */
export async function generateOne(
  engine: Engine,
  request: GenerateRequest,
  opts: GenerateOptions = {},
): Promise<{ events: TokenEvent[]; done: DoneEvent }> {
  const events: TokenEvent[] = [];
  for await (const e of generate(engine, [request], opts)) {
    if (e.type === 'token') events.push(e);
    else return { events, done: e };
  }
  throw new UsageError('E_INTERNAL', 'generation ended without a done event');
}
