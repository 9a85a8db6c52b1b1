/**
 * A multi-turn chat over one KV cache. Each turn re-renders the whole conversation with the chat
 * template, keeps the longest prefix the cache already holds, rolls the cache back to it and
 * prefills only the rest. So turn n costs the new turn's tokens, not the whole history, and the
 * reply equals what a fresh generation over the rendered conversation would give.
 *
 * With MoI settings the cache holds keys/values computed from the mixed inputs of earlier replies
 * (as the reference decoder does); the ids recorded for them are the sampled tokens.
 *
 * Issue 13, where the cached ids and the re-rendered conversation part: right at the reply. The
 * reply's text is streamed relative to the prompt, so a SentencePiece reply starts " was ...";
 * a template that writes its own separator before an assistant's content (Llama 2's
 * "[/INST] {{ content }}") then renders a double space, one that writes none renders exactly the
 * generated ids. So the reply is recorded as whichever of its text and its text as decoded alone
 * (transformers' convention, `replyContent`) re-renders to more of the cached ids. Where the
 * model's first token has no leading space ("." or "enly") a template's separator still makes the
 * rendered text differ from what was generated: the cache is kept up to the reply and the rest
 * prefilled, so that the next reply equals a fresh run over the rendered conversation.
 */
import { UsageError } from '@moi/core';
import type { KVCache } from '@moi/models';
import { encodeChat, type ChatMessage, type ChatTemplateSource, type Tokenizer } from '../text/index.ts';
import type { Engine } from './engine.ts';
import { generate, type DoneEvent, type GenerateRequest, type GenerationEvent } from './generate.ts';

export interface ChatSessionOptions {
  /** system prompt, kept across /reset */
  system?: string;
  /** most tokens the cache holds (prompt + replies); capped by max_position_embeddings */
  maxContext?: number;
  /** a template to use instead of the tokenizer's (e.g. for a base model without one) */
  chatTemplate?: string;
  /** extra template variables, e.g. {enable_thinking: false} */
  templateExtra?: Record<string, unknown>;
  /** defaults for every turn: max tokens, sampling, MoI settings, stop strings */
  defaults?: Omit<GenerateRequest, 'promptIds'>;
}

export interface SendOptions extends Omit<GenerateRequest, 'promptIds'> {
  signal?: AbortSignal;
  onPrefill?: (p: { row: number; done: number; total: number }) => void;
  /** prompt tokens per prefill forward (see GenerateOptions.prefillChunk) */
  prefillChunk?: number;
}

/** What one turn cost. */
export interface TurnStats {
  /** tokens of the rendered conversation (the whole prompt of this turn) */
  promptTokens: number;
  /** of those, tokens the cache already held and kept */
  reusedTokens: number;
  /** tokens run through the model before the first reply token */
  prefilledTokens: number;
  generatedTokens: number;
  finishReason: DoneEvent['finishReason'];
}

export const DEFAULT_MAX_CONTEXT = 2048;

/** Length of the common prefix of two id lists. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * The reply's text as the conversation records it: the streamed text less the one leading space
 * that SentencePiece's decoder strips from a text's first token (transformers' decode of the reply
 * alone), where the first token alone decodes without it.
 */
export function replyContent(tok: Tokenizer, done: Pick<DoneEvent, 'text' | 'tokens'>): string {
  if (!done.text.startsWith(' ') || done.tokens.length === 0) return done.text;
  const alone = tok.decode(done.tokens.slice(0, 1), { skipSpecialTokens: true });
  return alone !== '' && !alone.startsWith(' ') ? done.text.slice(1) : done.text;
}

export class ChatSession {
  readonly messages: ChatMessage[] = [];
  /** stats of each turn since the last reset */
  readonly turns: TurnStats[] = [];
  /** tokens the cache can hold */
  readonly capacity: number;
  private readonly tok: Tokenizer;
  private readonly template: ChatTemplateSource;
  private cache: KVCache[];
  /** the ids whose keys/values the cache holds, in order */
  private held: number[] = [];
  private busy = false;

  constructor(
    readonly engine: Engine,
    readonly opts: ChatSessionOptions = {},
  ) {
    const tok = engine.tokenizer;
    if (!tok) throw new UsageError('E_NO_TOKENIZER', `${engine.dir}: chat needs a tokenizer.json`);
    const chatTemplate = opts.chatTemplate ?? tok.chatTemplate;
    if (chatTemplate === undefined) {
      throw new UsageError(
        'E_NO_CHAT_TEMPLATE',
        `${tok.chatTemplateOrigin ?? engine.dir}: this model has no chat template ` +
          '(no chat_template in tokenizer_config.json, no chat_template.jinja); chat needs one',
      );
    }
    this.tok = tok;
    this.template = {
      chatTemplate,
      bosToken: tok.bosToken,
      eosToken: tok.eosToken,
      padToken: tok.padToken,
      unkToken: tok.unkToken,
      chatTemplateOrigin: opts.chatTemplate !== undefined ? 'the given chat template' : tok.chatTemplateOrigin,
      source: tok.source,
    };
    const max = opts.maxContext ?? DEFAULT_MAX_CONTEXT;
    if (!Number.isInteger(max) || max < 2)
      throw new UsageError('E_USAGE', `max context must be an integer ≥ 2, got ${max}`);
    this.capacity = Math.min(max, engine.spec.maxPositionEmbeddings);
    this.cache = engine.model.makeCache(1, this.capacity);
    if (opts.system) this.messages.push({ role: 'system', content: opts.system });
  }

