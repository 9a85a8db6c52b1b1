/**
 * OpenAI request bodies → engine requests, and the pieces of OpenAI responses (as vLLM 0.8.5
 * shapes them): choices, logprobs, usage, and the `moi` object saying which mixing ran.
 */
import { planRowMix, type MixOptions, type MixSettings, type SoftOptions } from '@moi/moi';
import type { SamplingParams } from '@moi/core';
import type { GenerateRequest, TokenLogprobs } from '@moi/engine';
import type { Tokenizer } from '@moi/engine';
import type { Engine } from '@moi/engine';
import { ApiError, fromEngine } from './errors.ts';
import type { ChatBody, CompletionBody } from './schema.ts';

type Body = CompletionBody | ChatBody;

/** MoI options of a request over the server's defaults (flags, then MIXINPUTS_BETA). */
export function mixOf(body: Body, defaults: MixOptions): MixOptions {
  const m: MixOptions = { ...defaults };
  if (body.moi_mode != null || body.moi_beta != null) {
    // the request's own choice: a β alone picks moi/direct as MIXINPUTS_BETA would
    m.mode = body.moi_mode ?? undefined;
    if (m.mode === undefined) delete m.mode;
  }
  if (body.moi_beta != null) m.beta = body.moi_beta;
  if (body.moi_topk != null) m.topK = body.moi_topk;
  if (body.moi_prior != null) m.prior = body.moi_prior;
  const soft: SoftOptions = {
    thinkEnd: body.think_end ?? undefined, thinkEndId: body.think_end_id ?? undefined,
    coldStopEntropy: body.cold_stop_entropy ?? undefined, coldStopSteps: body.cold_stop_steps ?? undefined,
    afterThinking: {
      temperature: body.after_thinking_temperature ?? undefined, topP: body.after_thinking_top_p ?? undefined,
      topK: body.after_thinking_top_k ?? undefined, minP: body.after_thinking_min_p ?? undefined,
    },
    noise: body.soft_noise ?? undefined, gumbelTau: body.gumbel_tau ?? undefined, dirichletAlpha: body.dirichlet_alpha ?? undefined,
  };
  const given = Object.values(soft).some((v) => v !== undefined && (typeof v !== 'object' || Object.values(v).some((x) => x !== undefined)));
  if (given) m.soft = { ...defaults.soft, ...soft, afterThinking: { ...defaults.soft?.afterThinking, ...soft.afterThinking } };
  return m;
}

/** Sampling of a request (only what it gives; generation_config fills the rest). */
export function samplingOf(body: Body, logprobs: number | undefined): Partial<SamplingParams> {
  const s: Partial<SamplingParams> = {};
  if (body.temperature != null) s.temperature = body.temperature;
  if (body.top_p != null) s.topP = body.top_p;
  if (body.top_k != null) s.topK = body.top_k < 0 ? 0 : body.top_k;
  if (body.min_p != null) s.minP = body.min_p;
  if (body.repetition_penalty != null) s.repetitionPenalty = body.repetition_penalty;
  if (body.presence_penalty != null) s.presencePenalty = body.presence_penalty;
  if (body.frequency_penalty != null) s.frequencyPenalty = body.frequency_penalty;
  if (body.seed != null) s.seed = body.seed;
  if (logprobs !== undefined) s.logprobs = logprobs;
  return s;
}

/** The `moi` object of a response: the mixing that ran. */
export interface MoiReport {
  mode: MixSettings['mode'];
  beta: number | null;
  top_k: number | 'all' | null;
  prior: string | null;
  think_end_id?: number | null;
}

export function moiReport(settings: MixSettings): MoiReport {
  if (settings.mode === 'standard') return { mode: 'standard', beta: null, top_k: null, prior: null };
  return {
    mode: settings.mode, beta: settings.mode === 'moi' ? settings.beta : null, top_k: settings.topK, prior: settings.prior,
    ...(settings.soft ? { think_end_id: settings.soft.thinkEndId } : {}),
  };
}

/**
 * The engine requests of one prompt: validated now (MoI settings through planRowMix, context
 * length), so that a bad request is a 400 before any work. n > 1: seeds seed, seed+1, ...
 */
