/**
 * The moi-gen CLI as users run it (test/support/cli.ts: in-process through main(argv), a child
 * process of the binary for stdin, and once through `npx pnpm moi-gen`), checked against the
 * reference fixtures:
 * - greedy text, `score --json` logits and `generate --json` tokens / entropy equal the reference;
 * - MIXINPUTS_BETA in the environment equals the flags; prompts from stdin, -p and --stop;
 * - bad usage exits 2, a broken model exits 1, each with a one-line message and no stack trace.
 * The processes are started together (a few at a time) in `before`, the checks await them.
 */
import assert from 'node:assert/strict';
import { chmodSync, cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sharedDir, SHARED_MISSING } from '@moi/core';
import { loadTokenizer } from '@moi/engine';
import { moiGen as runMoiGen, type CliResult, type SpawnOptions } from './support/cli.ts';

interface RefCase {
  name: string;
  input_ids: number[];
  logits: number[][];
  greedy: { n: number; tokens: number[] };
}
interface MoiRef {
  mode: string;
  beta: number;
  input_ids: number[];
  tokens: number[];
  entropy: number[];
}
interface Reference {
  cases: RefCase[];
  moi: MoiRef[];
}

type Result = CliResult;
interface Job extends SpawnOptions {
  args: string[];
}

const shared = sharedDir();
const fixtures = shared ? path.join(shared, 'fixtures') : '';
const fx = (name: string) => path.join(fixtures, name);
const readReference = (name: string) =>
  JSON.parse(readFileSync(path.join(fx(name), 'reference.json'), 'utf8')) as Reference;

/** Run one command line to the end (in-process unless it needs a process). */
const run = (job: Job): Promise<Result> => runMoiGen(job.args, job);

const moiGen = (args: string[], extra: Omit<Job, 'args'> = {}): Job => ({ args, ...extra });

