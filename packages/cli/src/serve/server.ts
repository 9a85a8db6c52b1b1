/**
 * The OpenAI-compatible HTTP server (fastify) over a Scheduler: GET /v1/models,
 * POST /v1/completions, POST /v1/chat/completions, GET /health, GET /metrics.
 *
 * Shapes follow vLLM 0.8.5's OpenAI server; MoI is chosen per request with top-level `moi_*`
 * fields, and every response carries a `moi` object naming the mixing that ran. Streaming is SSE
 * (`data: {json}\n\n` ... `data: [DONE]`). A client that disconnects aborts its requests (their
 * rows are free before the next decode step).
 *
 * Safety: with an API key, every route but /health and /metrics (and every unknown path) needs
 * it, checked on the route fastify matched (never on the raw URL) in constant time. Each request's
 * work is bounded before it is admitted: list items and prompt characters (400 naming the field),
 * and long prompts are tokenized on a worker thread (tokenize.ts), never on the event loop.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import sjson from 'secure-json-parse';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { MixOptions } from '@moi/moi';
import type { Engine } from '@moi/engine';
import type { Scheduler } from '@moi/engine';
import type { DoneEvent, Endpoint, GenerateRequest, Submission } from '@moi/engine';
import type { ChatMessage, ChatTemplateSource } from '@moi/engine';
import { ApiError, fromEngine, fromZod } from './errors.ts';
import { makeMetrics, type ServerMetrics } from './metrics.ts';
import {
  buildRequests,
  chatLogprob,
  ChoiceTokens,
  CompletionLogprobs,
  contentText,
  moiReport,
  usage,
} from './openai.ts';
import { chatSchema, completionSchema, unknownFields, type ChatBody, type CompletionBody } from './schema.ts';
import { DEFAULT_MAX_LIST_ITEMS, DEFAULT_MAX_PROMPT_CHARS } from './limits.ts';
import { DEFAULT_INLINE_CHARS, PromptEncoder } from './tokenize.ts';

export interface ServerOptions {
  /** the name clients pass as `model` (and /v1/models lists) */
  modelName: string;
  /** a bearer token clients must send */
  apiKey?: string;
  /** a chat template to use instead of the tokenizer's */
  chatTemplate?: string;
  /** default MoI options (serve flags; MIXINPUTS_BETA applies as in the CLI) */
  mix?: MixOptions;
  /** largest request body in bytes (default 4 MiB) */
  bodyLimit?: number;
  /** one line per request and warnings (default: stderr) */
  log?: (line: string) => void;
  /** most characters of a request's prompt text (all prompts, or all messages), checked before tokenizing (default 1 MiB) */
  maxPromptChars?: number;
  /** most items of a request's lists (prompts, messages, content parts), checked before parsing them (default 2048) */
  maxListItems?: number;
  /** prompts longer than this (characters) are tokenized on the worker thread (default 8192) */
  inlineTokenizeChars?: number;
}

/** Routes (as fastify matched them) that answer without the API key. Every other one needs it. */
const PUBLIC_ROUTES = new Set(['/health', '/metrics']);

export interface MoiServer {
  app: FastifyInstance;
  metrics: ServerMetrics;
  /** ends the tokenizing thread (also done by app.close()) */
  encoder: PromptEncoder | null;
}

/** Constant-time comparison of a bearer token (hashes first, so lengths leak nothing). */
function sameSecret(given: string, want: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(want).digest();
  return timingSafeEqual(a, b);
}

const now = () => Math.floor(Date.now() / 1000);

const NO_TEMPLATE =
  'this model has no chat template, so /v1/chat/completions cannot format messages: ' +
  'start the server with --chat-template FILE (a Jinja template), or send a raw prompt to /v1/completions';

/**
 * Fields the server knows but cannot honour: a 400 naming the field, as vLLM refuses what it
 * lacks, rather than a silent difference.
 */
