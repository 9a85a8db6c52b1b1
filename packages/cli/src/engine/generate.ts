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
import { moiMixer, resolveMixSettings, type InputMixer, type MixOptions, type MixSettings } from '@moi/moi';
import { createRng, resolveSamplingParams, sample, type RowState, type SamplingParams } from '../sampling/index.ts';
import { StreamingDetokenizer, type Tokenizer } from '../text/index.ts';
import type { Engine } from './engine.ts';

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerateRequest {
  /** the prompt as token ids (already including BOS / chat formatting) */
  promptIds: number[];
  /** most new tokens (default 256) */
  maxTokens?: number;
  sampling?: Partial<SamplingParams>;
  /** MoI settings: mode standard | moi | direct, beta, topK, prior (MIXINPUTS_BETA applies) */
  mix?: MixOptions;
  /** strings that end generation; the text stops before them */
  stop?: string[];
  /** keep going past EOS */
  ignoreEos?: boolean;
}

export interface TokenLogprobs {
  /** log-softmax of the raw logits at the chosen token */
  logprob: number;
  top?: { id: number; logprob: number }[];
}

export interface MixDiagnostics {
  /** normalized entropy H of the prior over the candidates */
  entropy: number;
  /** total weight of the next input on the sampled token */
  weight: number;
  candidates: number;
}

export interface GenerationStats {
  promptTokens: number;
  generatedTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  prefillTokPerSec: number;
  decodeTokPerSec: number;
  finishReason: FinishReason;
}

export interface TokenEvent {
  type: 'token';
  /** index of the request in the batch */
  row: number;
  token: number;
  /** new text this token completes (may be '' while a character is incomplete) */
  text: string;
  logprobs?: TokenLogprobs;
  /** null in standard mode */
  mix: MixDiagnostics | null;
}

export interface DoneEvent {
  type: 'done';
  row: number;
  finishReason: FinishReason;
  /** the generated tokens (without the EOS that ended them) */
  tokens: number[];
  text: string;
  stats: GenerationStats;
}

export type GenerationEvent = TokenEvent | DoneEvent;

export interface GenerateOptions {
  signal?: AbortSignal;
  /** the input mixer (MoI by default); the roadmap adds others */
  mixer?: InputMixer;
  /** prompt tokens per prefill forward (bounds memory; progress is reported per chunk) */
  prefillChunk?: number;
  onPrefill?: (p: { row: number; done: number; total: number }) => void;
  /** for tests of the fallback path */
  noInPlaceCache?: boolean;
  /**
   * Continue in an existing cache (a chat session): row i of the batch is row i of the cache,
   * whose offset says how many tokens it already holds; promptIds are only the new tokens.
   * The caller keeps and disposes it. Without it a fresh cache is made for the call.
   */
  cache?: KVCache[];
}

interface Row {
  index: number;
  request: GenerateRequest;
  maxTokens: number;
  settings: MixSettings;
  state: RowState;
  detok: StreamingDetokenizer | null;
  text: string;
  /** text already emitted (held back while it could be the start of a stop string) */
  emitted: number;
  finished: FinishReason | null;
}

const DEFAULT_MAX_TOKENS = 256;

