/**
 * What a client of `moi-gen serve` sees of the text (issue 24), through the official `openai`
 * client, on the real stories260K (a SentencePiece tokenizer, given a Llama-2-style chat template
 * here) and on a tiny random Qwen3 with the real byte-level BPE tokenizer:
 *
 * - the completion starts exactly where the prompt ends, leading space included: prompt text +
 *   completion = decode(prompt ids + generated ids) (the ids from the engine's own generate());
 *   streamed = non-streamed; logprob tokens concatenated = text, text_offset at each, never "";
 * - stop_reason (the matched stop string, the stop token id, null on length); the finish reason on
 *   the last token's chunk; echo; add_special_tokens; continue_final_message and
 *   add_generation_prompt as vLLM has them (both true: 400); /health an empty 200; best_of,
 *   response_format and tools refused with a 400 naming the field; max_tokens up to context − prompt;
 *   a model without a chat template: a start-up warning and a 400 naming --chat-template;
 * - eval --endpoint sends the very prompt ids an in-process run makes (the server's prompt_tokens).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import {
  Engine,
  Scheduler,
  encodePrompt,
  generate,
  loadTokenizer,
  renderChat,
  Tokenizer,
  type GenerateRequest,
} from '@moi/engine';
import { buildServer } from '../packages/cli/src/serve/server.ts';
import { synthesizeModel } from '../packages/cli/src/synth.ts';
import { EndpointCompleter } from '../packages/cli/src/eval/endpoint.ts';
import { renderPrompt } from '../packages/cli/src/eval/runner.ts';
import type { CompletionRequest } from '../packages/cli/src/eval/completer.ts';
import type { Problem } from '../packages/cli/src/eval/problem.ts';

const shared = sharedDir();
const MODEL = 'm';
/** A Llama-2-style template: BOS written by the template, [INST] turns, assistant turns closed by EOS. */
const TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]" +
  "{% elif m.role == 'assistant' %} {{ m.content }}{{ eos_token }}{% else %}<<SYS>>{{ m.content }}<</SYS>>{% endif %}{% endfor %}";

interface Running {
  url: string;
  client: OpenAI;
  close: () => Promise<void>;
  logs: string[];
}

async function start(engine: Engine, maxModelLen: number, chatTemplate?: string): Promise<Running> {
  const scheduler = new Scheduler(engine, { maxSeqs: 4, maxModelLen });
  const logs: string[] = [];
  const { app } = buildServer(engine, scheduler, { modelName: MODEL, log: (l) => logs.push(l), chatTemplate });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
  return {
    url,
    client,
    logs,
    close: async () => {
      await scheduler.close();
      await app.close();
    },
  };
}

/** The generated ids of a greedy run through the engine's own generate(). */
async function greedyIds(engine: Engine, promptIds: number[], maxTokens: number): Promise<number[]> {
  const req: GenerateRequest = { promptIds, maxTokens, sampling: { temperature: 0 }, ignoreEos: true };
  for await (const e of generate(engine, [req])) if (e.type === 'done') return e.tokens;
  throw new Error('no done event');
}

async function streamText(s: AsyncIterable<OpenAI.Completion>): Promise<{ text: string; chunks: OpenAI.Completion[] }> {
  const chunks: OpenAI.Completion[] = [];
  for await (const c of s) chunks.push(c);
  return { text: chunks.map((c) => c.choices[0]?.text ?? '').join(''), chunks };
}

const rejects400 = (p: Promise<unknown>, param: string) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof OpenAI.APIError, String(e));
    assert.equal(e.status, 400, e.message);
    assert.equal(
      (e.error as { param?: string } | undefined)?.param ?? (e as unknown as { param?: string }).param,
      param,
      e.message,
    );
    return true;
  });

