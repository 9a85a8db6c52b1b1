/**
 * moi-gen behaves as users of other tools expect (test/support/cli.ts: in-process through
 * main(argv), and the real binary where stdin, a signal or a closed stdout is involved; started
 * together in `before`, a few at a time):
 * - a mistyped subcommand is refused with "did you mean" (exit 2), also in the subcommand's place
 *   before other words or flags (`genrate … hello`, `evl … --task …`); `moi-gen --model M prompt` works;
 * - conflicting prompts are refused; capped or ineffective flags warn on stderr;
 * - messages name the flags typed; one `moi-gen: error:` prefix; context overflow exits 2 in
 *   generate and score alike; SIGINT exits 130; a closed stdout ends the run quietly;
 * - the aliases --temp, -n, -c/--ctx-size, -f/--file, --system-prompt, -v/--verbose;
 * - ids are printed when the model has no tokenizer (equal to the reference's greedy ids);
 * - the chat template is checked at start-up; a missing one points to --chat-template;
 * - NaN weights end generate and score with E_NONFINITE naming the step or position.
 */
import assert from 'node:assert/strict';
import { closeSync, cpSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SafetensorsFile, sharedDir, SHARED_MISSING } from '@moi/core';
import { moiGen, type CliResult, type SpawnOptions } from './support/cli.ts';

type Result = CliResult;
/** A command line; `input`, `closeStdout` and `interruptAfter` make it a child process. */
interface Job extends SpawnOptions {
  args: string[];
}

const shared = sharedDir();
const fx = (name: string) => path.join(shared ?? '', 'fixtures', name);

const run = (job: Job): Promise<Result> => moiGen(job.args, job);