/** Validate a batch up front: every error a request can cause is raised before any work. */
function planRows(engine: Engine, requests: GenerateRequest[], cache?: KVCache[]): { rows: Row[]; capacity: number } {
  if (requests.length === 0) throw new UsageError('E_REQUEST', 'generate: no requests');
  const spec = engine.spec;
  if (cache && cache[0].batch < requests.length) throw new UsageError('E_REQUEST', `generate: ${requests.length} requests for a cache of ${cache[0].batch} rows`);
  const maxContext = cache ? cache[0].capacity : spec.maxPositionEmbeddings;
  const defaults = engine.generationConfig.defaults;
  let capacity = 0;
  const rows = requests.map((request, index): Row => {
    const where = requests.length > 1 ? `request ${index}: ` : '';
    const p = request.promptIds;
    if (!Array.isArray(p) || p.length === 0) throw new UsageError('E_REQUEST', `${where}the prompt is empty (it needs at least one token)`);
    for (const id of p) {
      if (!Number.isInteger(id) || id < 0 || id >= spec.vocabSize) {
        throw new UsageError('E_REQUEST', `${where}token id ${id} is outside the vocabulary (0..${spec.vocabSize - 1})`);
      }
    }
    const held = cache ? cache[0].offset[index] : 0;
    if (held + p.length >= maxContext) {
      throw new UsageError('E_CONTEXT', `${where}the prompt has ${held + p.length} tokens but the context is ${maxContext} tokens` +
        `${cache ? ' (the session cache)' : ' (max_position_embeddings)'}; shorten the prompt`);
    }
    const maxTokens = request.maxTokens ?? defaults.maxNewTokens ?? DEFAULT_MAX_TOKENS;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new UsageError('E_REQUEST', `${where}max tokens must be a positive integer, got ${maxTokens}`);
    capacity = cache ? maxContext : Math.max(capacity, Math.min(maxContext, p.length + maxTokens));
    const params = resolveSamplingParams(request.sampling ?? {}, {
      temperature: defaults.temperature, top_k: defaults.topK, top_p: defaults.topP,
      min_p: defaults.minP, repetition_penalty: defaults.repetitionPenalty,
    });
    const settings = resolveMixSettings({ defaultMode: 'standard', ...request.mix }, process.env, spec.vocabSize);
    return {
      index, request, maxTokens, settings,
      state: { params, rng: createRng(params.seed), promptIds: p, generatedIds: [] },
      detok: engine.tokenizer ? new StreamingDetokenizer(engine.tokenizer, { skipSpecialTokens: true }) : null,
      text: '', emitted: 0, finished: null,
    };
  });
  return { rows, capacity };
}

/** Text safe to emit now: all of it, less any tail that could begin a stop string. */
function safeEnd(text: string, stops: string[] | undefined): number {
  let hold = 0;
  for (const s of stops ?? []) {
    for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
      if (text.endsWith(s.slice(0, k))) { hold = Math.max(hold, k); break; }
    }
  }
  return text.length - hold;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Decode a batch of requests together. Yields token events as they come and a done event per
 * row; rows finish independently (EOS, stop string, max tokens, context full, or abort).
 */
