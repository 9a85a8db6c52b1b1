/**
 * The decode step shared by `generate()` and the continuous-batching `Scheduler`.
 *
 * One decode step for a batch of live rows (each at its own position in its own cache row):
 *   logits [B,V] → sampler (processor chain, on device) → ids
 *                → input mixer (on device) → next input embeddings
 *   one device→host read (`await packed.data()`): the ids, plus the diagnostics, the mixer's
 *   extra columns, logprobs and the finite-logits probe packed beside them
 *   → EOS / stop strings / length checks and text on the host.
 * With no row mixing, the next input is the ids themselves (plain decoding, no embedding work).
 *
 * The caller owns the loop: which rows step together, and the forward of their next inputs.
 */
import * as tf from '@tensorflow/tfjs-core';
import { UsageError } from '@moi/core';
import type { Decoder, KVCache } from '@moi/models';
import {
  inSoftPhase,
  logprobAt,
  planRowMix,
  type InputMixer,
  type MixOptions,
  type MixRowReport,
  type MixRowState,
  type MixSettings,
  type RowMixPlan,
} from '@moi/moi';
import { createRng, resolveSamplingParams, sample, type RowState, type SamplingParams } from '@moi/core';
import { StreamingDetokenizer } from '../text/index.ts';
import type { Engine } from './engine.ts';
import { checkFiniteColumn, finiteProbe } from './finite.ts';
import { readTrace, traceColumns, traceWidth, type TokenTrace } from '../trace/candidates.ts';
import { DEFAULT_MAX_TOKENS } from '../settings/table.ts';

export { DEFAULT_MAX_TOKENS };

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
  /** extra ids that end generation like EOS (OpenAI/vLLM stop_token_ids) */
  stopTokenIds?: number[];
  /** drop special tokens from the text (default true) */
  skipSpecialTokens?: boolean;
  /** record per-step diagnostics in every mode (token events get `trace`), with this many top candidates (0 = H and w_y only) */
  trace?: number;
}

export interface TokenLogprobs {
  /** log-softmax of the raw logits at the chosen token */
  logprob: number;
  top?: { id: number; logprob: number }[];
}

export interface MixDiagnostics extends MixRowReport {
  /** moi/direct: normalized entropy H of the prior over the candidates; soft: S in nats (NaN after thinking) */
  entropy: number;
  /** total weight of the next input on the sampled token */
  weight: number;
  candidates: number;
}

export interface GenerationStats {
  promptTokens: number;
  generatedTokens: number;
  /** prompt tokens whose keys/values came from a cache (the scheduler's prompt cache) */
  cachedTokens?: number;
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
  /** with request.trace: H, w_y and the top candidates of this step */
  trace?: TokenTrace;
}

export interface DoneEvent {
  type: 'done';
  row: number;
  finishReason: FinishReason;
  /** the generated tokens (without the EOS that ended them) */
  tokens: number[];
  text: string;
  stats: GenerationStats;
  /** what stopped it (vLLM's stop_reason): the matched stop string, or the stop token id; null on EOS, length or abort */
  stopReason: string | number | null;
}

export type GenerationEvent = TokenEvent | DoneEvent;

/** A live row of a decode step. */
export interface StepRow {
  /** the row number its events carry */
  index: number;
  /** its row in the KV cache */
  slot: number;
  request: GenerateRequest;
  maxTokens: number;
  /** most tokens its cache row may hold */
  capacity: number;
  settings: MixSettings;
  /** the mixer's per-row state (Soft Thinking's phase and cold-stop count) */
  mixState?: MixRowState;
  state: RowState;
  detok: StreamingDetokenizer | null;
  text: string;
  /** text already emitted (held back while it could be the start of a stop string) */
  emitted: number;
  finished: FinishReason | null;
  /** prompt tokens whose keys/values were already cached */
  cachedTokens: number;
  /** prompt tokens as counted in the stats (the whole prompt) */
  promptTokens: number;
  /** when the row started (ms, performance.now()) and when its first token was read */
  t0: number;
  prefillEnd: number;
}

