/**
 * Every surface is made from the one settings table, so a setting's name, range, default and
 * message are the same everywhere. Walking the table:
 * - the CLI: generate's and chat's flags (long, short, hidden aliases, the rule in help, the
 *   filled-in default), eval's flags (eval's defaults) and serve's MoI flags;
 * - each flag's parser, eval's, and the server's request schema (both endpoints) accept the same
 *   values at the ends of each range, refuse the same values just past them, and state the same
 *   rule; no sampling or MoI field of the schema is written outside the table;
 * - a real server (stories260K) answers an out-of-range value with a 400 whose param names the
 *   field; a request's settings are validated once; eval's endpoint client sends each setting as
 *   the field the server's schema reads back to the same values.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { sharedDir, SHARED_MISSING, type Interval } from '@moi/core';
import {
  Engine,
  EVAL_SETTINGS,
  ruleOf,
  Scheduler,
  SETTINGS,
  settingsOf as tableGroup,
  type Endpoint,
  type Setting,
} from '@moi/engine';
import { chatCommand } from '../packages/cli/src/commands/chat.ts';
import { evalCommand } from '../packages/cli/src/commands/eval.ts';
import { generateCommand } from '../packages/cli/src/commands/generate.ts';
import { serveCommand } from '../packages/cli/src/commands/serve.ts';
import type { CompletionRequest } from '../packages/cli/src/eval/completer.ts';
import { EndpointCompleter } from '../packages/cli/src/eval/endpoint.ts';
import { settingsOf } from '../packages/cli/src/serve/openai.ts';
import { chatSchema, completionSchema } from '../packages/cli/src/serve/schema.ts';
import { buildServer } from '../packages/cli/src/serve/server.ts';

const shared = sharedDir();

type Command = ReturnType<typeof generateCommand>;
type Option = Command['options'][number];

// ---- probe values: the ends of a setting's range and just past them

type Probe = { json: unknown; text?: string };

function probes(s: Setting): { inside: Probe[]; outside: Probe[] } {
  const num = (x: number): Probe => ({ json: x, text: String(x) });
  switch (s.type) {
    case 'number':
    case 'int':
    case 'count': {
      const integer = s.type !== 'number';
      const inInterval = (x: number, i: Interval) =>
        (i.minOpen ? x > i.min : x >= i.min) && (i.maxOpen ? x < i.max : x <= i.max);
      const inside = s.range.flatMap((i) => [i.minOpen ? i.min + 1e-6 : i.min, i.maxOpen ? i.max - 1e-6 : i.max]);
      const past = s.range
        .flatMap((i) => {
          const d = (x: number) => (integer ? 1 : Math.max(Math.abs(x) * 1e-3, 1e-7));
          return [i.min - d(i.min), i.max + d(i.max), ...(i.minOpen ? [i.min] : []), ...(i.maxOpen ? [i.max] : [])];
        })
        .filter((x) => !s.range.some((i) => inInterval(x, i)));
      const extra =
        s.type === 'count'
          ? { inside: [{ json: 'all', text: 'all' }], outside: [{ json: 'most', text: 'most' }] }
          : { inside: [], outside: [] };
      return {
        inside: [...inside.map(num), ...extra.inside],
        outside: [...past.map(num), ...(integer ? [num(1.5)] : []), { json: 'abc', text: 'abc' }, ...extra.outside],
      };
    }
    case 'enum':
      return { inside: s.choices.map((c) => ({ json: c, text: c })), outside: [{ json: 'bogus', text: 'bogus' }] };
    case 'text':
      return { inside: [{ json: 'x', text: 'x' }], outside: [{ json: '', text: '' }, { json: 3 }] };
    case 'texts':
      return {
        inside: [{ json: ['a', 'b'] }, { json: 'a' }],
        outside: [{ json: Array.from({ length: s.maxItems + 1 }, () => 'a') }, { json: [1] }],
      };
    case 'flag':
      return { inside: [{ json: true }, { json: false }], outside: [{ json: 'yes' }] };
  }
}

/** A flag's parse of `text` (commander's parser), or the message it refuses it with. */
function parseFlag(opt: Option, text: string): { value?: unknown; error?: string } {
  if (opt.argChoices)
    return opt.argChoices.includes(text) ? { value: text } : { error: `choices ${opt.argChoices.join(',')}` };
  try {
    return { value: opt.parseArg!(text, undefined as never) };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/** The server schema's parse of one field, or the message it refuses it with. */
function parseField(endpoint: Endpoint, field: string, value: unknown): { value?: unknown; error?: string } {
  const body =
    endpoint === 'chat'
      ? { messages: [{ role: 'user', content: 'x' }], [field]: value }
      : { prompt: 'x', [field]: value };
  const r = (endpoint === 'chat' ? chatSchema : completionSchema).safeParse(body);
  if (r.success) return { value: (r.data as Record<string, unknown>)[field] };
  return { error: r.error.issues[0].message };
}

/** The README's row of a setting: flags, server fields, values, default, whether eval has it. */
function readmeRow(s: Setting): string {
  const code = (x: string) => `\`${x}\``;
  const flags = [s.cli!.short, s.cli!.flag, ...(s.cli!.aliases ?? [])]
    .filter((f): f is string => Boolean(f))
    .map(code)
    .join(', ');
  const fields = [...new Set([...s.server!.completions, ...s.server!.chat])].map(code).join(', ');
  const values =
    s.type === 'enum'
      ? s.choices.join(', ')
      : s.type === 'flag'
        ? 'on/off'
        : s.type === 'text'
          ? 'text'
          : s.type === 'texts'
            ? `up to ${s.maxItems} strings`
            : ruleOf(s);
  const dflt =
    s.defaultText ?? (s.default === null ? 'none' : Array.isArray(s.default) ? 'none' : code(String(s.default)));
  return `| ${flags} | ${fields} | ${values} | ${dflt} | ${s.eval ? '✓' : ''} |`;
}

function optionOf(cmd: Command, flag: string): Option | undefined {
  return cmd.options.find((o) => o.long === flag);
}

describe('settings table: every surface made from it', function () {
  const commands = { generate: generateCommand(), chat: chatCommand(), eval: evalCommand(), serve: serveCommand() };

  it('generate and chat have a flag for every setting: long and short names, hidden aliases, the rule in help, the default', () => {
    for (const cmd of [commands.generate, commands.chat]) {
      for (const s of SETTINGS) {
        const cli = s.cli!;
        const opt = optionOf(cmd, cli.flag);
        assert.ok(opt, `${cmd.name()} ${cli.flag}`);
        assert.equal(opt.short, cli.short, `${cli.flag} short`);
        if (s.type === 'number' || s.type === 'int' || s.type === 'count')
          assert.ok(opt.description.includes(ruleOf(s)), `${cli.flag} help states ${ruleOf(s)}`);
        if (s.type === 'enum') assert.deepEqual(opt.argChoices, s.choices, `${cli.flag} choices`);
        assert.deepEqual(opt.defaultValue, cli.fillDefault ? s.default : undefined, `${cli.flag} default`);
        for (const a of cli.aliases ?? []) assert.ok(optionOf(cmd, a)?.hidden, `${cli.flag} alias ${a}`);
      }
    }
    assert.equal(optionOf(commands.generate, '--max-tokens')!.defaultValue, 256);
  });

  it("eval has the table's eval settings with the same flags (and its own defaults); serve has the MoI settings", () => {
    const evalFlags = new Set(EVAL_SETTINGS.map((s) => s.cli!.flag));
    for (const s of SETTINGS) {
      const opt = optionOf(commands.eval, s.cli!.flag);
      // eval's --seed is its run seed (per-problem seeds derive from it), not a sampling seed
      if (!evalFlags.has(s.cli!.flag)) {
        assert.ok(!opt || s.name === 'seed', `eval has no ${s.cli!.flag}`);
        continue;
      }
      assert.ok(opt, `eval ${s.cli!.flag}`);
      assert.deepEqual(opt.defaultValue, s.eval?.default, `eval ${s.cli!.flag} default`);
    }
    assert.equal(optionOf(commands.eval, '--max-tokens')!.defaultValue, 1024);
    for (const s of tableGroup('moi')) assert.ok(optionOf(commands.serve, s.cli!.flag), `serve ${s.cli!.flag}`);
  });

  it('each flag, eval flag and server field accepts and refuses the same values, stating the same rule', () => {
    for (const s of SETTINGS) {
      const flags = [optionOf(commands.generate, s.cli!.flag)!, optionOf(commands.chat, s.cli!.flag)!];
      if (s.eval) flags.push(optionOf(commands.eval, s.cli!.flag)!);
      const fields = (['completions', 'chat'] as const).flatMap((e) => s.server![e].map((f) => [e, f] as const));
      const { inside, outside } = probes(s);
      for (const p of inside) {
        const want = parseField('completions', s.server!.completions[0], p.json);
        assert.equal(want.error, undefined, `${s.name} = ${JSON.stringify(p.json)}: ${want.error}`);
        for (const [e, f] of fields)
          assert.deepEqual(parseField(e, f, p.json), want, `${e} ${f} = ${JSON.stringify(p.json)}`);
        if (p.text !== undefined) {
          for (const opt of flags) {
            const got = parseFlag(opt, p.text);
            assert.equal(got.error, undefined, `${opt.long} ${p.text}: ${got.error}`);
            assert.deepEqual(got.value, want.value, `${opt.long} ${p.text}`);
          }
        }
      }
      for (const p of outside) {
        for (const [e, f] of fields) {
          const got = parseField(e, f, p.json);
          assert.ok(
            got.error?.startsWith(`${f} must be ${ruleOf(s)}, got `),
            `${e} ${f} = ${JSON.stringify(p.json)}: ${got.error}`,
          );
        }
        if (p.text !== undefined && s.type !== 'enum' && s.type !== 'texts') {
          for (const opt of flags) {
            const got = parseFlag(opt, p.text);
            assert.equal(got.error, `${s.cli!.flag} must be ${ruleOf(s)}, got ${p.text}`, `${opt.long} ${p.text}`);
          }
        }
      }
    }
  });

  it('an out-of-range flag is a usage error before anything loads, naming the flag and stating the range', async () => {
    for (const make of [generateCommand, chatCommand, evalCommand]) {
      let printed = '';
      const cmd = make()
        .exitOverride()
        .configureOutput({
          writeErr: (str) => {
            printed += str;
          },
          writeOut: () => {},
        });
      await assert.rejects(
        cmd.parseAsync(['--model', 'nowhere', '--gumbel-tau', '1e-300', 'x'], { from: 'user' }),
        (e: unknown) => (e as { code?: string }).code === 'commander.invalidArgument',
        cmd.name(),
      );
      assert.match(printed, /--gumbel-tau must be in \[1e-3, 1e3\], got 1e-300/, cmd.name());
    }
  });

  it("the README's settings table states each setting's flags, fields, range and default as the table does", () => {
    const readme = readFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'README.md'), 'utf8');
    for (const s of SETTINGS)
      assert.ok(readme.includes(readmeRow(s) + '\n'), `README row of ${s.name}:\n${readmeRow(s)}`);
  });

  it("the server schema's setting fields are exactly the table's", () => {
    const own: Record<Endpoint, string[]> = {
      completions: [
        'model',
        'n',
        'stream',
        'stream_options',
        'user',
        'stop_token_ids',
        'skip_special_tokens',
        'prompt',
        'echo',
        'suffix',
        'add_special_tokens',
        'best_of',
        'response_format',
      ],
      chat: [
        'model',
        'n',
        'stream',
        'stream_options',
        'user',
        'stop_token_ids',
        'skip_special_tokens',
        'messages',
        'logprobs',
        'chat_template_kwargs',
        'add_generation_prompt',
        'add_special_tokens',
        'best_of',
        'response_format',
        'echo',
        'continue_final_message',
        'tools',
        'tool_choice',
        'functions',
        'function_call',
      ],
    };
    for (const [endpoint, schema] of [
      ['completions', completionSchema],
      ['chat', chatSchema],
    ] as const) {
      const table = SETTINGS.flatMap((s) => s.server![endpoint]);
      assert.deepEqual(
        Object.keys(schema.shape)
          .filter((k) => !own[endpoint].includes(k))
          .sort(),
        [...table].sort(),
        endpoint,
      );
    }
  });

  it("eval's endpoint client sends every setting as the field the server's schema reads back to the same values", async () => {
    const seen: { url: string; body: Record<string, unknown> }[] = [];
    const server = http.createServer((req, res) => {
      let data = '';
      req.on('data', (d) => {
        data += d;
      });
      req.on('end', () => {
        seen.push({ url: req.url!, body: JSON.parse(data) as Record<string, unknown> });
        const chat = req.url === '/v1/chat/completions';
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            id: 'x',
            object: chat ? 'chat.completion' : 'text_completion',
            created: 0,
            model: 'm',
            choices: [
              chat
                ? { index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }
                : { index: 0, text: 'ok', finish_reason: 'stop', logprobs: null },
            ],
            usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
          }),
        );
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    const request: Omit<CompletionRequest, 'key' | 'rendered'> = {
      messages: [{ role: 'user', content: 'Hi' }],
      assistantPrefix: 'Sure',
      promptText: 'Hi',
      mode: 'soft',
      beta: 2,
      mixTopK: 5,
      soft: {
        thinkEnd: '</t>',
        thinkEndId: 4,
        coldStopEntropy: 0.01,
        coldStopSteps: 3,
        afterThinking: { temperature: 0.7, topP: 0.8, topK: 6, minP: 0.02 },
        noise: 'gumbel',
        gumbelTau: 0.5,
        dirichletAlpha: 2,
      },
      sampling: { temperature: 0.5, topP: 0.9, topK: 7, minP: 0.05, seed: 11 },
      maxTokens: 9,
    };
    const completer = new EndpointCompleter(url, 'm', 1, 'k');
    try {
      for (const rendered of [true, false]) {
        for await (const r of completer.complete([{ ...request, key: String(rendered), rendered }]))
          assert.equal(r.completion, 'ok');
      }
    } finally {
      await completer.close();
      server.close();
    }
    // the fields as vLLM's and this server's request bodies name them (written out here)
    const fields = {
      model: 'm',
      moi_mode: 'soft',
      moi_beta: 2,
      moi_topk: 5,
      temperature: 0.5,
      top_p: 0.9,
      top_k: 7,
      min_p: 0.05,
      seed: 11,
      think_end: '</t>',
      think_end_id: 4,
      cold_stop_entropy: 0.01,
      cold_stop_steps: 3,
      after_thinking_temperature: 0.7,
      after_thinking_top_p: 0.8,
      after_thinking_top_k: 6,
      after_thinking_min_p: 0.02,
      soft_noise: 'gumbel',
      gumbel_tau: 0.5,
      dirichlet_alpha: 2,
    };
    assert.deepEqual(
      seen.map((s) => s.url),
      ['/v1/completions', '/v1/chat/completions'],
    );
    assert.deepEqual(seen[0].body, { ...fields, prompt: 'Hi', max_tokens: 9 });
    assert.deepEqual(seen[1].body, {
      ...fields,
      max_completion_tokens: 9,
      continue_final_message: true,
      add_generation_prompt: false,
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Sure' },
      ],
    });
    // and the server reads them back as what eval asked for
    const want = {
      sampling: request.sampling,
      mix: { mode: 'soft', beta: 2, topK: 5, soft: request.soft },
      maxTokens: 9,
    };
    assert.deepEqual(settingsOf(completionSchema.parse(seen[0].body), 'completions'), want);
    assert.deepEqual(settingsOf(chatSchema.parse(seen[1].body), 'chat'), want);
  });

  describe('a real server (stories260K)', function () {
    let engine: Engine;
    let scheduler: Scheduler;
    let base = '';
    let close = async () => {};
    before(async function () {
      if (!shared) {
        console.log(SHARED_MISSING);
        this.skip();
      }
      engine = await Engine.load(path.join(shared!, 'fixtures/stories260K'), { backend: 'wasm' });
      scheduler = new Scheduler(engine, { maxSeqs: 2, maxModelLen: 256 });
      const chatTemplate = '{% for m in messages %}{{ bos_token }}{{ m.content }}{% endfor %}';
      const { app } = buildServer(engine, scheduler, { modelName: 'm', chatTemplate, log: () => {} });
      base = await app.listen({ host: '127.0.0.1', port: 0 });
      close = async () => {
        await scheduler.close();
        await app.close();
        engine.dispose();
      };
    });
    after(() => close());

    const post = async (endpoint: Endpoint, body: Record<string, unknown>) => {
      const full =
        endpoint === 'chat'
          ? { messages: [{ role: 'user', content: 'Once' }], ...body }
          : { prompt: 'Once upon a time', ...body };
      const r = await fetch(`${base}/v1/${endpoint === 'chat' ? 'chat/completions' : 'completions'}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ max_tokens: 3, ...full }),
      });
      return {
        status: r.status,
        json: (await r.json()) as {
          error?: { message: string; param: string | null };
          choices?: unknown[];
          moi?: { mode: string; think_end_id?: number };
        },
      };
    };

    it('an out-of-range value is a 400 naming the field as param, the range in its message (every numeric field, both endpoints)', async () => {
      for (const s of SETTINGS.filter((x) => x.type === 'number' || x.type === 'int' || x.type === 'count')) {
        for (const endpoint of ['completions', 'chat'] as const) {
          const field = s.server![endpoint][0];
          const value = probes(s).outside[0].json;
          const r = await post(endpoint, { [field]: value });
          assert.equal(r.status, 400, `${endpoint} ${field} = ${String(value)}`);
          assert.equal(r.json.error!.param, field);
          assert.ok(r.json.error!.message.startsWith(`${field} must be ${ruleOf(s)}, got `), r.json.error!.message);
        }
      }
      const tau = await post('completions', {
        moi_mode: 'soft',
        think_end_id: 2,
        soft_noise: 'gumbel',
        gumbel_tau: 1e-300,
      });
      assert.deepEqual(
        [tau.status, tau.json.error!.param, tau.json.error!.message],
        [400, 'gumbel_tau', 'gumbel_tau must be in [1e-3, 1e3], got 1e-300'],
      );
    });

    it('a bad moi_beta names moi_beta, and each engine-level refusal names its own field', async () => {
      const cases: [Record<string, unknown>, string][] = [
        [{ moi_beta: -5 }, 'moi_beta'],
        [{ moi_mode: 'moi', moi_beta: -100 }, 'moi_beta'], // the direct sentinel, with moi asked for
        [{ moi_mode: 'moi', moi_topk: 99999 }, 'moi_topk'], // larger than the vocabulary
        [{ moi_mode: 'moi', gumbel_tau: 2 }, 'gumbel_tau'], // a Soft Thinking field without mode soft
        [{ moi_mode: 'soft' }, 'think_end'], // no token for '</think>' in this vocabulary
        [{ moi_mode: 'soft', think_end_id: 600 }, 'think_end_id'],
      ];
      for (const [body, param] of cases) {
        for (const endpoint of ['completions', 'chat'] as const) {
          const r = await post(endpoint, body);
          assert.equal(r.status, 400, JSON.stringify(body));
          assert.equal(r.json.error!.param, param, `${JSON.stringify(body)}: ${r.json.error!.message}`);
        }
      }
    });

    it("a request's settings are validated once (the think-end text is looked up once), and the ends of the ranges run", async () => {
      const tok = engine.tokenizer!;
      const encode = tok.encode.bind(tok);
      let lookups = 0;
      tok.encode = (text, opts) => {
        if (text === 'Once' && opts?.addSpecialTokens === false) lookups++;
        return encode(text, opts);
      };
      try {
        const r = await post('completions', { moi_mode: 'soft', think_end: 'Once', ignore_eos: true });
        assert.equal(r.status, 200, r.json.error?.message);
        assert.equal(r.json.moi!.think_end_id, 403);
      } finally {
        tok.encode = encode;
      }
      assert.equal(lookups, 1, 'one validation of the settings per request');
      for (const body of [
        { moi_mode: 'soft', think_end_id: 2, soft_noise: 'gumbel', gumbel_tau: 1e-3, temperature: 1e-5 },
        { moi_mode: 'soft', think_end_id: 2, soft_noise: 'dirichlet', dirichlet_alpha: 1e3, top_k: -1 },
        { moi_mode: 'moi', moi_beta: 1e9, moi_prior: 'processed', temperature: 100, repetition_penalty: 0.01 },
      ]) {
        const r = await post('chat', { ...body, ignore_eos: true, seed: 4294967295 });
        assert.equal(r.status, 200, `${JSON.stringify(body)}: ${r.json.error?.message}`);
        assert.equal(r.json.choices!.length, 1);
      }
    });
  });
});