export async function* generate(engine: Engine, requests: GenerateRequest[], opts: GenerateOptions = {}): AsyncGenerator<GenerationEvent> {
  const { rows, capacity } = planRows(engine, requests, opts.cache);
  const model: Decoder = engine.model;
  const mixer = opts.mixer ?? moiMixer;
  const eos = new Set(engine.eosTokenIds);
  const B = rows.length;
  const chunk = Math.max(1, opts.prefillChunk ?? 512);
  const cache: KVCache[] = opts.cache ?? model.makeCache(B, capacity, { noInPlace: opts.noInPlaceCache });
  const wantLogprobs = rows.some((r) => r.state.params.logprobs !== undefined);
  const t0 = performance.now();
  let prefillEnd = 0;
  let logits: tf.Tensor2D | null = null;
  let nextInput: { ids: number[][] } | { embeds: tf.Tensor2D } | null = null;

  const finish = function* (row: Row, reason: FinishReason): Generator<GenerationEvent> {
    row.finished = reason;
    const tail = row.detok ? row.detok.flush() : '';
    row.text += tail;
    const end = row.request.stop?.length ? Math.min(row.text.length, stopIndex(row.text, row.request.stop) ?? row.text.length) : row.text.length;
    row.text = row.text.slice(0, end);
    const promptTokens = row.request.promptIds.length;
    const n = row.state.generatedIds.length;
    const prefillSeconds = (prefillEnd - t0) / 1000;
    const decodeSeconds = (performance.now() - prefillEnd) / 1000;
    yield {
      type: 'done', row: row.index, finishReason: reason, tokens: row.state.generatedIds.slice(), text: row.text,
      stats: {
        promptTokens, generatedTokens: n, prefillSeconds, decodeSeconds,
        prefillTokPerSec: prefillSeconds > 0 ? promptTokens / prefillSeconds : 0,
        decodeTokPerSec: decodeSeconds > 0 && n > 1 ? (n - 1) / decodeSeconds : 0,
        finishReason: reason,
      },
    };
  };

  try {
    // ---- prefill, row by row (prompts differ in length), in chunks
    const last: tf.Tensor2D[] = [];
    for (const row of rows) {
      const p = row.request.promptIds;
      let rowLogits: tf.Tensor | null = null;
      for (let s = 0; s < p.length; s += chunk) {
        if (opts.signal?.aborted) break;
        rowLogits?.dispose();
        rowLogits = model.forward({ ids: [p.slice(s, s + chunk)] }, { cache, rows: [row.index], lastOnly: true });
        opts.onPrefill?.({ row: row.index, done: Math.min(p.length, s + chunk), total: p.length });
        if (p.length > chunk) await yieldToEventLoop();
      }
      if (rowLogits) last.push(tf.reshape(rowLogits, [1, -1]) as tf.Tensor2D);
      rowLogits?.dispose();
    }
    if (opts.signal?.aborted) {
      tf.dispose(last);
      prefillEnd = performance.now();
      for (const row of rows) yield* finish(row, 'abort');
      return;
    }
    logits = tf.concat(last, 0) as tf.Tensor2D;
    tf.dispose(last);

    // ---- decode
    let live = rows.slice();
    for (let step = 0; live.length > 0; step++) {
      const mixing = live.some((r) => r.settings.mode !== 'standard');
      const states = live.map((r) => r.state);
      // Everything of the step on the device; one packed read at the end.
      type StepOut = { packed: tf.Tensor2D; embeds: tf.Tensor2D | undefined; ncols: number };
      const out = tf.tidy((): StepOut => {
        const s = sample(logits!, states);
        let mix: ReturnType<InputMixer['mix']> | null = null;
        if (mixing) {
          mix = mixer.mix({
            logits: logits!, processedLogits: s.processedLogits, sampled: s.ids,
            ...(model.weights.embed ? { embedTable: model.weights.embed } : { embedColumns: model.weights.lmHead }),
            settings: live.map((r) => r.settings),
          });
        }
        const cols: tf.Tensor[] = [tf.cast(s.ids, 'float32')];
        if (mix) cols.push(mix.entropy, mix.weightOnSampled, tf.cast(mix.numCandidates, 'float32'));
        if (s.logprobs) cols.push(s.logprobs.chosen);
        const packed: tf.Tensor2D[] = [tf.stack(cols, 1) as tf.Tensor2D];
        if (s.logprobs?.topIds) packed.push(tf.cast(s.logprobs.topIds, 'float32'), s.logprobs.topLogprobs!);
        return { packed: tf.concat(packed, 1) as tf.Tensor2D, embeds: mix ? mix.embeds : undefined, ncols: cols.length };
      });
      const values = await out.packed.data(); // the step's single device→host read (async: webgpu has no sync read)
      const width = out.packed.shape[1];
      out.packed.dispose();
      logits.dispose();
      logits = null;
      if (step === 0) prefillEnd = performance.now();

      const stillLive: Row[] = [];
      const events: GenerationEvent[] = [];
      const nTop = (width - out.ncols) / 2;
      for (let i = 0; i < live.length; i++) {
        const row = live[i];
        const o = i * width;
        const token = values[o];
        if (!row.request.ignoreEos && eos.has(token)) {
          events.push(...finish(row, 'stop'));
          continue;
        }
        row.state.generatedIds.push(token);
        row.text += row.detok ? row.detok.push(token) : '';
        let c = 1;
        const mix = mixing ? { entropy: values[o + c++], weight: values[o + c++], candidates: values[o + c++] } : null;
        let logprobs: TokenLogprobs | undefined;
        if (wantLogprobs && row.state.params.logprobs !== undefined) {
          logprobs = { logprob: values[o + c] };
          const n = Math.min(row.state.params.logprobs, nTop);
          if (n > 0) {
            logprobs.top = Array.from({ length: n }, (_, j) => ({ id: values[o + out.ncols + j], logprob: values[o + out.ncols + nTop + j] }));
          }
        }
        const stopAt = row.request.stop?.length ? stopIndex(row.text, row.request.stop) : null;
        const end = stopAt ?? safeEnd(row.text, row.request.stop);
        const text = row.text.slice(row.emitted, Math.max(row.emitted, end));
        row.emitted = Math.max(row.emitted, end);
        events.push({ type: 'token', row: row.index, token, text, logprobs, mix: row.settings.mode === 'standard' ? null : mix });
        const n = row.state.generatedIds.length;
        if (stopAt !== null) events.push(...finish(row, 'stop'));
        else if (n >= row.maxTokens || cache[0].offset[row.index] + 1 > capacity) events.push(...finish(row, 'length'));
        else stillLive.push(row);
      }

      // next inputs, for the rows still going
      if (stillLive.length > 0) {
        const keep = stillLive.map((r) => live.indexOf(r));
        if (out.embeds) {
          const e = keep.length === live.length ? out.embeds : tf.gather(out.embeds, keep);
          nextInput = { embeds: e as tf.Tensor2D };
          if (e !== out.embeds) out.embeds.dispose();
        } else {
          nextInput = { ids: stillLive.map((r) => [r.state.generatedIds[r.state.generatedIds.length - 1]]) };
        }
      } else {
        out.embeds?.dispose();
        nextInput = null;
      }
      live = stillLive;

      for (const e of events) yield e;
      await yieldToEventLoop();
      if (opts.signal?.aborted) {
        if (nextInput && 'embeds' in nextInput) nextInput.embeds.dispose();
        nextInput = null;
        for (const row of live) yield* finish(row, 'abort');
        return;
      }
      if (!nextInput) break;

      const rowIds = live.map((r) => r.index);
      const input = 'ids' in nextInput
        ? { ids: nextInput.ids }
        : { embeds: tf.reshape(nextInput.embeds, [live.length, 1, -1]) as tf.Tensor3D };
      const l3 = model.forward(input, { cache, rows: rowIds, lastOnly: true });
      if ('embeds' in nextInput) { nextInput.embeds.dispose(); (input as { embeds: tf.Tensor3D }).embeds.dispose(); }
      nextInput = null;
      logits = tf.reshape(l3, [live.length, -1]) as tf.Tensor2D;
      l3.dispose();
    }
  } finally {
    logits?.dispose();
    if (nextInput && 'embeds' in nextInput) nextInput.embeds.dispose();
    if (!opts.cache) for (const c of cache) c.dispose();
  }
}

/** Index where the first stop string begins, or null. */
function stopIndex(text: string, stops: string[]): number | null {
  let best: number | null = null;
  for (const s of stops) {
    if (!s) continue;
    const i = text.indexOf(s);
    if (i >= 0 && (best === null || i < best)) best = i;
  }
  return best;
}

/** Run one request to the end and collect it (a convenience over the stream). */
export async function generateOne(engine: Engine, request: GenerateRequest, opts: GenerateOptions = {}): Promise<{ events: TokenEvent[]; done: DoneEvent }> {
  const events: TokenEvent[] = [];
  for await (const e of generate(engine, [request], opts)) {
    if (e.type === 'token') events.push(e);
    else return { events, done: e };
  }
  throw new UsageError('E_INTERNAL', 'generation ended without a done event');
}

/** Tokenize a prompt the way HF does for plain completion (BOS as the tokenizer config says). */
export function encodePrompt(tok: Tokenizer, text: string): number[] {
  return tok.encode(text, { addSpecialTokens: true });
}
