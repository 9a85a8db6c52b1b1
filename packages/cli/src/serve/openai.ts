/**
 * OpenAI request bodies → engine requests, and the pieces of OpenAI responses (as vLLM 0.8.5
 * shapes them): choices, logprobs, usage, and the `moi` object saying which mixing ran.
 */
import type { MixOptions, MixSettings } from '@moi/moi';
import {
  requestFromSettings,
  setting,
  settingsFromFields,
  TokenTexts,
  type Endpoint,
  type GenerateRequest,
  type RequestSettings,
  type TokenLogprobs,
  type TokenPiece,
  type Tokenizer,
} from '@moi/engine';
import { ApiError } from './errors.ts';
import type { ChatBody, CompletionBody } from './schema.ts';

type Body = CompletionBody | ChatBody;

/**
 * A request's MoI options over the server's defaults (flags, then MIXINPUTS_BETA): a request that
 * gives a mode or a β chooses its own mode (a β alone picks moi/direct as MIXINPUTS_BETA would).
 */
export function mixOf(given: MixOptions | undefined, defaults: MixOptions): MixOptions {
  const m: MixOptions = { ...defaults };
  if (!given) return m;
  if (given.mode !== undefined || given.beta !== undefined) delete m.mode;
  const { soft, ...rest } = given;
  Object.assign(m, rest);
  if (soft)
    m.soft = { ...defaults.soft, ...soft, afterThinking: { ...defaults.soft?.afterThinking, ...soft.afterThinking } };
  return m;
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
    mode: settings.mode,
    beta: settings.mode === 'moi' ? settings.beta : null,
    top_k: settings.topK,
    prior: settings.prior,
    ...(settings.soft ? { think_end_id: settings.soft.thinkEndId } : {}),
  };
}

/** A request's settings-table fields as request settings (chat's top_logprobs counts only with logprobs: true). */
export function settingsOf(body: Body, endpoint: Endpoint): RequestSettings {
  const values = settingsFromFields(body as Record<string, unknown>, endpoint);
  if (endpoint === 'chat') {
    if ((body as ChatBody).logprobs) values.logprobs ??= 0;
    else delete values.logprobs;
  }
  return requestFromSettings(values);
}

/**
 * The engine requests of one prompt. Only what the engine cannot say in vLLM's words is checked
 * here (the context length); every setting is validated once, by the schema (each field's range)
 * and by the scheduler when the requests are submitted (the settings together). n > 1: seeds
 * seed, seed+1, ...
 */
export function buildRequests(
  body: Body,
  endpoint: Endpoint,
  o: {
    promptIds: number[];
    vocabSize: number;
    maxModelLen: number;
    mixDefaults: MixOptions;
  },
): GenerateRequest[] {
  const given = settingsOf(body, endpoint);
  const p = o.promptIds.length;
  const serverDefault = setting('max_tokens').server!.defaults![endpoint];
  const maxTokens = given.maxTokens ?? serverDefault ?? undefined;
  if (p >= o.maxModelLen) {
    throw new ApiError(
      400,
      `This model's maximum context length is ${o.maxModelLen} tokens. However, your prompt has ${p} tokens. Please reduce the length of the prompt.`,
      endpoint === 'chat' ? 'messages' : 'prompt',
    );
  }
  if (maxTokens !== undefined && p + maxTokens > o.maxModelLen) {
    throw new ApiError(
      400,
      `This model's maximum context length is ${o.maxModelLen} tokens. However, you requested ${p + maxTokens} tokens ` +
        `(${p} in the prompt, ${maxTokens} in the completion). Please reduce the length of the prompt or completion.`,
      'max_tokens',
    );
  }
  for (const id of o.promptIds) {
    if (id >= o.vocabSize)
      throw new ApiError(400, `token id ${id} is outside the vocabulary (0..${o.vocabSize - 1})`, 'prompt');
  }
  for (const id of body.stop_token_ids ?? []) {
    if (id >= o.vocabSize) throw new ApiError(400, `stop token id ${id} is outside the vocabulary`, 'stop_token_ids');
  }
  const sampling = given.sampling ?? {};
  const mix = mixOf(given.mix, o.mixDefaults);
  return Array.from({ length: body.n ?? 1 }, (_, i): GenerateRequest => ({
    promptIds: o.promptIds,
    maxTokens: maxTokens ?? o.maxModelLen - p,
    sampling: { ...sampling, ...(sampling.seed !== undefined ? { seed: (sampling.seed + i) >>> 0 } : {}) },
    mix,
    stop: given.stop?.filter((s) => s.length > 0),
    ignoreEos: given.ignoreEos ?? false,
    stopTokenIds: body.stop_token_ids ?? undefined,
    skipSpecialTokens: body.skip_special_tokens ?? true,
  }));
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usage(prompt: number, completion: number, cached: number): Usage {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

/**
 * One choice's token texts for its logprobs: each token's text relative to the ids before it
 * (the prompt, then the tokens chosen), so the chosen tokens concatenated are the text and
 * `text_offset` points at each; without a tokenizer, the ids as strings.
 */
export class ChoiceTokens {
  private readonly texts: TokenTexts | null;
  constructor(tok: Tokenizer | null, promptIds: readonly number[], skipSpecialTokens: boolean) {
    this.texts = tok ? new TokenTexts(tok, { context: promptIds, skipSpecialTokens }) : null;
  }

  /** The chosen token and its alternatives (the alternatives read before the token is taken). */
  take(id: number, alternatives: readonly number[]): { chosen: TokenPiece; top: TokenPiece[] } {
    if (!this.texts) {
      const plain = (t: number): TokenPiece => ({
        text: String(t),
        label: String(t),
        bytes: [...Buffer.from(String(t))],
      });
      return { chosen: plain(id), top: alternatives.map(plain) };
    }
    const top = alternatives.map((t) => this.texts!.peek(t));
    return { chosen: this.texts.next(id), top };
  }
}

/** Completions' logprobs object, accumulated token by token. */
export class CompletionLogprobs {
  tokens: string[] = [];
  token_logprobs: number[] = [];
  top_logprobs: Record<string, number>[] | null = null;
  text_offset: number[] = [];
  constructor(private offset = 0) {}

  /** Where the next token's text starts. */
  get nextOffset(): number {
    return this.offset;
  }

  add(chosen: TokenPiece, topPieces: TokenPiece[], lp: TokenLogprobs, top: number): void {
    this.tokens.push(chosen.label);
    this.token_logprobs.push(lp.logprob);
    this.text_offset.push(this.offset);
    this.offset += chosen.text.length;
    if (top > 0) {
      this.top_logprobs ??= [];
      this.top_logprobs.push(
        Object.fromEntries((lp.top ?? []).slice(0, top).map((t, i) => [topPieces[i].label, t.logprob])),
      );
    }
  }

  json() {
    return {
      tokens: this.tokens,
      token_logprobs: this.token_logprobs,
      top_logprobs: this.top_logprobs,
      text_offset: this.text_offset,
    };
  }
}

/** Chat's logprobs entry of one token. */
export function chatLogprob(chosen: TokenPiece, topPieces: TokenPiece[], lp: TokenLogprobs, top: number) {
  const entry = (p: TokenPiece, logprob: number) => ({ token: p.label, logprob, bytes: p.bytes });
  return {
    ...entry(chosen, lp.logprob),
    top_logprobs: (lp.top ?? []).slice(0, top).map((t, i) => entry(topPieces[i], t.logprob)),
  };
}

/** Text of a chat message's content (a string, or text parts). */
export function contentText(content: ChatBody['messages'][number]['content']): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  return content.map((p) => p.text).join('');
}
