/**
 * Prompt encoding for the server, off the event loop where it could take long. Short texts
 * (at most `inlineChars` characters in all) are encoded right away (a few ms); longer ones go to
 * one worker thread (tokenize-worker.ts) that holds its own copy of the same tokenizer, so that /health and every stream keep being served meanwhile. The
 * worker starts on first use and is ended by close(). Its errors come back as the same typed
 * errors (UsageError, ModelError) the inline path throws.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ModelError, MoiError, UsageError } from '@moi/core';
import { encodeChat, encodePrompt, type ChatMessage, type ChatTemplateSource, type Tokenizer } from '@moi/engine';

/** What the worker is started with. */
export interface EncoderSetup {
  /** the folder the tokenizer is loaded from (the engine's model folder) */
  dir: string;
  template: ChatTemplateSource | null;
}

/** How a conversation is encoded (vLLM's chat fields). */
export interface ChatEncoding {
  addGenerationPrompt: boolean;
  continueFinalMessage?: boolean;
  addSpecialTokens?: boolean;
  extra?: Record<string, unknown>;
}

export type EncodeJob =
  | { id: number; kind: 'prompts'; texts: string[]; addSpecialTokens: boolean }
  | ({ id: number; kind: 'chat'; messages: ChatMessage[] } & ChatEncoding);

/** A completion prompt's ids: BOS as the tokenizer adds it, or none (vLLM's add_special_tokens: false). */
export function encodeCompletionPrompt(tok: Tokenizer, text: string, addSpecialTokens: boolean): number[] {
  return addSpecialTokens ? encodePrompt(tok, text) : tok.encode(text, { addSpecialTokens: false });
}

/** A conversation's ids with the server's template and the request's chat fields. */
export function encodeConversation(
  tok: Tokenizer,
  template: ChatTemplateSource | null,
  messages: ChatMessage[],
  o: ChatEncoding,
): number[] {
  return encodeChat(tok, messages, {
    template: template ?? undefined,
    addGenerationPrompt: o.addGenerationPrompt,
    continueFinalMessage: o.continueFinalMessage,
    addSpecialTokens: o.addSpecialTokens,
    extra: o.extra,
  });
}

export type EncodeReply =
  | { id: number; ids: number[][] }
  | { id: number; error: { name: string; message: string; code?: string; field?: string } };

/** Prompts longer than this (characters) are encoded on the worker (default). */
export const DEFAULT_INLINE_CHARS = 8192;

/** The worker's entry: the .ts source under tsx (tests, `npx tsx`), the compiled .js in dist/. */
function startWorker(setup: EncoderSetup): Worker {
  const self = import.meta.url;
  if (self.endsWith('.ts')) {
    const entry = new URL('./tokenize-worker.ts', self).href;
    // tsx's ESM api, as its package exports it to `import` (tsx registers itself in this thread only)
    const pkgFile = createRequire(self).resolve('tsx/package.json');
    const api = (
      JSON.parse(readFileSync(pkgFile, 'utf8')) as { exports: Record<string, { import: { default: string } }> }
    ).exports['./esm/api'].import.default;
    const tsx = pathToFileURL(path.join(path.dirname(pkgFile), api)).href;
    const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
    return new Worker(boot, { eval: true, workerData: setup });
  }
  return new Worker(new URL('./tokenize-worker.js', self), { workerData: setup });
}

function rebuild(e: { name: string; message: string; code?: string; field?: string }): Error {
  const opts = e.field !== undefined ? { field: e.field } : undefined;
  if (e.name === 'UsageError') return new UsageError(e.code ?? 'E_USAGE', e.message, opts);
  if (e.name === 'ModelError') return new ModelError(e.code ?? 'E_MODEL', e.message, opts);
  if (e.code !== undefined) return new MoiError(e.code, e.message, opts);
  return new Error(e.message);
}

export class PromptEncoder {
  private worker: Worker | null = null;
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (ids: number[][]) => void; reject: (e: Error) => void }>();

  constructor(
    private readonly tok: Tokenizer,
    private readonly setup: EncoderSetup,
    readonly inlineChars = DEFAULT_INLINE_CHARS,
  ) {}

  /**
   * Completion prompts' ids (BOS as the tokenizer adds it), one list per text. The request's
   * characters in all decide where: many short prompts are as long a job as one long one.
   */
  async prompts(texts: string[], addSpecialTokens = true): Promise<number[][]> {
    const chars = texts.reduce((n, t) => n + t.length, 0);
    if (chars <= this.inlineChars) return texts.map((t) => encodeCompletionPrompt(this.tok, t, addSpecialTokens));
    return this.send({ id: 0, kind: 'prompts', texts, addSpecialTokens });
  }

  /** A conversation's ids, rendered with the server's chat template. */
  async chat(messages: ChatMessage[], o: ChatEncoding): Promise<number[]> {
    const chars = messages.reduce((n, m) => n + m.content.length, 0);
    if (chars <= this.inlineChars) return encodeConversation(this.tok, this.setup.template, messages, o);
    return (await this.send({ id: 0, kind: 'chat', messages, ...o }))[0];
  }

  /** End the worker (pending encodings fail). */
  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }

  private send(job: EncodeJob): Promise<number[][]> {
    const w = (this.worker ??= this.spawn());
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      w.postMessage({ ...job, id });
    });
  }

  private spawn(): Worker {
    const w = startWorker(this.setup);
    w.unref(); // an idle encoder never keeps the process alive
    w.on('message', (r: EncodeReply) => {
      const p = this.waiting.get(r.id);
      if (!p) return;
      this.waiting.delete(r.id);
      if ('ids' in r) p.resolve(r.ids);
      else p.reject(rebuild(r.error));
    });
    const fail = (e: Error) => {
      if (this.worker === w) this.worker = null;
      for (const p of this.waiting.values()) p.reject(e);
      this.waiting.clear();
    };
    w.on('error', (e) => fail(new MoiError('E_INTERNAL', `the tokenizing thread failed: ${e.message}`)));
    w.on('exit', (code) => fail(new MoiError('E_INTERNAL', `the tokenizing thread ended (exit code ${code})`)));
    return w;
  }
}