/** A request's settings as they run: its mixing, the sampler's parameters and its length. */
export interface ResolvedRequest {
  mix: RowMixPlan;
  /** the sampler's parameters (in soft mode, the after-thinking filters) */
  params: SamplingParams;
  maxTokens: number;
}

/**
 * Resolve a request's settings over generation_config.json's and the engine's defaults (and
 * MIXINPUTS_BETA from `env`), validating them; errors name the request field (`field`).
 */
export function resolveRequest(
  engine: Engine,
  request: Omit<GenerateRequest, 'promptIds'>,
  where = '',
  env: NodeJS.ProcessEnv = process.env,
): ResolvedRequest {
  const spec = engine.spec;
  const defaults = engine.generationConfig.defaults;
  const maxTokens = request.maxTokens ?? defaults.maxNewTokens ?? DEFAULT_MAX_TOKENS;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) {
    throw new UsageError('E_REQUEST', `${where}max tokens must be a positive integer, got ${maxTokens}`, {
      field: 'maxTokens',
    });
  }
  // (soft mode: the sampler runs with the after-thinking settings)
  const mix = planRowMix({ defaultMode: 'standard', ...request.mix }, request.sampling, {
    vocabSize: spec.vocabSize,
    tokenizer: engine.tokenizer,
    env,
  });
  const params = resolveSamplingParams(
    { ...request.sampling, ...mix.sampling },
    {
      temperature: defaults.temperature,
      top_k: defaults.topK,
      top_p: defaults.topP,
      min_p: defaults.minP,
      repetition_penalty: defaults.repetitionPenalty,
    },
  );
  return { mix, params, maxTokens };
}

/**
 * Validate one request and make its row (every error a request can cause is raised here, before
 * any work). `held` = tokens its cache row already holds before `promptIds`.
 */
export function planRow(
  engine: Engine,
  request: GenerateRequest,
  o: { index: number; slot: number; where: string; maxContext: number; held: number; cacheName: string },
): StepRow {
  const spec = engine.spec;
  const { where, maxContext, held } = o;
  const p = request.promptIds;
  if (!Array.isArray(p) || p.length === 0)
    throw new UsageError('E_REQUEST', `${where}the prompt is empty (it needs at least one token)`, {
      field: 'promptIds',
    });
  for (const id of p) {
    if (!Number.isInteger(id) || id < 0 || id >= spec.vocabSize) {
      throw new UsageError('E_REQUEST', `${where}token id ${id} is outside the vocabulary (0..${spec.vocabSize - 1})`, {
        field: 'promptIds',
      });
    }
  }
  if (held + p.length >= maxContext) {
    throw new UsageError(
      'E_CONTEXT',
      `${where}the prompt has ${held + p.length} tokens but the context is ${maxContext} tokens` +
        ` (${o.cacheName}); shorten the prompt`,
      { field: 'promptIds' },
    );
  }
  for (const id of request.stopTokenIds ?? []) {
    if (!Number.isInteger(id) || id < 0 || id >= spec.vocabSize) {
      throw new UsageError('E_REQUEST', `${where}stop token id ${id} is outside the vocabulary`, {
        field: 'stopTokenIds',
      });
    }
  }
  const { mix, params, maxTokens } = resolveRequest(engine, request, where);
  const now = performance.now();
  return {
    index: o.index,
    slot: o.slot,
    request,
    maxTokens,
    capacity: maxContext,
    settings: mix.settings,
    state: { params, rng: createRng(params.seed), promptIds: p, generatedIds: [] },
    // the text is decoded relative to the prompt (the first word keeps its leading space)
    detok: engine.tokenizer
      ? new StreamingDetokenizer(engine.tokenizer, { skipSpecialTokens: request.skipSpecialTokens ?? true, context: p })
      : null,
    text: '',
    emitted: 0,
    finished: null,
    cachedTokens: 0,
    promptTokens: p.length,
    t0: now,
    prefillEnd: 0,
  };
}