/** Checks a completions logprobs object against its text: tokens add up to it, offsets point at them, none empty. */
function checkLogprobs(text: string, lp: OpenAI.CompletionChoice['logprobs'], n: number): void {
  const tokens = lp!.tokens!;
  assert.equal(tokens.length, n);
  assert.ok(
    tokens.every((t) => t !== ''),
    `no empty token: ${JSON.stringify(tokens)}`,
  );
  const whole = tokens.every((t) => !t.startsWith('bytes:'));
  if (whole) assert.equal(tokens.join(''), text);
  let at = 0;
  tokens.forEach((t, i) => {
    assert.equal(lp!.text_offset![i], at, `text_offset[${i}]`);
    if (!t.startsWith('bytes:')) {
      assert.equal(text.slice(at, at + t.length), t, `token ${i} sits at its offset`);
      at += t.length;
    }
  });
}

describe('serve: the text a client sees (leading space, logprobs, stop_reason, echo, continue_final_message)', function () {
  this.timeout(180_000);
  let engine: Engine;
  let srv: Running;
  let tok: Tokenizer;

  before(async function () {
    if (!shared) {
      console.warn(SHARED_MISSING);
      this.skip();
    }
    engine = await Engine.load(path.join(shared!, 'fixtures/stories260K'), { backend: 'wasm' });
    tok = engine.tokenizer!;
    srv = await start(engine, 64, TEMPLATE);
  });
  after(async () => {
    await srv?.close();
    engine?.dispose();
  });

  it('completions: " upon a time", prompt + completion = the full decode; streamed = non-streamed; logprob tokens = text', async function () {
    const prompt = 'Once';
    const ids = encodePrompt(tok, prompt);
    const gen = await greedyIds(engine, ids, 8);
    const want = tok
      .decode([...ids, ...gen], { skipSpecialTokens: true })
      .slice(tok.decode(ids, { skipSpecialTokens: true }).length);
    assert.ok(want.startsWith(' '), `the reference completion starts with a space: ${JSON.stringify(want)}`);
    const ask = { model: MODEL, prompt, max_tokens: 8, temperature: 0, ignore_eos: true, logprobs: 2 };
    const r = (await srv.client.completions.create(ask as never)) as OpenAI.Completion;
    assert.equal(r.choices[0].text, want);
    assert.equal(prompt + r.choices[0].text, tok.decode([...ids, ...gen], { skipSpecialTokens: true }));
    checkLogprobs(want, r.choices[0].logprobs, 8);
    assert.equal(r.choices[0].logprobs!.tokens![0], ' upon');
    for (const top of r.choices[0].logprobs!.top_logprobs!) assert.ok(Object.keys(top).every((k) => k !== ''));
    // streamed: the same text, a chunk per token with the finish reason on the last one (no empty extra chunk)
    const s = await streamText(
      (await srv.client.completions.create({
        ...ask,
        stream: true,
      } as never)) as unknown as AsyncIterable<OpenAI.Completion>,
    );
    assert.equal(s.text, want);
    assert.equal(s.chunks.length, 8);
    const last = s.chunks[s.chunks.length - 1].choices[0];
    assert.equal(last.finish_reason, 'length');
    assert.notEqual(last.text, '');
    assert.ok(s.chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null));
    // the streamed logprobs' offsets run on from chunk to chunk
    const offsets = s.chunks.flatMap((c) => c.choices[0].logprobs!.text_offset!);
    assert.deepEqual(offsets, r.choices[0].logprobs!.text_offset);
  });

  it('stop_reason: the matched stop string, the stop token id, null on length; the stop cut in streams too', async function () {
    const base = { model: MODEL, prompt: 'Once', max_tokens: 8, temperature: 0, ignore_eos: true };
    const full = ((await srv.client.completions.create(base as never)) as OpenAI.Completion).choices[0];
    assert.equal(full.finish_reason, 'length');
    assert.equal((full as unknown as { stop_reason: unknown }).stop_reason, null);
    const stop = full.text.slice(7, 11);
    const r = ((await srv.client.completions.create({ ...base, stop: ['zzz', stop] } as never)) as OpenAI.Completion)
      .choices[0];
    assert.equal(r.finish_reason, 'stop');
    assert.equal((r as unknown as { stop_reason: unknown }).stop_reason, stop);
    assert.equal(r.text, full.text.slice(0, full.text.indexOf(stop)));
    const s = await streamText(
      (await srv.client.completions.create({
        ...base,
        stop: ['zzz', stop],
        stream: true,
      } as never)) as unknown as AsyncIterable<OpenAI.Completion>,
    );
    assert.equal(s.text, r.text);
    const lastChunk = s.chunks[s.chunks.length - 1].choices[0] as unknown as {
      finish_reason: string;
      stop_reason: unknown;
    };
    assert.deepEqual([lastChunk.finish_reason, lastChunk.stop_reason], ['stop', stop]);
    // a stop token id: the third generated token's id
    const ids = await greedyIds(engine, encodePrompt(tok, 'Once'), 3);
    const t = (
      (await srv.client.completions.create({ ...base, stop_token_ids: [ids[2]] } as never)) as OpenAI.Completion
    ).choices[0];
    assert.equal(t.finish_reason, 'stop');
    assert.equal((t as unknown as { stop_reason: unknown }).stop_reason, ids[2]);
    assert.equal(
      t.text,
      tok.decode([...encodePrompt(tok, 'Once'), ids[0], ids[1]], { skipSpecialTokens: true }).slice('Once'.length),
    );
  });

  it('echo and add_special_tokens (completions); /health is an empty 200; unsupported fields are a 400 naming them', async function () {
    const r = (
      (await srv.client.completions.create({
        model: MODEL,
        prompt: 'Once',
        max_tokens: 4,
        temperature: 0,
        ignore_eos: true,
        echo: true,
      } as never)) as OpenAI.Completion
    ).choices[0];
    const plain = (
      (await srv.client.completions.create({
        model: MODEL,
        prompt: 'Once',
        max_tokens: 4,
        temperature: 0,
        ignore_eos: true,
      } as never)) as OpenAI.Completion
    ).choices[0];
    assert.equal(r.text, 'Once' + plain.text);
    const s = await streamText(
      (await srv.client.completions.create({
        model: MODEL,
        prompt: 'Once',
        max_tokens: 4,
        temperature: 0,
        ignore_eos: true,
        echo: true,
        stream: true,
      } as never)) as unknown as AsyncIterable<OpenAI.Completion>,
    );
    assert.equal(s.text, r.text);
    const ids = (
      (await srv.client.completions.create({
        model: MODEL,
        prompt: [...encodePrompt(tok, 'Once')],
        max_tokens: 1,
        echo: true,
      })) as OpenAI.Completion
    ).choices[0].text;
    assert.ok(ids.startsWith('Once'), 'echo of an id prompt is its decoded text');
    await rejects400(
      srv.client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 2, echo: true, logprobs: 1 }),
      'echo',
    );
    // add_special_tokens: false leaves BOS out
    const noBos = (await srv.client.completions.create({
      model: MODEL,
      prompt: 'Once',
      max_tokens: 1,
      add_special_tokens: false,
    } as never)) as OpenAI.Completion;
    assert.equal(noBos.usage!.prompt_tokens, tok.encode('Once', { addSpecialTokens: false }).length);
    assert.equal(
      plainUsage(await srv.client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 1 })),
      encodePrompt(tok, 'Once').length,
    );

    const h = await fetch(`${srv.url}/health`);
    assert.equal(h.status, 200);
    assert.equal(await h.text(), '');

    await rejects400(
      srv.client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 2, best_of: 3 }),
      'best_of',
    );
    await srv.client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 2, best_of: 1 });
    await rejects400(
      srv.client.completions.create({
        model: MODEL,
        prompt: 'Once',
        max_tokens: 2,
        response_format: { type: 'json_object' },
      } as never),
      'response_format',
    );
    const messages = [{ role: 'user' as const, content: 'Hi' }];
    await rejects400(
      srv.client.chat.completions.create({
        model: MODEL,
        messages,
        max_tokens: 2,
        tools: [{ type: 'function', function: { name: 'f', parameters: {} } }],
      }),
      'tools',
    );
    await rejects400(
      srv.client.chat.completions.create({
        model: MODEL,
        messages,
        max_tokens: 2,
        response_format: { type: 'json_object' },
      }),
      'response_format',
    );
  });

  it("max_tokens: up to the context minus the prompt (vLLM's limit), one more is a 400", async function () {
    const p = encodePrompt(tok, 'Once').length;
    const r = (await srv.client.completions.create({
      model: MODEL,
      prompt: 'Once',
      max_tokens: 64 - p,
      temperature: 0,
      ignore_eos: true,
    } as never)) as OpenAI.Completion;
    assert.equal(r.usage!.completion_tokens, 64 - p);
    assert.equal(r.choices[0].finish_reason, 'length');
    await rejects400(srv.client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 65 - p }), 'max_tokens');
    // chat without max_tokens: the rest of the context (completions default to 16, as OpenAI's and vLLM's do)
    const messages = [{ role: 'user' as const, content: 'Tell a story.' }];
    const d = (await srv.client.chat.completions.create({
      model: MODEL,
      messages,
      temperature: 0,
      ignore_eos: true,
    } as never)) as OpenAI.ChatCompletion;
    assert.equal(d.usage!.completion_tokens, 64 - d.usage!.prompt_tokens);
    assert.equal(d.choices[0].finish_reason, 'length');
  });

  it('chat: continue_final_message continues the assistant\'s text (both with add_generation_prompt: 400); echo; logprobs never ""', async function () {
    const messages = [
      { role: 'user' as const, content: 'Tell a story.' },
      { role: 'assistant' as const, content: 'Once upon' },
    ];
    const ask = {
      model: MODEL,
      messages,
      max_tokens: 6,
      temperature: 0,
      ignore_eos: true,
      continue_final_message: true,
      add_generation_prompt: false,
    };
    const r = (await srv.client.chat.completions.create(ask as never)) as OpenAI.ChatCompletion;
    // the prompt is the rendered conversation cut after "Once upon" (no EOS closing it)
    const text = renderChat({ ...templateSource(tok), chatTemplate: TEMPLATE }, messages, {
      continueFinalMessage: true,
    });
    assert.ok(text.endsWith('Once upon'), text);
    const ids = encodePrompt(tok, text, { templated: true });
    assert.equal(r.usage!.prompt_tokens, ids.length);
    const gen = await greedyIds(engine, ids, 6);
    const want = tok
      .decode([...ids, ...gen], { skipSpecialTokens: true })
      .slice(tok.decode(ids, { skipSpecialTokens: true }).length);
    assert.equal(r.choices[0].message.content, want);
    assert.ok(want.startsWith(' '), JSON.stringify(want));
    // continue_final_message alone: add_generation_prompt defaults to false (vLLM)
    const alone = (await srv.client.chat.completions.create({
      ...ask,
      add_generation_prompt: undefined,
    } as never)) as OpenAI.ChatCompletion;
    assert.equal(alone.choices[0].message.content, want);
    await rejects400(
      srv.client.chat.completions.create({ ...ask, add_generation_prompt: true } as never),
      'continue_final_message',
    );
    // echo: the final assistant message, then its continuation
    const e = (await srv.client.chat.completions.create({ ...ask, echo: true } as never)) as OpenAI.ChatCompletion;
    assert.equal(e.choices[0].message.content, 'Once upon' + want);
    // streamed with logprobs: the same text; each entry's token is its text, the first one " ..." not ""
    const stream = (await srv.client.chat.completions.create({
      ...ask,
      logprobs: true,
      top_logprobs: 2,
      stream: true,
    } as never)) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    const content = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    assert.equal(content, want);
    const entries = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    assert.equal(entries.length, 6);
    assert.ok(
      entries.every((x) => x.token !== '' && x.top_logprobs.every((t) => t.token !== '')),
      JSON.stringify(entries.map((x) => x.token)),
    );
    assert.equal(entries.map((x) => x.token).join(''), want);
    assert.deepEqual(
      entries.flatMap((x) => x.bytes!),
      [...Buffer.from(want, 'utf8')],
    );
    assert.equal(chunks.filter((c) => c.choices[0]?.finish_reason).length, 1);
  });

  it("eval --endpoint sends the prompt ids of an in-process run (the template's BOS is not doubled)", async function () {
    const local = new Tokenizer(
      JSON.parse(readFileSync(path.join(shared!, 'fixtures/stories260K/tokenizer.json'), 'utf8')),
      {
        ...JSON.parse(readFileSync(path.join(shared!, 'fixtures/stories260K/tokenizer_config.json'), 'utf8')),
        chat_template: TEMPLATE,
      },
    );
    const problem: Problem = {
      index: 0,
      messages: [{ role: 'user', content: 'Tell a story.' }],
      assistantPrefix: 'Once',
      raw: 'Once',
      answer: null,
    };
    const rendered = renderPrompt(local, problem);
    assert.ok(rendered.text.startsWith('<s>'), 'the template writes BOS as text');
    const req: CompletionRequest = {
      key: 'k',
      messages: problem.messages,
      assistantPrefix: problem.assistantPrefix,
      promptText: rendered.text,
      rendered: true,
      promptIds: rendered.ids,
      mode: 'standard',
      sampling: { temperature: 0 },
      maxTokens: 3,
    };
    const completer = new EndpointCompleter(`${srv.url}/v1`, MODEL, 1);
    const results = [];
    for await (const res of completer.complete([req])) results.push(res);
    assert.equal(results[0].promptTokens, rendered.ids!.length);
  });

  it('a model without a chat template: a start-up warning, and chat requests refused naming --chat-template', async function () {
    const bare = await start(engine, 64);
    try {
      assert.ok(
        bare.logs.some((l) => /^warning: this model has no chat template.*--chat-template FILE/.test(l)),
        bare.logs.join('\n'),
      );
      assert.ok(!srv.logs.some((l) => /no chat template/.test(l)), 'no warning with --chat-template');
      await assert.rejects(
        bare.client.chat.completions.create({
          model: MODEL,
          messages: [{ role: 'user', content: 'Hi' }],
          max_tokens: 2,
        }),
        (e: unknown) =>
          e instanceof OpenAI.APIError &&
          e.status === 400 &&
          /--chat-template/.test(e.message) &&
          /\/v1\/completions/.test(e.message),
      );
    } finally {
      await bare.close();
    }
  });

  it('byte-level BPE (tiny Qwen3, real tokenizer): prompt + completion = the full decode; logprob offsets hold', async function () {
    const dir = mkdtempSync(path.join(tmpdir(), 'moi-serve-text-'));
    let qwen: Engine | undefined;
    let q: Running | undefined;
    try {
      const config = JSON.parse(readFileSync(path.join(shared!, 'fixtures/qwen3/config.json'), 'utf8')) as Record<
        string,
        unknown
      >;
      const tokDir = path.join(shared!, 'tokenizers/qwen3');
      config.vocab_size = loadTokenizer(tokDir).vocabSize;
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
      synthesizeModel({ config: path.join(dir, 'config.json'), out: dir, seed: 3 });
      for (const f of ['tokenizer.json', 'tokenizer_config.json'])
        copyFileSync(path.join(tokDir, f), path.join(dir, f));
      qwen = await Engine.load(dir, { backend: 'wasm' });
      q = await start(qwen, 256);
      const qt = qwen.tokenizer!;
      for (const prompt of ['Grüße aus', 'The capital of France is', '你好']) {
        const ids = encodePrompt(qt, prompt);
        const gen = await greedyIds(qwen, ids, 12);
        const r = (await q.client.completions.create({
          model: MODEL,
          prompt,
          max_tokens: 12,
          temperature: 0,
          ignore_eos: true,
          logprobs: 1,
        } as never)) as OpenAI.Completion;
        assert.equal(prompt + r.choices[0].text, qt.decode([...ids, ...gen], { skipSpecialTokens: true }), prompt);
        checkLogprobs(r.choices[0].text, r.choices[0].logprobs, 12);
        const s = await streamText(
          (await q.client.completions.create({
            model: MODEL,
            prompt,
            max_tokens: 12,
            temperature: 0,
            ignore_eos: true,
            stream: true,
          } as never)) as unknown as AsyncIterable<OpenAI.Completion>,
        );
        assert.equal(s.text, r.choices[0].text);
      }
    } finally {
      await q?.close();
      qwen?.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function plainUsage(r: OpenAI.Completion): number {
  return r.usage!.prompt_tokens;
}

function templateSource(t: Tokenizer) {
  return { bosToken: t.bosToken, eosToken: t.eosToken, padToken: t.padToken, unkToken: t.unkToken };
}