/** A failure message: moi-gen's own one-liner, no stack trace, no wasm runtime source. */
function assertCleanError(r: Result, code: number, mentions: RegExp[], label: string): void {
  assert.equal(r.code, code, `${label}: exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, '', `${label}: nothing on stdout`);
  for (const m of mentions) assert.match(r.stderr, m, label);
  assert.doesNotMatch(r.stderr, /^\s+at .+[(:]/m, `${label}: a stack trace`);
  assert.doesNotMatch(
    r.stderr,
    /internal error|node_modules|tfjs-backend-wasm|function\s*\(|=>\s*\{/,
    `${label}: runtime source or internals`,
  );
  assert.ok(r.stderr.length < 600, `${label}: stderr is ${r.stderr.length} chars`);
}

describe('cli: moi-gen as users run it', function () {
  const jobs = new Map<string, Job>();
  const results = new Map<string, Promise<Result>>();
  const result = (name: string): Promise<Result> => {
    const r = results.get(name);
    assert.ok(r, `no job ${name}`);
    return r;
  };
  let tmp = '';
  let stories: RefCase;
  let storyText = '';

  before(async function () {
    if (!shared) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    stories = readReference('stories260K').cases.find((c) => c.input_ids.join() === '1,403,407,261,378')!;
    assert.ok(stories, 'the stories260K case of "Once upon a time"');
    storyText = loadTokenizer(fx('stories260K')).decode(stories.greedy.tokens);

    // broken model folders
    tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-cli-'));
    for (const d of ['corrupt', 'unknown-type']) {
      cpSync(fx('llama'), path.join(tmp, d), { recursive: true });
      for (const f of ['config.json', 'model.safetensors', 'reference.json', 'moi_unit.json']) {
        try {
          chmodSync(path.join(tmp, d, f), 0o644);
        } catch {
          /* absent */
        }
      }
    }
    truncateSync(path.join(tmp, 'corrupt', 'model.safetensors'), 400_000);
    const cfgFile = path.join(tmp, 'unknown-type', 'config.json');
    writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(readFileSync(cfgFile, 'utf8')), model_type: 'mamba9' }));

    const llama = readReference('llama');
    const gemma2Direct = readReference('gemma2').moi.find((m) => m.mode === 'direct')!;
    const p12 = llama.cases[0].input_ids.join(',');
    const greedyJson = (model: string, ids: string, n: number, more: string[] = []) => [
      'generate',
      '--model',
      fx(model),
      '--ids',
      ids,
      '--max-tokens',
      String(n),
      '--temperature',
      '0',
      '--ignore-eos',
      '--json',
      ...more,
    ];
    const story = ['--model', fx('stories260K'), '--temperature', '0', '--max-tokens', '48', '--ignore-eos'];

    jobs.set('plain', moiGen([...story, 'Once upon a time']));
    jobs.set('pnpm', { args: [], command: ['npx', '-y', 'pnpm@10.34.9', 'moi-gen', ...story, 'Once upon a time'] });
    jobs.set('stdin', moiGen(story, { input: 'Once upon a time\n' }));
    jobs.set('prompt-stop', moiGen([...story, '-p', 'Once upon a time', '--stop', 'Lily']));
    jobs.set('score', moiGen(['score', '--model', fx('llama'), '--ids', p12, '--json']));
    jobs.set('greedy', moiGen(greedyJson('llama', p12, 24)));
    jobs.set('moi-0.5', moiGen(greedyJson('llama', p12, 12, ['--mode', 'moi', '--beta', '0.5'])));
    jobs.set(
      'direct',
      moiGen(greedyJson('gemma2', gemma2Direct.input_ids.join(','), gemma2Direct.tokens.length, ['--mode', 'direct'])),
    );
    jobs.set('moi-2', moiGen(greedyJson('llama', p12, 12, ['--mode', 'moi', '--beta', '2'])));
    jobs.set('env-2', moiGen(greedyJson('llama', p12, 12), { env: { MIXINPUTS_BETA: '2' } }));
    jobs.set('chat', moiGen([...story, '--chat', 'hello']));
    jobs.set('unknown-flag', moiGen(['--model', fx('llama'), '--ids', '1,2', '--bogus']));
    jobs.set('bad-temperature', moiGen(['--model', fx('llama'), '--ids', '1,2', '--temperature', 'abc']));
    jobs.set('bad-beta', moiGen(['--model', fx('llama'), '--ids', '1,2', '--beta', '-1', '--mode', 'moi']));
    jobs.set('bad-topk', moiGen(['--model', fx('llama'), '--ids', '1,2', '--mix-topk', '99999']));
    jobs.set('no-model', moiGen(['--ids', '1,2']));
    jobs.set('missing-dir', moiGen(['--model', path.join(tmp, 'no-such-model'), '--ids', '1,2']));
    jobs.set('corrupt', moiGen(['--model', path.join(tmp, 'corrupt'), '--ids', '1,2', '--max-tokens', '2']));
    jobs.set('unknown-type', moiGen(['--model', path.join(tmp, 'unknown-type'), '--ids', '1,2', '--max-tokens', '2']));
    jobs.set('help-generate', moiGen(['generate', '--help']));
    jobs.set('help-score', moiGen(['score', '--help']));

    // a few at a time (the machine has few cores); the slow npx one first
    const queue = [...jobs.keys()];
    const running = new Set<Promise<unknown>>();
    for (const name of queue) {
      while (running.size >= 3) await Promise.race(running);
      const p = run(jobs.get(name)!);
      results.set(name, p);
      const done = p.finally(() => running.delete(done));
      running.add(done);
    }
  });

  after(async () => {
    await Promise.allSettled(results.values());
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  describe('generation', function () {
    it('a prompt argument prints exactly the reference greedy text and a newline', async function () {
      const r = await result('plain');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, storyText + '\n');
    });

    it('`npx pnpm moi-gen` from the repo root prints the same and nothing else', async function () {
      const r = await result('pnpm');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, storyText + '\n');
    });

    it('the prompt from stdin, and from -p with --stop', async function () {
      const s = await result('stdin');
      assert.equal(s.code, 0, s.stderr);
      assert.equal(s.stdout, storyText + '\n');
      const p = await result('prompt-stop');
      assert.equal(p.code, 0, p.stderr);
      const at = storyText.indexOf('Lily');
      assert.ok(at > 0);
      assert.equal(p.stdout, storyText.slice(0, at) + '\n');
    });

    it('score --json prints the reference logits at every position', async function () {
      const r = await result('score');
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { input_ids: number[]; logits: number[][] };
      const c = readReference('llama').cases[0];
      assert.deepEqual(out.input_ids, c.input_ids);
      assert.equal(out.logits.length, c.logits.length);
      let scale = 1;
      for (const row of c.logits) for (const x of row) scale = Math.max(scale, Math.abs(x));
      for (let t = 0; t < c.logits.length; t++) {
        assert.equal(out.logits[t].length, c.logits[t].length);
        for (let v = 0; v < c.logits[t].length; v++) {
          assert.ok(
            Math.abs(out.logits[t][v] - c.logits[t][v]) <= 1e-4 * scale,
            `position ${t} token ${v}: ${out.logits[t][v]} vs ${c.logits[t][v]}`,
          );
        }
      }
    });

    it('generate --json: greedy tokens equal the reference', async function () {
      const r = await result('greedy');
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      const c = readReference('llama').cases[0];
      assert.deepEqual(out.tokens, c.greedy.tokens);
      assert.equal(out.finish_reason, 'length');
      // standard mode reports H too (issue 24): the normalized entropy of the top-20 prior; its
      // first step is that of the reference logits after the prompt (float64 here)
      assert.equal(out.entropy.length, c.greedy.tokens.length);
      for (const h of out.entropy) assert.ok(h >= 0 && h <= 1, `entropy ${h}`);
      const top = c.logits[c.logits.length - 1]
        .slice()
        .sort((a, b) => b - a)
        .slice(0, 20);
      const z = top.reduce((a, x) => a + Math.exp(x - top[0]), 0);
      const h0 =
        -top.reduce((a, x) => {
          const p = Math.exp(x - top[0]) / z;
          return a + p * Math.log(p);
        }, 0) / Math.log(20);
      assert.ok(Math.abs(out.entropy[0] - h0) < 1e-4, `H at step 0: ${out.entropy[0]} vs ${h0}`);
      assert.equal(out.mix_weight, null);
      assert.equal(out.settings.mode, 'standard');
      assert.equal(out.text, null, 'no tokenizer, no text');
    });

    it('generate --json with --mode moi --beta 0.5 and --mode direct: tokens and per-step entropy', async function () {
      const m = JSON.parse((await result('moi-0.5')).stdout);
      assert.equal(m.tokens.length, 12);
      assert.equal(m.entropy.length, 12);
      assert.equal(m.mix_weight.length, 12);
      assert.equal(m.settings.mode, 'moi');
      for (let s = 0; s < 12; s++) {
        assert.ok(m.entropy[s] >= 0 && m.entropy[s] <= 1, `entropy ${m.entropy[s]}`);
        // w_y = (H·p_y + β + 1 − H)/(β + 1) ≥ (1.5 − H)/1.5
        assert.ok(
          m.mix_weight[s] >= (1.5 - m.entropy[s]) / 1.5 - 1e-6 && m.mix_weight[s] <= 1 + 1e-6,
          `weight ${m.mix_weight[s]}`,
        );
      }
      // direct on gemma2 (whose float32 horizon is the full trajectory): the reference itself
      const ref = readReference('gemma2').moi.find((t) => t.mode === 'direct')!;
      const d = JSON.parse((await result('direct')).stdout);
      assert.deepEqual(d.tokens, ref.tokens);
      assert.equal(d.entropy.length, ref.tokens.length);
      for (let s = 0; s < ref.tokens.length; s++)
        assert.ok(Math.abs(d.entropy[s] - ref.entropy[s]) <= 1e-4, `step ${s} entropy`);
    });

    it('MIXINPUTS_BETA=2 without flags equals --mode moi --beta 2', async function () {
      const env = await result('env-2');
      const flags = await result('moi-2');
      assert.equal(env.code, 0, env.stderr);
      assert.equal(flags.code, 0, flags.stderr);
      const [a, b] = [JSON.parse(env.stdout), JSON.parse(flags.stdout)];
      assert.ok(Array.isArray(a.entropy), 'the environment turned mixing on');
      assert.deepEqual(a.tokens, b.tokens);
      assert.deepEqual(a.entropy, b.entropy);
      assert.deepEqual(a.mix_weight, b.mix_weight);
      const m05 = JSON.parse((await result('moi-0.5')).stdout);
      assert.notDeepEqual(a.mix_weight, m05.mix_weight, 'β matters to the weights');
    });
  });

  it('generate --json reports the settings that ran: numbers as numbers, defaults filled in, the source of each', async function () {
    const env = JSON.parse((await result('env-2')).stdout);
    assert.deepEqual(
      [env.settings.mode, env.settings_source.mode, env.settings.beta, env.settings_source.beta],
      ['moi', 'env', 2, 'env'],
    );
    assert.deepEqual([env.settings.temperature, env.settings_source.temperature], [0, 'flag']);
    assert.deepEqual(
      [env.settings.mix_topk, env.settings_source.mix_topk, env.settings.mix_prior],
      [20, 'default', 'raw'],
    );
    assert.deepEqual([env.settings.top_p, env.settings_source.top_p, env.settings.seed], [1, 'default', null]);
    const flags = JSON.parse((await result('moi-0.5')).stdout);
    assert.deepEqual(
      [flags.settings.beta, flags.settings_source.beta, flags.settings_source.mode],
      [0.5, 'flag', 'flag'],
    );
    assert.deepEqual(
      [flags.settings.max_tokens, flags.settings_source.max_tokens, flags.settings.ignore_eos],
      [12, 'flag', true],
    );
    const standard = JSON.parse((await result('greedy')).stdout);
    assert.deepEqual([standard.settings.mode, standard.settings_source.mode], ['standard', 'default']);
    assert.ok(
      !('beta' in standard.settings) && !('gumbel_tau' in standard.settings),
      'only the settings of the mode that ran',
    );
  });

  describe('errors', function () {
    it('--chat on a model without a chat template: exit 2 with a clear message', async function () {
      assertCleanError(await result('chat'), 2, [/^moi-gen: error: /, /chat template/], '--chat');
    });

    it('bad usage exits 2 with a message and no stack trace', async function () {
      const cases: [string, RegExp[]][] = [
        ['unknown-flag', [/unknown option '--bogus'/]],
        ['bad-temperature', [/--temperature/, /abc/]],
        ['bad-beta', [/^moi-gen: error: /, /beta/, /-1/]],
        ['bad-topk', [/^moi-gen: error: /m, /99999/]],
        ['no-model', [/--model/]],
      ];
      for (const [name, mentions] of cases) assertCleanError(await result(name), 2, mentions, name);
    });

    it('a missing folder, a corrupt safetensors and an unknown model_type exit 1, naming the file or field', async function () {
      assertCleanError(await result('missing-dir'), 1, [/^moi-gen: error: /, /no-such-model/], 'missing folder');
      assertCleanError(
        await result('corrupt'),
        1,
        [/^moi-gen: error: /, /corrupt[/\\]model\.safetensors/],
        'corrupt safetensors',
      );
      assertCleanError(
        await result('unknown-type'),
        1,
        [/^moi-gen: error: /, /config\.json/, /model_type/, /mamba9/],
        'unknown model_type',
      );
    });
  });

  it('--help of generate and score exits 0 and lists the flags', async function () {
    const g = await result('help-generate');
    assert.equal(g.code, 0, g.stderr);
    for (const f of [
      '--model',
      '--temperature',
      '--top-p',
      '--max-tokens',
      '--stop',
      '--ignore-eos',
      '--mode',
      '--beta',
      '--mix-topk',
      '--json',
      '--ids',
      '--chat',
    ]) {
      assert.ok(g.stdout.includes(f), `generate --help lists ${f}`);
    }
    const s = await result('help-score');
    assert.equal(s.code, 0, s.stderr);
    for (const f of ['--model', '--ids', '--json', '--prompt'])
      assert.ok(s.stdout.includes(f), `score --help lists ${f}`);
  });
});