/** Start the mixer's state of a row. */
export function startRow(mixer: InputMixer, row: StepRow): void {
  row.mixState = mixer.startRow?.(row.settings, { makeRng: () => createRng(row.state.params.seed) });
}

/** Text safe to emit now: all of it, less any tail that could begin a stop string. */
function safeEnd(text: string, stops: string[] | undefined): number {
  let hold = 0;
  for (const s of stops ?? []) {
    for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
      if (text.endsWith(s.slice(0, k))) {
        hold = Math.max(hold, k);
        break;
      }
    }
  }
  return text.length - hold;
}

/** Index where the first stop string begins, or null. */
export function stopIndex(text: string, stops: string[]): number | null {
  return firstStop(text, stops)?.index ?? null;
}

/** The first stop string in the text (the earliest; the first listed at a tie), or null. */
export function firstStop(text: string, stops: string[]): { index: number; stop: string } | null {
  let best: { index: number; stop: string } | null = null;
  for (const s of stops) {
    if (!s) continue;
    const i = text.indexOf(s);
    if (i >= 0 && (best === null || i < best.index)) best = { index: i, stop: s };
  }
  return best;
}

/** End a row: flush its text, cut it at a stop string, and make its done event. */
export function finishRow(row: StepRow, reason: FinishReason, stopToken?: number): DoneEvent {
  row.finished = reason;
  const tail = row.detok ? row.detok.flush() : '';
  row.text += tail;
  const hit = row.request.stop?.length ? firstStop(row.text, row.request.stop) : null;
  if (hit) row.text = row.text.slice(0, hit.index);
  const stopReason = reason !== 'stop' ? null : hit ? hit.stop : (stopToken ?? null);
  const promptTokens = row.promptTokens;
  const n = row.state.generatedIds.length;
  const now = performance.now();
  const prefillEnd = row.prefillEnd || now;
  const prefillSeconds = (prefillEnd - row.t0) / 1000;
  const decodeSeconds = (now - prefillEnd) / 1000;
  return {
    type: 'done',
    row: row.index,
    finishReason: reason,
    stopReason,
    tokens: row.state.generatedIds.slice(),
    text: row.text,
    stats: {
      promptTokens,
      generatedTokens: n,
      cachedTokens: row.cachedTokens,
      prefillSeconds,
      decodeSeconds,
      prefillTokPerSec: prefillSeconds > 0 ? (promptTokens - row.cachedTokens) / prefillSeconds : 0,
      decodeTokPerSec: decodeSeconds > 0 && n > 1 ? (n - 1) / decodeSeconds : 0,
      finishReason: reason,
    },
  };
}

export interface StepContext {
  model: Decoder;
  cache: KVCache[];
  mixer: InputMixer;
  eos: Set<number>;
}

export interface StepOutcome {
  /** events in row order (token events, and done events of rows that ended) */
  events: GenerationEvent[];
  /** rows still going, in the order of `next` */
  live: StepRow[];
  /** their next inputs: ids, or mixed embeddings [live.length, H] (the caller owns them) */
  next: { ids: number[][] } | { embeds: tf.Tensor2D } | null;
  /** rows whose logits were NaN/Inf (ended, no event; the caller reports them) */
  failed: { row: StepRow; error: Error }[];
}

/** What a step read for a row's token, beside the token itself. */
export interface TokenDetails {
  mix: MixDiagnostics | null;
  logprobs?: TokenLogprobs;
  trace?: TokenTrace;
}

/**
 * The host's part of a step for one row and its token (shared by the composite step below and the
 * GPU plan's, gpu-decode.ts): EOS and stop ids, the text and stop strings, the token event, and
 * the length checks. `held` = tokens the row's cache holds; `details` is called once the token is
 * taken (after it joins generatedIds). Pushes the events; returns whether the row goes on.
 */