function refuseUnsupported(body: CompletionBody | ChatBody): void {
  const n = body.n ?? 1;
  if (body.best_of != null && body.best_of !== n) {
    throw new ApiError(
      400,
      `best_of ${body.best_of} is not supported (only best_of = n, here ${n}: every sample is returned)`,
      'best_of',
    );
  }
  const format = body.response_format?.type;
  if (format != null && format !== 'text') {
    throw new ApiError(
      400,
      `response_format ${JSON.stringify(format)} is not supported (structured output is not implemented; only "text")`,
      'response_format',
    );
  }
  const chat = body as ChatBody;
  if (chat.tools?.length) throw new ApiError(400, 'tools are not supported (no tool calling)', 'tools');
  if (chat.tool_choice != null && chat.tool_choice !== 'none' && chat.tool_choice !== 'auto') {
    throw new ApiError(400, 'tool_choice is not supported (no tool calling)', 'tool_choice');
  }
  if (chat.functions?.length) throw new ApiError(400, 'functions are not supported (no tool calling)', 'functions');
  if (chat.function_call != null && chat.function_call !== 'none' && chat.function_call !== 'auto') {
    throw new ApiError(400, 'function_call is not supported (no tool calling)', 'function_call');
  }
}

/** One prompt of a request: its ids, text for echo, and its choices' engine requests. */
interface PromptRun {
  ids: number[];
  requests: GenerateRequest[];
  /** echo: what goes before each choice's text (completions: the prompt; chat: the final message) */
  echo: string;
}

/** One choice being generated: its submission's events, folded. */
interface Choice {
  index: number;
  promptTokens: number;
  promptIds: number[];
  /** its streamed/collected text (echo included) */
  text: string;
  tokens: number;
  done: DoneEvent | null;
  firstTokenAt: number;
}