  /** Tokens the cache holds now. */
  get cachedTokens(): number {
    return this.held.length;
  }

  /** The ids the cache holds (a copy). */
  get cachedIds(): number[] {
    return this.held.slice();
  }

  /** The prompt ids of the conversation so far plus a next user message (nothing is changed). */
  render(messages: readonly ChatMessage[] = this.messages): number[] {
    return encodeChat(this.tok, messages, {
      template: this.template,
      addGenerationPrompt: true,
      extra: this.opts.templateExtra,
    });
  }

  /**
   * One turn: add the user message, prefill what the cache lacks, stream the reply's events.
   * The last event is the done event; the reply is then in `messages` and its cost in `turns`.
   * A failure before generation (context overflow, a template that rejects the conversation)
   * throws and leaves the conversation as it was before the call.
   */
  async *send(userText: string, opts: SendOptions = {}): AsyncGenerator<GenerationEvent> {
    if (this.busy) throw new UsageError('E_CHAT_BUSY', 'chat: a reply is still being generated');
    this.busy = true;
    const before = this.messages.length;
    try {
      this.messages.push({ role: 'user', content: userText });
      const ids = this.render();
      // keep the longest cached prefix, but prefill at least one token (its logits start the reply)
      const keep = Math.min(commonPrefix(this.held, ids), ids.length - 1);
      this.rollBack(keep);
      const reused = this.held.length;
      const suffix = ids.slice(reused);
      if (reused + suffix.length >= this.capacity) {
        throw new UsageError(
          'E_CONTEXT',
          `chat: the conversation has ${ids.length} tokens but the session holds at most ` +
            `${this.capacity}; type /reset to start a new conversation` +
            (this.capacity < this.engine.spec.maxPositionEmbeddings ? ' (or raise --max-context)' : ''),
        );
      }
      const merged: SendOptions = { ...this.opts.defaults };
      for (const [k, v] of Object.entries(opts)) if (v !== undefined) (merged as Record<string, unknown>)[k] = v;
      const { signal, onPrefill, prefillChunk, ...request } = merged;
      let done: DoneEvent | null = null;
      try {
        for await (const e of generate(this.engine, [{ ...request, promptIds: suffix }], {
          cache: this.cache,
          signal,
          onPrefill,
          prefillChunk,
        })) {
          if (e.type === 'done') done = e;
          yield e;
        }
      } finally {
        // whatever ran, the cache now holds its first `offset` tokens of prompt + reply (the last
        // sampled token and an EOS were never fed)
        const fed = [...ids, ...(done?.tokens ?? [])];
        this.held = fed.slice(0, this.cache[0].offset[0]);
      }
      if (!done) throw new UsageError('E_INTERNAL', 'chat: generation ended without a done event');
      if (done.finishReason === 'abort' && done.tokens.length === 0) {
        this.messages.length = before; // stopped before any reply: the turn did not happen
      } else {
        this.messages.push({ role: 'assistant', content: this.recordedReply(done) });
      }
      this.turns.push({
        promptTokens: ids.length,
        reusedTokens: reused,
        prefilledTokens: suffix.length,
        generatedTokens: done.tokens.length,
        finishReason: done.finishReason,
      });
    } catch (e) {
      this.messages.length = before;
      throw e;
    } finally {
      this.busy = false;
    }
  }

  /** Run one turn to the end and return its done event. */
  async reply(userText: string, opts: SendOptions = {}): Promise<DoneEvent> {
    let done: DoneEvent | null = null;
    for await (const e of this.send(userText, opts)) if (e.type === 'done') done = e;
    return done!;
  }

  /** Forget the conversation (the system prompt stays) and empty the cache. */
  reset(): void {
    if (this.busy) throw new UsageError('E_CHAT_BUSY', 'chat: cannot reset while a reply is being generated');
    this.messages.length = 0;
    if (this.opts.system) this.messages.push({ role: 'system', content: this.opts.system });
    this.turns.length = 0;
    for (const c of this.cache) c.reset();
    this.held = [];
  }

  dispose(): void {
    for (const c of this.cache) c.dispose();
    this.cache = [];
    this.held = [];
  }

  /** The reply as the conversation records it: the candidate text whose re-rendering keeps more of the cache. */
  private recordedReply(done: DoneEvent): string {
    const alone = replyContent(this.tok, done);
    if (alone === done.text) return done.text;
    const kept = (content: string): number => {
      try {
        return commonPrefix(this.held, this.render([...this.messages, { role: 'assistant', content }]));
      } catch {
        return -1; // a template that cannot render it
      }
    };
    return kept(alone) > kept(done.text) ? alone : done.text;
  }

  /** Roll every layer back to n tokens; where a rotating buffer cannot, start from empty. */
  private rollBack(n: number): void {
    if (n === this.held.length) return;
    const ok = this.cache.map((c) => c.truncate(0, n)).every(Boolean);
    if (ok) {
      this.held.length = n;
    } else {
      for (const c of this.cache) c.reset();
      this.held = [];
    }
  }
}