export function acceptToken(
  row: StepRow,
  token: number,
  eos: Set<number>,
  held: number,
  events: GenerationEvent[],
  details: () => TokenDetails,
): boolean {
  if (!row.request.ignoreEos && eos.has(token)) {
    events.push(finishRow(row, 'stop'));
    return false;
  }
  if (row.request.stopTokenIds?.includes(token)) {
    events.push(finishRow(row, 'stop', token));
    return false;
  }
  row.state.generatedIds.push(token);
  row.text += row.detok ? row.detok.push(token) : '';
  const { mix, logprobs, trace } = details();
  const stopAt = row.request.stop?.length ? stopIndex(row.text, row.request.stop) : null;
  const end = stopAt ?? safeEnd(row.text, row.request.stop);
  const text = row.text.slice(row.emitted, Math.max(row.emitted, end));
  row.emitted = Math.max(row.emitted, end);
  events.push({ type: 'token', row: row.index, token, text, logprobs, mix, ...(trace ? { trace } : {}) });
  const n = row.state.generatedIds.length;
  if (stopAt !== null) events.push(finishRow(row, 'stop'));
  else if (n >= row.maxTokens || held + 1 > row.capacity) events.push(finishRow(row, 'length'));
  else return true;
  return false;
}

/**
 * One decode step over `rows` with their logits [rows.length, V] (not disposed here). A row with
 * non-finite logits throws E_NONFINITE when `throwNonFinite`, else it is returned in `failed`.
 */