export function buildServer(engine: Engine, scheduler: Scheduler, opts: ServerOptions): MoiServer {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimit ?? 4 * 1024 * 1024,
    return503OnClosing: true,
  });
  const maxPromptChars = opts.maxPromptChars ?? DEFAULT_MAX_PROMPT_CHARS;
  const maxListItems = opts.maxListItems ?? DEFAULT_MAX_LIST_ITEMS;
  const metrics = makeMetrics(scheduler, opts.modelName);
  const tok = engine.tokenizer;
  const mixDefaults: MixOptions = { defaultMode: 'standard', ...opts.mix };
  const created = now();
  if (tok?.chatTemplate === undefined && opts.chatTemplate === undefined) log(`warning: ${NO_TEMPLATE}`);

  // ---- one log line per request, and auth on the routed path
  app.addHook('onRequest', async (req, reply) => {
    const t0 = performance.now();
    // read now: once a client is gone its socket has no address any more
    const address = req.ip ?? req.socket.remoteAddress ?? 'unknown';
    reply.raw.once('close', () => {
      const info = (req as unknown as { moiInfo?: string }).moiInfo;
      const status = reply.raw.writableFinished ? reply.raw.statusCode : 499;
      log(
        `${address} "${req.method} ${req.url}" ${status} ${(performance.now() - t0).toFixed(0)}ms${info ? ` ${info}` : ''}`,
      );
    });
    // The route fastify matched (undefined: no route, a 404), not the raw URL: "/%761/models"
    // and "/v1/models" are the same route. Every route needs the key but the public ones.
    const route = req.routeOptions.url;
    if (opts.apiKey !== undefined && (route === undefined || !PUBLIC_ROUTES.has(route))) {
      const h = req.headers.authorization ?? '';
      const token = h.startsWith('Bearer ') ? h.slice(7) : '';
      if (!sameSecret(token, opts.apiKey))
        throw new ApiError(401, 'invalid or missing API key (Authorization: Bearer ...)', null);
    }
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413)
      e = new ApiError(413, `request body too large (limit ${app.initialConfig.bodyLimit} bytes)`);
    else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500)
      e = new ApiError(err.statusCode, err.message);
    else {
      log(`error: ${err.stack ?? err.message}`);
      e = fromEngine(err);
    }
    void reply.status(e.status).send(e.body());
  });
  app.setNotFoundHandler((req, reply) => {
    const e = new ApiError(404, `no route ${req.method} ${req.url}`);
    void reply.status(404).send(e.body());
  });

  // ---- JSON bodies: secure-json-parse, as fastify's own parser, but its errors say what was wrong
  // (fastify's says "Body is not valid JSON" for a "__proto__" key too)
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.length === 0) return done(new ApiError(400, 'the body is empty (expected a JSON object)'), undefined);
    try {
      done(null, sjson.parse(text, null, { protoAction: 'error', constructorAction: 'error' }));
    } catch (err) {
      if (!/forbidden prototype property/.test((err as Error).message)) {
        return done(new ApiError(400, `the body is not valid JSON: ${(err as Error).message}`), undefined);
      }
      // which key: a parse that lets "__proto__" through but not "constructor.prototype" tells
      let key = '__proto__';
      try {
        sjson.parse(text, null, { protoAction: 'ignore', constructorAction: 'error' });
      } catch {
        key = 'constructor.prototype';
      }
      done(new ApiError(400, `the body has a "${key}" key, which is refused (prototype poisoning)`, key), undefined);
    }
  });

  // ---- simple endpoints
  // vLLM: an empty 200
  app.get('/health', async (_req, reply) => reply.code(200).send());
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/v1/models', async () => ({
    object: 'list',
    data: [
      {
        // the served name only: never the model's folder on this machine
        id: opts.modelName,
        object: 'model',
        created,
        owned_by: 'moi',
        root: opts.modelName,
        parent: null,
        max_model_len: scheduler.maxModelLen,
        permission: [],
        // what the weight matrices are held as (--dtype resolved by the loader), and why
        dtype: engine.loaded.dtype,
        dtypeNote: engine.loaded.dtypeNote,
      },
    ],
  }));

  /** A request's lists, bounded before zod walks them (a 700k-item list is refused at once). */
  function checkLists(body: unknown): void {
    if (!body || typeof body !== 'object') return;
    const b = body as Record<string, unknown>;
    const tooMany = (what: string, n: number, limit: number, flag: string) =>
      new ApiError(400, `${what} has ${n} items; the limit is ${limit} (${flag})`, what.split('[')[0]);
    // a token-id list longer than the context is refused as buildRequests would (vLLM's words)
    const tooLong = (n: number) =>
      new ApiError(
        400,
        `This model's maximum context length is ${scheduler.maxModelLen} tokens. ` +
          `However, your prompt has ${n} tokens. Please reduce the length of the prompt.`,
        'prompt',
      );
    if (Array.isArray(b.prompt)) {
      if (typeof b.prompt[0] === 'number') {
        if (b.prompt.length >= scheduler.maxModelLen) throw tooLong(b.prompt.length);
      } else {
        if (b.prompt.length > maxListItems) throw tooMany('prompt', b.prompt.length, maxListItems, '--max-list-items');
        for (const item of b.prompt)
          if (Array.isArray(item) && item.length >= scheduler.maxModelLen) throw tooLong(item.length);
      }
    }
    if (Array.isArray(b.messages)) {
      if (b.messages.length > maxListItems)
        throw tooMany('messages', b.messages.length, maxListItems, '--max-list-items');
      for (const [i, m] of b.messages.entries()) {
        const c = (m as { content?: unknown } | null)?.content;
        if (Array.isArray(c) && c.length > maxListItems)
          throw tooMany(`messages[${i}].content`, c.length, maxListItems, '--max-list-items');
      }
    }
  }

  /** The prompt text's size, bounded before it is tokenized. */
  function checkChars(field: string, chars: number): void {
    if (chars > maxPromptChars) {
      throw new ApiError(
        400,
        `${field} has ${chars} characters; the limit is ${maxPromptChars} (--max-prompt-chars)`,
        field,
      );
    }
  }

  function parse<S extends z.AnyZodObject>(schema: S, req: FastifyRequest, route: string): z.infer<S> {
    checkLists(req.body);
    const r = schema.safeParse(req.body);
    if (!r.success) throw fromZod(r.error);
    const unknown = unknownFields(schema, req.body);
    if (unknown.length) log(`warning: ${route}: unknown fields ignored: ${unknown.join(', ')}`);
    const model = (r.data as { model?: string | null }).model;
    if (model != null && model !== opts.modelName)
      throw new ApiError(404, `The model \`${model}\` does not exist.`, 'model');
    return r.data;
  }

  // ---- generation: submit every choice, then stream or collect
  async function run(
    req: FastifyRequest,
    reply: FastifyReply,
    kind: 'text_completion' | 'chat.completion',
    prompts: PromptRun[],
    body: CompletionBody | ChatBody,
    role = 'assistant',
  ) {
    const endpoint: Endpoint = kind === 'chat.completion' ? 'chat' : 'completions';
    // the requests' own logprobs count (chat: top_logprobs with logprobs: true)
    const logprobs = prompts[0].requests[0].sampling?.logprobs;
    const opt = { logprobs, chatLogprobs: endpoint === 'chat' && Boolean((body as ChatBody).logprobs) };
    const id = `${kind === 'chat.completion' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
    const ac = new AbortController();
    const res: ServerResponse = reply.raw;
    res.once('close', () => {
      if (!res.writableFinished) ac.abort();
    });
    if (res.destroyed && !res.writableFinished) ac.abort(); // gone while its prompt was tokenized
    const t0 = performance.now();
    const subs: { choice: Choice; echo: string; skipSpecial: boolean; events: Submission }[] = [];
    try {
      // the scheduler validates each request's settings together (once) as it takes it
      for (const [pi, p] of prompts.entries()) {
        for (const [ci, r] of p.requests.entries()) {
          const choice: Choice = {
            index: pi * p.requests.length + ci,
            promptTokens: p.ids.length,
            promptIds: p.ids,
            text: p.echo,
            tokens: 0,
            done: null,
            firstTokenAt: 0,
          };
          subs.push({
            choice,
            echo: p.echo,
            skipSpecial: r.skipSpecialTokens ?? true,
            events: scheduler.submit(r, { signal: ac.signal }),
          });
        }
      }
    } catch (e) {
      ac.abort();
      throw fromEngine(e, endpoint === 'chat' ? 'messages' : 'prompt', endpoint);
    }
    const moi = moiReport(subs[0].events.settings);
    const stream = Boolean(body.stream);
    const includeUsage = Boolean(body.stream_options?.include_usage);
    const chat = kind === 'chat.completion';
    const objectName = chat ? (stream ? 'chat.completion.chunk' : 'chat.completion') : 'text_completion';
    const write = (obj: unknown) => {
      if (!res.writableEnded && !res.destroyed) res.write(`data: ${JSON.stringify(obj)}\n\n`);
    };
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({
      id,
      object: objectName,
      created: now(),
      model: opts.modelName,
      choices,
      ...extra,
    });
    if (stream) {
      reply.hijack();
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
      });
    }
    const collected: {
      choice: Choice;
      logprobs: CompletionLogprobs | { content: ReturnType<typeof chatLogprob>[] } | null;
    }[] = [];
    const top = opt.logprobs ?? 0;

    const consume = async (s: (typeof subs)[number]) => {
      const { choice } = s;
      const wantLp = opt.logprobs !== undefined || opt.chatLogprobs;
      const lp = wantLp
        ? chat
          ? { content: [] as ReturnType<typeof chatLogprob>[] }
          : new CompletionLogprobs(s.echo.length)
        : null;
      const texts = wantLp ? new ChoiceTokens(tok, choice.promptIds, s.skipSpecial) : null;
      collected.push({ choice, logprobs: lp });
      // the text streamed so far, without the echo (to find the tail the done event adds)
      let streamed = '';
      if (stream && chat)
        write(
          chunk([{ index: choice.index, delta: { role, content: '' }, logprobs: null, finish_reason: null }], { moi }),
        );
      if (stream && s.echo) {
        write(
          chunk([
            chat
              ? { index: choice.index, delta: { content: s.echo }, logprobs: null, finish_reason: null }
              : { index: choice.index, text: s.echo, logprobs: null, finish_reason: null, stop_reason: null },
          ]),
        );
      }
      // The last token's chunk waits until the next event or the next turn of the event loop: a
      // done event of the same step goes onto it (finish_reason on the last token's chunk, as vLLM
      // sends it) rather than into an empty chunk of its own.
      let pending: Record<string, unknown> | null = null;
      let timer: NodeJS.Immediate | null = null;
      const writePending = () => {
        if (timer) clearImmediate(timer);
        timer = null;
        if (pending) write(chunk([pending]));
        pending = null;
      };
      try {
        for await (const e of s.events) {
          if (e.type === 'token') {
            if (!choice.firstTokenAt) {
              choice.firstTokenAt = performance.now();
              metrics.ttft.observe((choice.firstTokenAt - t0) / 1000);
            }
            choice.tokens++;
            choice.text += e.text;
            streamed += e.text;
            let entry: unknown = null;
            if (lp && texts && e.logprobs) {
              const { chosen, top: alts } = texts.take(
                e.token,
                (e.logprobs.top ?? []).slice(0, top).map((t) => t.id),
              );
              if (lp instanceof CompletionLogprobs) {
                const one = new CompletionLogprobs(lp.nextOffset);
                one.add(chosen, alts, e.logprobs, top);
                lp.add(chosen, alts, e.logprobs, top);
                entry = one.json();
              } else {
                const c = chatLogprob(chosen, alts, e.logprobs, top);
                lp.content.push(c);
                entry = { content: [c] };
              }
            }
            if (stream) {
              // a chunk per token, even while its text is incomplete (''), as vLLM's completions do
              writePending();
              pending = chat
                ? { index: choice.index, delta: { content: e.text }, logprobs: entry, finish_reason: null }
                : { index: choice.index, text: e.text, logprobs: entry, finish_reason: null, stop_reason: null };
              timer = setImmediate(writePending);
            }
          } else {
            choice.done = e;
            // the done event's text is final: held-back text (a partial stop string, an unfinished character) comes now
            const tail = e.text.startsWith(streamed) ? e.text.slice(streamed.length) : '';
            choice.text = s.echo + e.text;
            if (stream) {
              if (timer) clearImmediate(timer);
              timer = null;
              const last =
                pending ??
                (chat
                  ? { index: choice.index, delta: { content: '' }, logprobs: null }
                  : { index: choice.index, text: '', logprobs: null });
              pending = null;
              if (chat) (last.delta as { content: string }).content += tail;
              else last.text = (last.text as string) + tail;
              Object.assign(last, { finish_reason: e.finishReason, stop_reason: e.stopReason });
              const u =
                includeUsage && body.stream_options?.continuous_usage_stats
                  ? { usage: usage(choice.promptTokens, choice.tokens, e.stats.cachedTokens ?? 0) }
                  : {};
              write(chunk([last], { moi, ...u }));
            }
          }
        }
      } finally {
        writePending();
      }
    };

    let failure: ApiError | null = null;
    const results = await Promise.allSettled(subs.map(consume));
    for (const r of results) {
      if (r.status === 'rejected' && !failure) failure = fromEngine(r.reason);
    }
    if (failure) ac.abort(); // the other choices of this request stop too
    // metrics, and the log line
    let promptTokens = 0;
    let completionTokens = 0;
    let cached = 0;
    const seenPrompt = new Set<number>();
    for (const { choice } of collected) {
      completionTokens += choice.tokens;
      const pi = Math.floor(choice.index / (body.n ?? 1));
      if (!seenPrompt.has(pi)) {
        seenPrompt.add(pi);
        promptTokens += choice.promptTokens;
        cached += choice.done?.stats.cachedTokens ?? 0;
      }
      if (choice.done) {
        const end = performance.now();
        metrics.e2e.observe((end - t0) / 1000);
        if (choice.tokens > 1) metrics.tpot.observe((end - choice.firstTokenAt) / 1000 / (choice.tokens - 1));
        metrics.requestSuccess.inc({ finished_reason: choice.done.finishReason });
      }
    }
    const u = usage(promptTokens, completionTokens, cached);
    (req as unknown as { moiInfo?: string }).moiInfo =
      `prompt=${promptTokens} cached=${cached} completion=${completionTokens} moi=${moi.mode}${moi.beta !== null ? `/β${moi.beta}` : ''}` +
      `${failure ? ` error=${JSON.stringify(failure.message)}` : ''}${ac.signal.aborted && !failure ? ' aborted' : ''}`;

    if (stream) {
      if (failure) write(failure.body());
      else if (includeUsage) write(chunk([], { usage: u }));
      if (!res.writableEnded && !res.destroyed) res.end('data: [DONE]\n\n');
      return reply;
    }
    if (failure) throw failure;
    if (ac.signal.aborted && res.destroyed) return reply; // the client is gone
    collected.sort((a, b) => a.choice.index - b.choice.index);
    const choices = collected.map(({ choice, logprobs }) =>
      chat
        ? {
            index: choice.index,
            message: { role, content: choice.text, tool_calls: [] },
            logprobs: logprobs && !(logprobs instanceof CompletionLogprobs) ? logprobs : null,
            finish_reason: choice.done?.finishReason ?? 'abort',
            stop_reason: choice.done?.stopReason ?? null,
          }
        : {
            index: choice.index,
            text: choice.text,
            logprobs: logprobs instanceof CompletionLogprobs ? logprobs.json() : null,
            finish_reason: choice.done?.finishReason ?? 'abort',
            stop_reason: choice.done?.stopReason ?? null,
          },
    );
    return { id, object: objectName, created: now(), model: opts.modelName, choices, usage: u, moi };
  }

  const template: ChatTemplateSource | null = tok
    ? {
        chatTemplate: opts.chatTemplate ?? tok.chatTemplate,
        chatTemplates: opts.chatTemplate ? undefined : tok.chatTemplates,
        bosToken: tok.bosToken,
        eosToken: tok.eosToken,
        padToken: tok.padToken,
        unkToken: tok.unkToken,
        chatTemplateOrigin: opts.chatTemplate !== undefined ? 'the given chat template' : tok.chatTemplateOrigin,
        source: tok.source,
      }
    : null;

  const encoder = tok
    ? new PromptEncoder(tok, { dir: engine.dir, template }, opts.inlineTokenizeChars ?? DEFAULT_INLINE_CHARS)
    : null;
  app.addHook('onClose', async () => {
    await encoder?.close();
  });

  app.post('/v1/completions', async (req, reply) => {
    const body = parse(completionSchema, req, '/v1/completions');
    refuseUnsupported(body);
    if (body.suffix) throw new ApiError(400, 'suffix is not supported', 'suffix');
    // vLLM returns the prompt's own logprobs with echo; this server does not compute them
    if (body.echo && body.logprobs != null)
      throw new ApiError(400, "echo with logprobs is not supported (the prompt's logprobs are not computed)", 'echo');
    const p = body.prompt;
    const list: (string | number[])[] =
      typeof p === 'string'
        ? [p]
        : p.length > 0 && typeof p[0] === 'number'
          ? [p as number[]]
          : (p as (string | number[])[]);
    const texts = list.filter((item): item is string => typeof item === 'string');
    checkChars(
      'prompt',
      texts.reduce((n, t) => n + t.length, 0),
    );
    if (texts.length > 0 && (!tok || !encoder))
      throw new ApiError(400, 'this model has no tokenizer: send the prompt as token ids', 'prompt');
    const encoded = texts.length > 0 ? await encoder!.prompts(texts, body.add_special_tokens ?? true) : [];
    let next = 0;
    const prompts = list.map((item): PromptRun => {
      const ids = typeof item === 'string' ? encoded[next++] : item;
      if (ids.length === 0) throw new ApiError(400, 'the prompt is empty', 'prompt');
      const requests = buildRequests(body, 'completions', {
        promptIds: ids,
        vocabSize: engine.spec.vocabSize,
        maxModelLen: scheduler.maxModelLen,
        mixDefaults,
      });
      // echo: the prompt as given, or the ids' text (special tokens as the completion's text treats them)
      const echo = !body.echo
        ? ''
        : typeof item === 'string'
          ? item
          : tok
            ? tok.decode(ids, { skipSpecialTokens: body.skip_special_tokens ?? true })
            : '';
      return { ids, requests, echo };
    });
    return run(req, reply, 'text_completion', prompts, body);
  });

  app.post('/v1/chat/completions', async (req, reply) => {
    const body = parse(chatSchema, req, '/v1/chat/completions');
    refuseUnsupported(body);
    if (!tok || !template || template.chatTemplate === undefined) throw new ApiError(400, NO_TEMPLATE, 'messages');
    const messages: ChatMessage[] = body.messages.map((m) => ({ role: m.role, content: contentText(m.content) }));
    checkChars(
      'messages',
      messages.reduce((n, m) => n + m.content.length, 0),
    );
    const cont = body.continue_final_message ?? false;
    // vLLM's defaults: a generation prompt unless continuing; both true is a 400
    const addGenerationPrompt = body.add_generation_prompt ?? !cont;
    if (cont && addGenerationPrompt) {
      throw new ApiError(
        400,
        'Cannot set both `continue_final_message` and `add_generation_prompt` to True.',
        'continue_final_message',
      );
    }
    let ids: number[];
    try {
      // add_special_tokens (vLLM, default false): the tokenizer's own specials on top of the template's
      ids = await encoder!.chat(messages, {
        addGenerationPrompt,
        continueFinalMessage: cont,
        addSpecialTokens: body.add_special_tokens ?? false,
        extra: body.chat_template_kwargs ?? undefined,
      });
    } catch (e) {
      throw fromEngine(e, 'messages');
    }
    const requests = buildRequests(body, 'chat', {
      promptIds: ids,
      vocabSize: engine.spec.vocabSize,
      maxModelLen: scheduler.maxModelLen,
      mixDefaults,
    });
    // vLLM: the reply's role is the assistant's, or the final message's when no new turn is opened;
    // echo repeats the final message where it has that role
    const role = addGenerationPrompt ? 'assistant' : messages[messages.length - 1].role;
    const last = messages[messages.length - 1];
    const echo = body.echo && last.role === role ? last.content : '';
    return run(req, reply, 'chat.completion', [{ ids, requests, echo }], body, role);
  });

  return { app, metrics, encoder };
}