const NO_TRACE = /^\s+at .+[(:]|internal error|node_modules|tfjs-backend-wasm|=>\s*\{/m;

function assertError(r: Result, code: number, mentions: RegExp[], label: string): void {
  assert.equal(r.code, code, `${label}: exit code (stderr: ${r.stderr})`);
  assert.match(r.stderr, /^moi-gen: error: /m, `${label}: the one error prefix`);
  for (const m of mentions) assert.match(r.stderr, m, label);
  assert.doesNotMatch(r.stderr, NO_TRACE, `${label}: no stack trace or runtime source`);
}

describe('cli: moi-gen hardening (child processes)', function () {
  const results = new Map<string, Promise<Result>>();
  const result = (name: string) => results.get(name)!;
  let tmp = '';

  before(async function () {
    // ~25 child processes, three at a time: about 45 s on an idle 2-core machine; allow for load
    this.timeout(300_000);
    if (!shared) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-cli-hard-'));
    // stories260K with a NaN in the final norm
    const nan = path.join(tmp, 'nan');
    cpSync(fx('stories260K'), nan, { recursive: true });
    const f = SafetensorsFile.open(path.join(nan, 'model.safetensors'));
    const at = f.info('model.norm.weight').offset;
    f.close();
    const fd = openSync(path.join(nan, 'model.safetensors'), 'r+');
    writeSync(fd, new Uint8Array(new Float32Array([Number.NaN]).buffer), 0, 4, at);
    closeSync(fd);
    writeFileSync(path.join(tmp, 'prompt.txt'), 'Once\n');
    writeFileSync(path.join(tmp, 'broken.jinja'), '{% if %}');
    writeFileSync(
      path.join(tmp, 'plain.jinja'),
      '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}',
    );

    const S = fx('stories260K');
    const greedy = ['--model', S, '--temperature', '0', '--ignore-eos'];
    const longIds = Array.from({ length: 600 }, () => '1').join(',');
    const jobs: Record<string, Job> = {
      'typo-chat': { args: ['chatt', '--model', S] },
      'typo-bench': { args: ['bnech', '--model', S, '--json'] },
      // in the subcommand's place, before a prompt or a flag of the command meant (issue 24, item 8)
      'typo-genrate': { args: ['genrate', '--model', S, 'hello'] },
      'typo-evl': { args: ['evl', '--model', S, '--task', 'countdown:gen'] },
      // a prompt whose first word resembles a short command name still generates
      'prompt-like-chat': { args: ['what', 'is', 'it', '--model', S, '--temperature', '0', '-n', '2'] },
      'explicit-generate': { args: ['generate', ...greedy, '--max-tokens', '2', 'chatt'] },
      'ids-and-prompt': { args: ['--model', S, '--ids', '1,2', 'Hi'] },
      'p-and-file': { args: ['--model', S, '-p', 'Hi', '-f', path.join(tmp, 'prompt.txt')] },
      'score-ids-and-prompt': { args: ['score', '--model', S, '--ids', '1,2', 'Hi'] },
      warnings: {
        args: [
          ...greedy,
          '--max-tokens',
          '1000',
          '--logprobs',
          '2',
          '--mode',
          'direct',
          '--beta',
          '2',
          'Once upon a time',
        ],
      },
      'capped-json': { args: [...greedy, '--max-tokens', '1000', '--json', '--ids', '1,403,407,261,378'] },
      'top-p': { args: ['--model', S, '--top-p', '2', 'x'] },
      'mix-topk': { args: ['--model', S, '--mode', 'moi', '--mix-topk', '99999', 'x'] },
      'unknown-option': { args: ['--model', S, '--bogus', 'x'] },
      'overflow-generate': { args: ['--model', S, '--ids', longIds] },
      'overflow-score': { args: ['score', '--model', S, '--ids', longIds] },
      // a one-word prompt that is no command's near miss generates as before
      'aliases-long': { args: ['--model', S, '--temperature', '0', '--max-tokens', '12', '--ignore-eos', 'Once'] },
      'aliases-short': {
        args: ['--model', S, '--temp', '0', '-n', '12', '--ignore-eos', '-f', path.join(tmp, 'prompt.txt'), '-v'],
      },
      'ctx-size': { args: [...greedy, '-c', '16', '--max-tokens', '100', '--json', '--ids', '1,403,407,261,378'] },
      'system-prompt': {
        args: [
          ...greedy,
          '-n',
          '6',
          '--chat',
          '--chat-template',
          path.join(tmp, 'plain.jinja'),
          '--system-prompt',
          'Be kind.',
          '--json',
          'Hi',
        ],
      },
      system: {
        args: [
          ...greedy,
          '-n',
          '6',
          '--chat',
          '--chat-template',
          path.join(tmp, 'plain.jinja'),
          '--system',
          'Be kind.',
          '--json',
          'Hi',
        ],
      },
      'no-tokenizer': {
        args: ['--model', fx('llama'), '--temperature', '0', '--ignore-eos', '-n', '24', '--ids', '1,499,377,390,368'],
      },
      'chat-no-template': { args: ['chat', '--model', S], input: 'Hello\n' },
      'chat-broken-template': {
        args: ['chat', '--model', S, '--chat-template', path.join(tmp, 'broken.jinja')],
        input: 'Hello\n',
      },
      'chat-turn-error': {
        args: ['chat', ...greedy, '-n', '4', '--chat-template', path.join(tmp, 'plain.jinja'), '-c', '32'],
        input: 'Hi\nOnce upon a time there was a long story\n',
      },
      epipe: { args: [...greedy, '--max-tokens', '400', 'Once upon a time'], closeStdout: true },
      sigint: { args: [...greedy, '--max-tokens', '100000', '-c', '512', 'Once upon a time'], interruptAfter: 1 },
      // past the load's weight check (--no-check-tensors), generation's own check stops them
      'nan-generate': { args: ['--model', path.join(tmp, 'nan'), '--no-check-tensors', '--ids', '1,2', '-n', '3'] },
      'nan-score': { args: ['score', '--model', path.join(tmp, 'nan'), '--no-check-tensors', '--ids', '1,2'] },
    };
    const running = new Set<Promise<unknown>>();
    for (const [name, job] of Object.entries(jobs)) {
      while (running.size >= 3) await Promise.race(running);
      const p = run(job);
      results.set(name, p);
      const settled = p.catch(() => {}).finally(() => running.delete(settled));
      running.add(settled);
    }
  });

  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('a word that looks like a subcommand: exit 2 with "did you mean"; a prompt word still generates', async () => {
    assertError(await result('typo-chat'), 2, [/unknown command 'chatt': did you mean 'chat'\?/], 'chatt');
    assertError(await result('typo-bench'), 2, [/did you mean 'bench'\?/], 'bnech');
    for (const name of ['typo-chat', 'typo-bench']) assert.equal((await result(name)).stdout, '');
    const word = await result('aliases-long');
    assert.equal(word.code, 0, word.stderr);
    assert.ok(word.stdout.trim().length > 0);
    const explicit = await result('explicit-generate');
    assert.equal(explicit.code, 0, explicit.stderr);
  });

  it('a mistyped subcommand before a prompt or flags: exit 2 with "did you mean", nothing generated', async () => {
    assertError(await result('typo-genrate'), 2, [/unknown command 'genrate': did you mean 'generate'\?/], 'genrate');
    assertError(await result('typo-evl'), 2, [/unknown command 'evl': did you mean 'eval'\?/], 'evl');
    for (const name of ['typo-genrate', 'typo-evl']) assert.equal((await result(name)).stdout, '');
    const prompt = await result('prompt-like-chat');
    assert.equal(prompt.code, 0, prompt.stderr);
    assert.ok(prompt.stdout.trim().length > 0);
  });

  it('conflicting inputs are refused, naming both', async () => {
    assertError(await result('ids-and-prompt'), 2, [/conflicting prompts/, /--ids/, /"Hi"/], 'ids + prompt');
    assertError(await result('p-and-file'), 2, [/-p\/--prompt/, /-f\/--file/], '-p + -f');
    assertError(await result('score-ids-and-prompt'), 2, [/conflicting prompts/], 'score');
  });

  it('warns on stderr when a flag is capped or has no effect, and the cap holds', async () => {
    const w = await result('warnings');
    assert.equal(w.code, 0, w.stderr);
    assert.match(
      w.stderr,
      /^moi-gen: warning: --max-tokens 1000 is capped at 508: the context is 512 tokens \(max_position_embeddings\) and the prompt has 5$/m,
    );
    assert.match(w.stderr, /^moi-gen: warning: --logprobs has no effect without --json$/m);
    assert.match(w.stderr, /^moi-gen: warning: --beta has no effect with --mode direct$/m);
    const j = await result('capped-json');
    assert.equal(j.code, 0, j.stderr);
    const out = JSON.parse(j.stdout) as { tokens: number[]; finish_reason: string };
    assert.equal(out.tokens.length, 508); // 512 positions: 5 prompt tokens + 507 fed back + the last one
    assert.equal(out.finish_reason, 'length');
  });

  it('messages name the flags typed; one prefix; context overflow exits 2 in generate and score', async () => {
    assertError(await result('top-p'), 2, [/--top-p must be in \(0, 1\]/], 'top-p');
    assertError(await result('mix-topk'), 2, [/--mix-topk 99999 is larger than the vocabulary/], 'mix-topk');
    for (const name of ['top-p', 'mix-topk'])
      assert.doesNotMatch((await result(name)).stderr, /sampling\.|option topK|^moi: /m);
    assertError(await result('unknown-option'), 2, [/^moi-gen: error: unknown option '--bogus'/m], 'commander');
    assertError(await result('overflow-generate'), 2, [/600 tokens but the context is 512/], 'generate overflow');
    assertError(await result('overflow-score'), 2, [/600 tokens but the context is 512/], 'score overflow');
  });

  it('aliases: --temp, -n, -f and -v equal their long forms; -c caps the context', async () => {
    const long = await result('aliases-long');
    const short = await result('aliases-short');
    assert.equal(long.code, 0, long.stderr);
    assert.equal(short.code, 0, short.stderr);
    assert.equal(short.stdout, long.stdout);
    assert.match(short.stderr, /^moi-gen: loaded .*stories260K: llama, 5 layers/m); // -v
    assert.match(short.stderr, /generated 12 tok/);
    const c = await result('ctx-size');
    assert.equal(c.code, 0, c.stderr);
    assert.equal((JSON.parse(c.stdout) as { tokens: number[] }).tokens.length, 16 - 5 + 1);
    assert.match(c.stderr, /--max-tokens 100 is capped at 12: the context is 16 tokens \(--ctx-size\)/);
    const sp = await result('system-prompt');
    const s = await result('system');
    assert.equal(sp.code, 0, sp.stderr);
    assert.deepEqual(JSON.parse(sp.stdout).tokens, JSON.parse(s.stdout).tokens);
    assert.equal(JSON.parse(sp.stdout).prompt_tokens, JSON.parse(s.stdout).prompt_tokens);
  });

  it('a model without a tokenizer prints the generated ids (the reference greedy ids)', async () => {
    const ref = JSON.parse(readFileSync(path.join(fx('llama'), 'reference.json'), 'utf8')) as {
      cases: { input_ids: number[]; greedy: { tokens: number[] } }[];
    };
    const want = ref.cases.find((c) => c.input_ids.join() === '1,499,377,390,368')!.greedy.tokens;
    const r = await result('no-tokenizer');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, want.join(' ') + '\n');
  });

  it('the chat template is checked at start-up: a missing one names --chat-template, a broken one fails before any reply', async () => {
    assertError(await result('chat-no-template'), 2, [/no chat template/, /--chat-template FILE/], 'no template');
    const broken = await result('chat-broken-template');
    assertError(broken, 1, [/chat template does not parse/], 'broken template');
    assert.equal(broken.stdout, '');
    // piped: a turn that fails is reported, the session goes on, and the run's exit code says so
    const turn = await result('chat-turn-error');
    assert.equal(turn.code, 2, turn.stderr);
    assert.match(
      turn.stderr,
      /^moi-gen: error: chat: the conversation has \d+ tokens but the session holds at most 32/m,
    );
    assert.ok(turn.stdout.trim().length > 0, 'the first turn was answered');
  });

  it('a closed stdout ends the run quietly; SIGINT exits 130', async () => {
    const e = await result('epipe');
    assert.equal(e.code, 0, e.stderr.slice(0, 300));
    assert.equal(e.stderr, '');
    const i = await result('sigint');
    assert.equal(i.code, 130, i.stderr);
    assert.doesNotMatch(i.stderr, NO_TRACE);
  });

  it('NaN weights: generate and score end with E_NONFINITE naming the step or position (exit 1)', async () => {
    assertError(
      await result('nan-generate'),
      1,
      [/NaN\/Inf logits at step 0; the weights or config are broken/],
      'generate',
    );
    assertError(await result('nan-score'), 1, [/NaN\/Inf logits at position 0/], 'score');
  });
});