export async function decodeStep(
  ctx: StepContext,
  rows: StepRow[],
  logits: tf.Tensor2D,
  throwNonFinite: boolean,
): Promise<StepOutcome> {
  const { model, mixer, eos, cache } = ctx;
  const mixing = rows.some((r) => r.settings.mode !== 'standard');
  const wantLogprobs = rows.some((r) => r.state.params.logprobs !== undefined);
  const states = rows.map((r) => r.state);
  const traceN = Math.min(ctx.model.spec.vocabSize, Math.max(-1, ...rows.map((r) => r.request.trace ?? -1)));
  const traceW = traceN >= 0 ? traceWidth(traceN) : 0;
  // Everything of the step on the device; one packed read at the end.
  type StepOut = { packed: tf.Tensor2D; embeds: tf.Tensor2D | undefined; ncols: number; nextra: number };
  const out = tf.tidy((): StepOut => {
    const s = sample(logits, states);
    let mix: ReturnType<InputMixer['mix']> | null = null;
    if (mixing) {
      mix = mixer.mix({
        logits,
        processedLogits: s.processedLogits,
        sampled: s.ids,
        embed: model.embedSource(),
        settings: rows.map((r) => r.settings),
        rowStates: rows.map((r) => r.mixState),
        withSlots: traceN >= 0,
      });
    }
    // A mixer may record its own token (Soft Thinking), in place of the sampler's.
    const cols: tf.Tensor[] = [tf.cast(mix?.tokens ?? s.ids, 'float32')];
    if (mix) cols.push(mix.entropy, mix.weightOnSampled, tf.cast(mix.numCandidates, 'float32'));
    if (mix?.extra) cols.push(...tf.unstack(mix.extra, 1));
    if (s.logprobs) cols.push(mix?.tokens ? logprobAt(logits, mix.tokens) : s.logprobs.chosen);
    cols.push(finiteProbe(logits)); // issue 9: last column, 0 or NaN (see finite.ts)
    const packed: tf.Tensor2D[] = [tf.stack(cols, 1) as tf.Tensor2D];
    if (s.logprobs?.topIds) packed.push(tf.cast(s.logprobs.topIds, 'float32'), s.logprobs.topLogprobs!);
    if (traceN >= 0) {
      const soft = mix?.slots
        ? { slots: mix.slots, entropy: mix.entropy, thinking: rows.map((r) => inSoftPhase(r.mixState)) }
        : undefined;
      packed.push(
        traceColumns(
          logits,
          s.processedLogits,
          mix?.tokens ?? s.ids,
          rows.map((r) => r.settings),
          traceN,
          soft,
        ),
      );
    }
    return {
      packed: tf.concat(packed, 1) as tf.Tensor2D,
      embeds: mix ? mix.embeds : undefined,
      ncols: cols.length,
      nextra: mix?.extra ? mix.extra.shape[1] : 0,
    };
  });
  let values: Float32Array;
  try {
    values = (await out.packed.data()) as Float32Array; // the step's single device→host read
  } catch (e) {
    out.packed.dispose();
    out.embeds?.dispose();
    throw e;
  }
  const width = out.packed.shape[1];
  out.packed.dispose();

  const live: StepRow[] = [];
  const keep: number[] = [];
  const events: GenerationEvent[] = [];
  const failed: StepOutcome['failed'] = [];
  const nTop = (width - out.ncols - traceW) / 2;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    const o = i * width;
    // issue 9: the row's own step (0 = the prediction right after its prompt)
    try {
      checkFiniteColumn(values.subarray(o, o + width), 1, width, out.ncols - 1, row.state.generatedIds.length);
    } catch (e) {
      if (throwNonFinite) {
        out.embeds?.dispose();
        throw e;
      }
      row.finished = 'abort';
      failed.push({ row, error: e as Error });
      continue;
    }
    const token = values[o];
    const alive = acceptToken(row, token, eos, cache[0].offset[row.slot], events, () => {
      let c = 1;
      const diag = mixing ? { entropy: values[o + c++], weight: values[o + c++], candidates: values[o + c++] } : null;
      // the mixer's own columns: it updates the row's state (Soft Thinking's phase) and reports
      const rowStep = row.state.generatedIds.length - 1; // this row's step (0 = right after its prompt)
      const report = mixing
        ? mixer.observe?.(row.settings, row.mixState, values.subarray(o + c, o + c + out.nextra), rowStep)
        : undefined;
      c += out.nextra;
      const mix = diag ? { ...diag, ...report } : null;
      let logprobs: TokenLogprobs | undefined;
      if (wantLogprobs && row.state.params.logprobs !== undefined) {
        logprobs = { logprob: values[o + c] };
        const n = Math.min(row.state.params.logprobs, nTop);
        if (n > 0) {
          logprobs.top = Array.from({ length: n }, (_, j) => ({
            id: values[o + out.ncols + j],
            logprob: values[o + out.ncols + nTop + j],
          }));
        }
      }
      const trace =
        row.request.trace !== undefined ? readTrace(values, o + width - traceW, traceN, row.request.trace) : undefined;
      return { mix: row.settings.mode === 'standard' ? null : mix, logprobs, trace };
    });
    if (alive) {
      live.push(row);
      keep.push(i);
    }
  }

  // next inputs, for the rows still going
  let next: StepOutcome['next'] = null;
  if (live.length > 0) {
    if (out.embeds) {
      const e = keep.length === rows.length ? out.embeds : tf.gather(out.embeds, keep);
      next = { embeds: e as tf.Tensor2D };
      if (e !== out.embeds) out.embeds.dispose();
    } else {
      next = { ids: live.map((r) => [r.state.generatedIds[r.state.generatedIds.length - 1]]) };
    }
  } else {
    out.embeds?.dispose();
  }
  return { events, live, next, failed };
}

/** Forward the next inputs of `live` rows: their logits [live.length, V] (the caller owns them). */
export function forwardNext(
  model: Decoder,
  cache: KVCache[],
  live: StepRow[],
  next: NonNullable<StepOutcome['next']>,
): tf.Tensor2D {
  const rowIds = live.map((r) => r.slot);
  const input =
    'ids' in next ? { ids: next.ids } : { embeds: tf.reshape(next.embeds, [live.length, 1, -1]) as tf.Tensor3D };
  try {
    const l3 = model.forward(input, { cache, rows: rowIds, lastOnly: true });
    const logits = tf.reshape(l3, [live.length, -1]) as tf.Tensor2D;
    l3.dispose();
    return logits;
  } finally {
    if ('embeds' in next) {
      next.embeds.dispose();
      (input as { embeds: tf.Tensor3D }).embeds.dispose();
    }
  }
}
