/**
 * `moi-gen serve` through the official `openai` client at 127.0.0.1 on an ephemeral port, on a
 * tiny random Qwen3 model with the real Qwen3 tokenizer and chat template (built here: the
 * fixture's config with vocab_size raised to the tokenizer's, weights from synthesizeModel).
 *
 * - endpoints and shapes: models, completions, chat, streaming with usage, n > 1, logprobs,
 *   stop strings, the moi_* fields and the `moi` object;
 * - batching changes nothing: 32 concurrent streaming greedy requests (a third MoI β 0.5) × 4
 *   rounds equal each request alone, and the tensor count returns to idle;
 * - every error path: 400, 401, 404, 413, 429, a mid-stream error, a disconnect (the slot is
 *   free again, seen through /metrics), SIGTERM (the real binary exits 0);
 * - the prompt cache: a second chat turn prefills only what the first did not hold, and its
 *   reply equals a server without the cache.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import OpenAI from 'openai';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { defaultMixer, type InputMixer } from '@moi/moi';
import { Engine } from '@moi/engine';
import { Scheduler, type SchedulerOptions } from '@moi/engine';
import { commonPrefix } from '@moi/engine';
import { buildServer, type ServerOptions } from '../packages/cli/src/serve/server.ts';
import { synthesizeModel } from '../packages/cli/src/synth.ts';
import { encodeChat, loadTokenizer } from '@moi/engine';
import { spawnCli } from './support/cli.ts';

const shared = sharedDir();
const MODEL = 'tiny-qwen3';

/** The tiny Qwen3 with the real tokenizer, in a temp folder. */
function buildModel(dir: string): void {
  const config = JSON.parse(readFileSync(path.join(shared!, 'fixtures/qwen3/config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const tokDir = path.join(shared!, 'tokenizers/qwen3');
  const tok = loadTokenizer(tokDir);
  config.vocab_size = tok.vocabSize;
  config.max_position_embeddings = 2048;
  config.eos_token_id = 151645; // <|im_end|>
  const cfg = path.join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify(config));
  synthesizeModel({ config: cfg, out: dir, seed: 7 });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(tokDir, f), path.join(dir, f));
}

interface Running {
  url: string;
  client: OpenAI;
  scheduler: Scheduler;
  close: () => Promise<void>;
  logs: string[];
}

async function start(engine: Engine, s: SchedulerOptions = {}, o: Partial<ServerOptions> = {}): Promise<Running> {
  const scheduler = new Scheduler(engine, { maxSeqs: 8, maxModelLen: 1024, ...s });
  const logs: string[] = [];
  const { app } = buildServer(engine, scheduler, { modelName: MODEL, log: (l) => logs.push(l), ...o });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: o.apiKey ?? 'none', maxRetries: 0 });
  return {
    url,
    client,
    scheduler,
    logs,
    close: async () => {
      await scheduler.close();
      await app.close();
    },
  };
}

/** A gauge or counter's value from /metrics. */
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + '{') || l.startsWith(name + ' '));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(' ').pop());
}