export function buildRequests(engine: Engine, body: Body, o: {
  promptIds: number[]; maxTokens: number | null | undefined; logprobs: number | undefined; maxModelLen: number; mixDefaults: MixOptions;
}): { requests: GenerateRequest[]; moi: MoiReport } {
  const mix = mixOf(body, o.mixDefaults);
  const sampling = samplingOf(body, o.logprobs);
  let plan;
  try {
    plan = planRowMix({ defaultMode: 'standard', ...mix }, sampling, { vocabSize: engine.spec.vocabSize, tokenizer: engine.tokenizer });
  } catch (e) {
    throw fromEngine(e, 'moi_mode');
  }
  const p = o.promptIds.length;
  if (p >= o.maxModelLen) {
    throw new ApiError(400, `This model's maximum context length is ${o.maxModelLen} tokens. However, your prompt has ${p} tokens. Please reduce the length of the prompt.`, 'messages' in body ? 'messages' : 'prompt');
  }
  if (o.maxTokens != null && p + o.maxTokens > o.maxModelLen) {
    throw new ApiError(400, `This model's maximum context length is ${o.maxModelLen} tokens. However, you requested ${p + o.maxTokens} tokens ` +
      `(${p} in the prompt, ${o.maxTokens} in the completion). Please reduce the length of the prompt or completion.`, 'max_tokens');
  }
  for (const id of o.promptIds) {
    if (id >= engine.spec.vocabSize) throw new ApiError(400, `token id ${id} is outside the vocabulary (0..${engine.spec.vocabSize - 1})`, 'prompt');
  }
  for (const id of body.stop_token_ids ?? []) {
    if (id >= engine.spec.vocabSize) throw new ApiError(400, `stop token id ${id} is outside the vocabulary`, 'stop_token_ids');
  }
  const stop = body.stop == null ? undefined : typeof body.stop === 'string' ? [body.stop] : body.stop;
  const n = body.n ?? 1;
  const requests = Array.from({ length: n }, (_, i): GenerateRequest => ({
    promptIds: o.promptIds,
    maxTokens: o.maxTokens ?? o.maxModelLen - p,
    sampling: { ...sampling, ...(sampling.seed !== undefined ? { seed: (sampling.seed + i) >>> 0 } : {}) },
    mix,
    stop: stop?.filter((s) => s.length > 0),
    ignoreEos: body.ignore_eos ?? false,
    stopTokenIds: body.stop_token_ids ?? undefined,
    skipSpecialTokens: body.skip_special_tokens ?? true,
  }));
  return { requests, moi: moiReport(plan.settings) };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usage(prompt: number, completion: number, cached: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
}

/** A token's text for logprobs (its own decode; ids without a tokenizer). */
export function tokenText(tok: Tokenizer | null, id: number): string {
  return tok ? tok.decode([id], { skipSpecialTokens: false }) : String(id);
}

/** Completions' logprobs object, accumulated token by token. */
export class CompletionLogprobs {
  tokens: string[] = [];
  token_logprobs: number[] = [];
  top_logprobs: Record<string, number>[] | null = null;
  text_offset: number[] = [];
  constructor(private readonly tok: Tokenizer | null, private offset = 0) {}

  add(id: number, text: string, lp: TokenLogprobs, top: number): void {
    this.tokens.push(tokenText(this.tok, id));
    this.token_logprobs.push(lp.logprob);
    this.text_offset.push(this.offset);
    this.offset += text.length;
    if (top > 0) {
      this.top_logprobs ??= [];
      this.top_logprobs.push(Object.fromEntries((lp.top ?? []).slice(0, top).map((t) => [tokenText(this.tok, t.id), t.logprob])));
    }
  }

  json() {
    return { tokens: this.tokens, token_logprobs: this.token_logprobs, top_logprobs: this.top_logprobs, text_offset: this.text_offset };
  }
}

/** Chat's logprobs entry of one token. */
export function chatLogprob(tok: Tokenizer | null, id: number, lp: TokenLogprobs, top: number) {
  const entry = (tid: number, logprob: number) => {
    const token = tokenText(tok, tid);
    return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
  };
  return { ...entry(id, lp.logprob), top_logprobs: (lp.top ?? []).slice(0, top).map((t) => entry(t.id, t.logprob)) };
}

/** Text of a chat message's content (a string, or text parts). */
export function contentText(content: ChatBody['messages'][number]['content']): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  return content.map((p) => p.text).join('');
}