async function until(f: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('moi-gen serve (OpenAI API, official client)', function () {
  this.timeout(120_000);
  let dir: string;
  let engine: Engine;
  let srv: Running;

  before(async function () {
    if (!shared) {
      console.warn(SHARED_MISSING);
      this.skip();
    }
    dir = mkdtempSync(path.join(tmpdir(), 'moi-serve-'));
    buildModel(dir);
    engine = await Engine.load(dir, { backend: 'wasm' });
    srv = await start(engine);
  });
  after(async () => {
    await srv?.close();
    engine?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('GET /v1/models and /health', async function () {
    const models = await srv.client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      [MODEL],
    );
    assert.equal((await fetch(`${srv.url}/health`)).status, 200);
  });

  it('completions: text and token-id prompts, usage, stop strings, logprobs, n > 1, moi', async function () {
    const r = await srv.client.completions.create({
      model: MODEL,
      prompt: 'The capital of France is',
      max_tokens: 8,
      temperature: 0,
    });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices.length, 1);
    const tok = engine.tokenizer!;
    const ids = tok.encode('The capital of France is', { addSpecialTokens: true });
    assert.equal(r.usage!.prompt_tokens, ids.length);
    assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 8);
    assert.deepEqual((r as unknown as { moi: unknown }).moi, {
      mode: 'standard',
      beta: null,
      top_k: null,
      prior: null,
    });
    // the same prompt as ids gives the same text
    const r2 = await srv.client.completions.create({ model: MODEL, prompt: ids, max_tokens: 8, temperature: 0 });
    assert.equal(r2.choices[0].text, r.choices[0].text);
    // stop string: the text ends before it, finish_reason stop
    const long = (await srv.client.completions.create({
      model: MODEL,
      prompt: 'Hello',
      max_tokens: 24,
      temperature: 0,
      ignore_eos: true,
    } as never)) as OpenAI.Completion;
    const text = long.choices[0].text;
    assert.ok(text.length >= 4, `a long enough text: ${JSON.stringify(text)}`);
    const stopAt = text.slice(2, 4);
    const stopped = (await srv.client.completions.create({
      model: MODEL,
      prompt: 'Hello',
      max_tokens: 24,
      temperature: 0,
      stop: [stopAt],
      ignore_eos: true,
    } as never)) as OpenAI.Completion;
    assert.equal(stopped.choices[0].text, text.slice(0, text.indexOf(stopAt)));
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    // logprobs: chosen ≥ every top alternative's, top-3 sorted
    const lp = (await srv.client.completions.create({
      model: MODEL,
      prompt: 'Hello',
      max_tokens: 4,
      temperature: 0,
      logprobs: 3,
      ignore_eos: true,
    } as never)) as OpenAI.Completion;
    const l = lp.choices[0].logprobs!;
    assert.equal(l.tokens!.length, 4);
    assert.equal(l.top_logprobs!.length, 4);
    for (let i = 0; i < 4; i++) {
      const tops = Object.values(l.top_logprobs![i]);
      assert.ok(tops.length >= 1 && tops.length <= 3);
      assert.ok(Math.abs(l.token_logprobs![i] - Math.max(...tops)) < 1e-5, 'greedy: the chosen token is the top one');
      assert.ok(l.token_logprobs![i] <= 0);
    }
    assert.equal(l.tokens!.join(''), lp.choices[0].text);
    // n > 1 with a seed: n choices, indices 0..n-1, seeded runs reproducible
    const ask = {
      model: MODEL,
      prompt: 'Once upon a time',
      max_tokens: 6,
      temperature: 1,
      n: 3,
      seed: 11,
      ignore_eos: true,
    };
    const a = (await srv.client.completions.create(ask as never)) as OpenAI.Completion;
    const b = (await srv.client.completions.create(ask as never)) as OpenAI.Completion;
    assert.deepEqual(
      a.choices.map((c) => c.index),
      [0, 1, 2],
    );
    assert.deepEqual(
      a.choices.map((c) => c.text),
      b.choices.map((c) => c.text),
    );
    assert.equal(a.usage!.completion_tokens, 18);
    // moi fields: the moi object says what ran; a bad value is a 400 naming the field
    const m = (await srv.client.completions.create({
      model: MODEL,
      prompt: 'Hello',
      max_tokens: 4,
      temperature: 0,
      moi_mode: 'moi',
      moi_beta: 0.5,
      moi_topk: 5,
    } as never)) as OpenAI.Completion;
    assert.deepEqual((m as unknown as { moi: unknown }).moi, { mode: 'moi', beta: 0.5, top_k: 5, prior: 'raw' });
    const d = (await srv.client.completions.create({
      model: MODEL,
      prompt: 'Hello',
      max_tokens: 4,
      temperature: 0,
      moi_beta: -100,
    } as never)) as OpenAI.Completion;
    assert.equal((d as unknown as { moi: { mode: string } }).moi.mode, 'direct');
    // Soft Thinking per request: the think-end id comes from the tokenizer ('</think>')
    const soft = (await srv.client.completions.create({
      model: MODEL,
      prompt: 'Hello',
      max_tokens: 4,
      moi_mode: 'soft',
      cold_stop_entropy: 0.01,
      cold_stop_steps: 2,
    } as never)) as OpenAI.Completion;
    const softMoi = (soft as unknown as { moi: { mode: string; think_end_id: number } }).moi;
    assert.equal(softMoi.mode, 'soft');
    assert.equal(softMoi.think_end_id, engine.tokenizer!.encode('</think>', { addSpecialTokens: false })[0]);
    await assert.rejects(
      srv.client.completions.create({
        model: MODEL,
        prompt: 'Hello',
        max_tokens: 4,
        moi_mode: 'moi',
        think_end: '</x>',
      } as never),
      (e: unknown) => e instanceof OpenAI.APIError && e.status === 400,
    );
    await assert.rejects(
      srv.client.completions.create({
        model: MODEL,
        prompt: 'Hello',
        max_tokens: 4,
        moi_mode: 'moi',
        moi_beta: -1,
      } as never),
      (e: unknown) => e instanceof OpenAI.APIError && e.status === 400 && /beta/.test(e.message),
    );
    // an unknown field is accepted and named in a warning
    await srv.client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 1, frobnicate: 1 } as never);
    assert.ok(srv.logs.some((l) => /warning: .*unknown fields ignored: frobnicate/.test(l)));
    assert.ok(
      srv.logs.some((l) => /"POST \/v1\/completions" 200 \d+ms prompt=/.test(l)),
      'one log line per request',
    );
  });

  it('chat: the Qwen3 template, chat_template_kwargs, logprobs, streaming with the role first and a usage chunk', async function () {
    const messages = [{ role: 'user' as const, content: 'Hi there' }];
    const r = (await srv.client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 6,
      temperature: 0,
      chat_template_kwargs: { enable_thinking: false },
      logprobs: true,
      top_logprobs: 2,
    } as never)) as OpenAI.ChatCompletion;
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.role, 'assistant');
    const want = encodeChat(engine.tokenizer!, messages, { extra: { enable_thinking: false } });
    assert.equal(r.usage!.prompt_tokens, want.length);
    assert.equal(r.choices[0].logprobs!.content!.length, r.usage!.completion_tokens);
    assert.equal(r.choices[0].logprobs!.content![0].top_logprobs.length, 2);
    // the same request streamed: role first, the same text, a final usage chunk with no choices
    const stream = (await srv.client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 6,
      temperature: 0,
      chat_template_kwargs: { enable_thinking: false },
      stream: true,
      stream_options: { include_usage: true },
    } as never)) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const text = chunks.flatMap((c) => c.choices.map((x) => x.delta.content ?? '')).join('');
    assert.equal(text, r.choices[0].message.content);
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage!.completion_tokens, r.usage!.completion_tokens);
    assert.ok(
      chunks.some((c) => c.choices[0]?.finish_reason),
      'a finish_reason chunk',
    );
  });

  it('batching changes nothing: 32 concurrent streaming greedy requests × 4 rounds equal each alone; tensors back to idle', async function () {
    const words = [
      'alpha',
      'beta gamma',
      'a much longer prompt about the sea and the sky and the',
      'x',
      'one two three four five',
    ];
    const reqs = Array.from({ length: 32 }, (_, i) => ({
      model: MODEL,
      prompt: `${words[i % words.length]} ${i}`,
      max_tokens: 3 + (i % 6),
      temperature: 0,
      ignore_eos: true,
      ...(i % 3 === 0 ? { moi_mode: 'moi', moi_beta: 0.5 } : {}),
    }));
    const alone: string[] = [];
    for (const q of reqs)
      alone.push(((await srv.client.completions.create(q as never)) as OpenAI.Completion).choices[0].text);
    const idle = tf.memory().numTensors;
    for (let round = 0; round < 4; round++) {
      const texts = await Promise.all(
        reqs.map(async (q) => {
          const s = (await srv.client.completions.create({
            ...q,
            stream: true,
          } as never)) as unknown as AsyncIterable<OpenAI.Completion>;
          let t = '';
          for await (const c of s) t += c.choices[0]?.text ?? '';
          return t;
        }),
      );
      texts.forEach((t, i) => assert.equal(t, alone[i], `round ${round}, request ${i}`));
    }
    await until(async () => (await metric(srv.url, 'moi:num_requests_running')) === 0);
    assert.equal(tf.memory().numTensors, idle);
  });

  it('prompt cache: a second chat turn prefills only the new tokens, and its reply equals a run without the cache', async function () {
    const kw = { enable_thinking: false };
    const m1 = [
      { role: 'system' as const, content: 'You are terse.' },
      { role: 'user' as const, content: 'Name a colour.' },
    ];
    const r1 = (await srv.client.chat.completions.create({
      model: MODEL,
      messages: m1,
      max_tokens: 5,
      temperature: 0,
      chat_template_kwargs: kw,
    } as never)) as OpenAI.ChatCompletion;
    const m2 = [
      ...m1,
      { role: 'assistant' as const, content: r1.choices[0].message.content! },
      { role: 'user' as const, content: 'Another one.' },
    ];
    const req2 = { model: MODEL, messages: m2, max_tokens: 5, temperature: 0, chat_template_kwargs: kw };
    const r2 = (await srv.client.chat.completions.create(req2 as never)) as OpenAI.ChatCompletion;
    const ids1 = encodeChat(engine.tokenizer!, m1, { extra: kw });
    const ids2 = encodeChat(engine.tokenizer!, m2, { extra: kw });
    const shared = commonPrefix(ids1, ids2);
    assert.ok(shared > ids1.length / 2, 'the turns share most of the first prompt');
    const cached = (r2.usage as unknown as { prompt_tokens_details: { cached_tokens: number } }).prompt_tokens_details
      .cached_tokens;
    assert.equal(r2.usage!.prompt_tokens, ids2.length);
    assert.equal(cached, shared, 'prefilled only the tokens after the shared prefix');
    const plain = await start(engine, { promptCache: false, maxSeqs: 2 });
    try {
      const r3 = (await plain.client.chat.completions.create(req2 as never)) as OpenAI.ChatCompletion;
      assert.equal(
        (r3.usage as unknown as { prompt_tokens_details: { cached_tokens: number } }).prompt_tokens_details
          .cached_tokens,
        0,
      );
      assert.equal(r3.choices[0].message.content, r2.choices[0].message.content);
    } finally {
      await plain.close();
    }
  });

  it('errors: 400 (bad value, too long), 401, 404, 413, each as {"error": {message, type, param, code}}', async function () {
    const post = (body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${srv.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      });
    let r = await post({ model: MODEL, prompt: 'x', temperature: -1 });
    assert.equal(r.status, 400);
    let j = (await r.json()) as { error: { message: string; type: string; param: string; code: number } };
    assert.equal(j.error.param, 'temperature');
    assert.equal(j.error.code, 400);
    assert.equal(j.error.type, 'BadRequestError');
    r = await post({ model: MODEL, prompt: Array.from({ length: 1100 }, () => 100) });
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as typeof j).error.message, /maximum context length is 1024/);
    r = await post('{not json');
    assert.equal(r.status, 400);
    r = await post({ model: 'other', prompt: 'x' });
    assert.equal(r.status, 404);
    j = (await r.json()) as typeof j;
    assert.equal(j.error.param, 'model');
    r = await post({ model: MODEL, prompt: 'x'.repeat(5 * 1024 * 1024) });
    assert.equal(r.status, 413);
    assert.equal(((await r.json()) as typeof j).error.code, 413);
    assert.equal((await fetch(`${srv.url}/v2/nothing`)).status, 404);
    // 401 with --api-key: missing or wrong bearer; right one passes
    const keyed = await start(engine, { maxSeqs: 1 }, { apiKey: 'sekret' });
    try {
      await assert.rejects(
        new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'wrong', maxRetries: 0 }).models.list(),
        (e: unknown) => e instanceof OpenAI.APIError && e.status === 401,
      );
      assert.equal((await fetch(`${keyed.url}/v1/models`)).status, 401);
      assert.equal((await keyed.client.models.list()).data[0].id, MODEL);
    } finally {
      await keyed.close();
    }
  });

  it('429 when the waiting queue is full; a client disconnect frees its row (seen in /metrics); a mid-stream error becomes an error event and [DONE]', async function () {
    let calls = 0;
    const failing: InputMixer = {
      ...defaultMixer,
      name: 'failing',
      mix: (a) => {
        if (++calls === 4) throw new Error('injected device failure');
        return defaultMixer.mix(a);
      },
    };
    const small = await start(engine, { maxSeqs: 1, maxWaiting: 1, mixer: failing });
    try {
      const long = { model: MODEL, prompt: 'Tell me', max_tokens: 600, temperature: 0, ignore_eos: true, stream: true };
      const ac = new AbortController();
      const first = await fetch(`${small.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(long),
        signal: ac.signal,
      });
      const reader = first.body!.getReader();
      await reader.read(); // streaming: it holds the one row
      const waitingReq = small.client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 2 });
      await until(async () => (await metric(small.url, 'moi:num_requests_waiting')) === 1);
      await assert.rejects(
        small.client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 2 }),
        (e: unknown) => e instanceof OpenAI.APIError && e.status === 429,
      );
      assert.equal(await metric(small.url, 'moi:num_free_seqs'), 0);
      ac.abort(); // the client goes away
      await waitingReq; // ... so the waiting request gets the row and finishes
      await until(async () => (await metric(small.url, 'moi:num_free_seqs')) === 1);
      assert.ok(
        (await metric(small.url, 'moi:generation_tokens_total')) < 600,
        'the disconnected stream did not run to its end',
      );
      // a non-streaming client that disconnects frees its row too
      const ac2 = new AbortController();
      const p = fetch(`${small.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...long, stream: false }),
        signal: ac2.signal,
      }).catch(() => null);
      await until(async () => (await metric(small.url, 'moi:num_free_seqs')) === 0);
      ac2.abort();
      await p;
      await until(async () => (await metric(small.url, 'moi:num_free_seqs')) === 1);
      // mid-stream error: the mixer fails on its 4th call; the stream carries the error, then [DONE]
      calls = 0;
      const res = await fetch(`${small.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...long, max_tokens: 10, moi_mode: 'moi' }),
      });
      const body = await res.text();
      const events = body.split('\n\n').filter(Boolean);
      assert.equal(events[events.length - 1], 'data: [DONE]');
      const err = JSON.parse(events[events.length - 2].slice(6)) as { error: { message: string; code: number } };
      assert.match(err.error.message, /injected device failure/);
      assert.ok(events.length >= 3, 'tokens came before the error');
      // the official client raises it
      calls = 0;
      const s = (await small.client.completions.create({
        ...long,
        max_tokens: 10,
        moi_mode: 'moi',
      } as never)) as unknown as AsyncIterable<OpenAI.Completion>;
      await assert.rejects(
        (async () => {
          for await (const c of s) void c;
        })(),
        /injected device failure/,
      );
      // and the server goes on
      calls = -1e9;
      const ok = (await small.client.completions.create({
        model: MODEL,
        prompt: 'Hi',
        max_tokens: 2,
        moi_mode: 'moi',
      } as never)) as OpenAI.Completion;
      assert.equal(ok.choices.length, 1);
    } finally {
      await small.close();
    }
  });

  it('SIGTERM: the real binary stops accepting, ends the running stream with a finish reason, and exits 0', async function () {
    const server = await spawnCli([
      'serve',
      '--model',
      dir,
      '--port',
      '0',
      '--max-seqs',
      '2',
      '--max-model-len',
      '1024',
      '--backend',
      'wasm',
    ]);
    const { child } = server;
    let err = '';
    child.stderr.on('data', (d) => {
      err += String(d);
    });
    const exited = server.done.then((r) => r.code);
    await until(async () => /on (http:\/\/127\.0\.0\.1:\d+)/.test(err), 60_000);
    assert.match(err, /max-seqs 2 · max-model-len 1024 · KV cache ≤ [\d.]+ MB/);
    const url = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(err)![1];
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Go', max_tokens: 900, ignore_eos: true, stream: true, temperature: 0 }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    child.kill('SIGTERM');
    let body = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      body += Buffer.from(value).toString();
    }
    assert.match(body, /"finish_reason":"abort"/);
    assert.ok(body.trimEnd().endsWith('data: [DONE]'));
    assert.equal(await exited, 0, err);
    assert.match(err, /SIGTERM: stopping/);
  });
});
