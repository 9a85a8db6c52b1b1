/**
 * `moi-gen generate` (the default command): one prompt in, text streamed out. With --json, one
 * machine-readable object instead: text, tokens, per-step entropy and mix weight, stats.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { backendLabel, UsageError } from '@moi/core';
import {
  encodeChat,
  encodePrompt,
  generate,
  parseModeList,
  reportSettings,
  requestFromSettings,
  TokenTexts,
  type DoneEvent,
  type Engine,
  type GenerateRequest,
  type TokenEvent,
  type TokenLogprobs,
  type Tokenizer,
} from '@moi/engine';
import { loadEngine, type ModelFlags } from './load.ts';
import {
  addModelOptions,
  addSamplingOptions,
  alias,
  checkSamplingFlags,
  dtypeLabel,
  idList,
  int,
  settingFlags,
  userPath,
} from './options.ts';
import { interruption, warn } from './usage.ts';
import {
  checkTracePath,
  promptForDisplay,
  TRACE_TOP,
  traceModes,
  traceStep,
  traceTexts,
  writeTracePage,
  type TraceRun,
} from '../trace/trace.ts';

interface GenerateFlags extends ModelFlags {
  prompt?: string;
  file?: string;
  ids?: number[];
  chat?: boolean;
  system?: string;
  systemPrompt?: string;
  chatTemplate?: string;
  ctxSize?: number;
  json?: boolean;
  stats?: boolean;
  trace?: string;
  compareModes?: string;
  maxTokens: number;
}

/** The prompt sources given on the command line; more than one is a usage error. */
export function promptSources(args: string[], o: { prompt?: string; file?: string; ids?: number[] }): string[] {
  const given: string[] = [];
  if (args.length) given.push(`a prompt argument (${JSON.stringify(args.join(' ').slice(0, 40))})`);
  if (o.prompt !== undefined) given.push('-p/--prompt');
  if (o.file !== undefined) given.push('-f/--file');
  if (o.ids !== undefined) given.push('--ids');
  if (given.length > 1) throw new UsageError('E_USAGE', `conflicting prompts: ${given.join(' and ')}; give only one`);
  return given;
}

/**
 * A text file the user named with a flag, read whole; a bad one is a usage error naming the flag.
 * Pipes are fine here (`-f <(cmd)`, `-f /dev/stdin`): the user is the writer. (No stat first:
 * measured, a stat of a pipe before the backends load makes tfjs register its kernels twice.)
 */
export function readUserFile(flag: string, file: string): string {
  try {
    return readFileSync(userPath(file), 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'EISDIR' ? 'it is a directory' : code === 'ENOENT' ? 'it does not exist' : (e as Error).message;
    throw new UsageError('E_USAGE', `${flag} ${file}: cannot read it: ${why}`);
  }
}

/** Prompt text from -p, -f, the arguments, or stdin (when it is not a terminal). */
function promptText(args: string[], o: GenerateFlags): string | null {
  promptSources(args, o);
  if (o.prompt !== undefined) return o.prompt;
  if (o.file !== undefined) return readUserFile('--file', o.file).replace(/\n$/, '');
  if (args.length) return args.join(' ');
  if (!process.stdin.isTTY) {
    const text = readFileSync(0, 'utf8');
    return text.length ? text.replace(/\n$/, '') : null;
  }
  return null;
}

export function promptIds(
  engine: Engine,
  text: string | null,
  o: { ids?: number[]; chat?: boolean; system?: string; chatTemplate?: string },
): number[] {
  if (o.ids) {
    if (text !== null) throw new UsageError('E_USAGE', 'give either --ids or a prompt, not both');
    if (o.chat) throw new UsageError('E_USAGE', '--chat needs a text prompt, not --ids');
    return o.ids;
  }
  if (text === null)
    throw new UsageError('E_USAGE', 'no prompt: pass it as an argument, with -p, -f, on stdin, or as --ids');
  const tok = engine.tokenizer;
  if (!tok) throw new UsageError('E_USAGE', `${engine.dir} has no tokenizer.json: pass token ids with --ids`);
  if (o.chat) {
    const messages = [...(o.system ? [{ role: 'system', content: o.system }] : []), { role: 'user', content: text }];
    const template =
      o.chatTemplate === undefined
        ? undefined
        : { ...templateTokens(tok), chatTemplate: o.chatTemplate, chatTemplateOrigin: 'the --chat-template file' };
    return encodeChat(tok, messages, { template, addGenerationPrompt: true });
  }
  if (o.system) throw new UsageError('E_USAGE', '--system needs --chat');
  return encodePrompt(tok, text);
}

function templateTokens(tok: Tokenizer) {
  return {
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
    padToken: tok.padToken,
    unkToken: tok.unkToken,
    source: tok.source,
  };
}

/**
 * The most new tokens that fit: the context (--ctx-size, capped by max_position_embeddings)
 * holds the prompt and every generated token but the last. A prompt that fills it is E_CONTEXT.
 */
function fitMaxTokens(engine: Engine, promptLength: number, o: GenerateFlags, cmd: Command): number {
  const modelMax = engine.spec.maxPositionEmbeddings;
  let context = modelMax;
  if (o.ctxSize !== undefined) {
    if (o.ctxSize > modelMax)
      warn(`--ctx-size ${o.ctxSize} is capped at ${modelMax}, the model's context (max_position_embeddings)`);
    context = Math.min(o.ctxSize, modelMax);
  }
  const where = o.ctxSize !== undefined && context < modelMax ? '--ctx-size' : 'max_position_embeddings';
  if (promptLength >= context) {
    throw new UsageError(
      'E_CONTEXT',
      `the prompt has ${promptLength} tokens but the context is ${context} tokens (${where}); shorten the prompt`,
    );
  }
  const fits = context - promptLength + 1;
  if (o.maxTokens > fits) {
    if (cmd.getOptionValueSource('maxTokens') === 'cli') {
      warn(
        `--max-tokens ${o.maxTokens} is capped at ${fits}: the context is ${context} tokens (${where}) and the prompt has ${promptLength}`,
      );
    }
    return fits;
  }
  return o.maxTokens;
}

/**
 * A token's logprobs with the tokens' text beside their ids: what each adds after the tokens
 * before it (the prompt's included), so the chosen texts concatenated are the text; null text
 * without a tokenizer.
 */
function logprobsWithText(texts: TokenTexts | null, id: number, lp: TokenLogprobs) {
  const top =
    lp.top && texts
      ? lp.top.map((c) => ({ id: c.id, text: texts.peek(c.id).label, logprob: c.logprob }))
      : lp.top?.map((c) => ({ id: c.id, text: null, logprob: c.logprob }));
  const text = texts ? texts.next(id).label : null;
  return { id, text, logprob: lp.logprob, ...(top ? { top } : {}) };
}

async function run(args: string[], o: GenerateFlags, cmd: Command): Promise<void> {
  o.system = alias(o.system, o.systemPrompt, '--system', '--system-prompt');
  const flags = settingFlags(o, cmd);
  const compareModes = o.compareModes ? parseModeList(o.compareModes, '--compare-modes') : undefined;
  checkSamplingFlags(flags, { json: o.json, compareModes });
  if (o.ctxSize !== undefined && o.ctxSize < 2)
    throw new UsageError('E_USAGE', `--ctx-size must be an integer ≥ 2, got ${o.ctxSize}`);
  if (o.chatTemplate !== undefined && !o.chat) warn('--chat-template has no effect without --chat');
  const chatTemplate = o.chatTemplate !== undefined ? readUserFile('--chat-template', o.chatTemplate) : undefined;
  const text = o.ids ? (promptSources(args, o), null) : promptText(args, o);
  // the page's folder is checked before the model loads and anything is generated
  if (o.trace) checkTracePath(userPath(o.trace));
  const { engine, progress } = await loadEngine(o, Boolean(o.json));
  const ids = promptIds(engine, text, { ...o, chatTemplate });
  // --json reports H at every step, in standard mode too (the trace's columns, without candidates)
  const request: GenerateRequest = {
    ...requestFromSettings(flags.values),
    promptIds: ids,
    maxTokens: fitMaxTokens(engine, ids.length, o, cmd),
    ...(o.trace ? { trace: TRACE_TOP } : o.json ? { trace: 0 } : {}),
  };
  if (compareModes) {
    if (!o.trace) throw new UsageError('E_USAGE', '--compare-modes writes a trace page: give --trace out.html');
    const runs = await traceModes(engine, request, compareModes);
    for (const r of runs) process.stdout.write(`[${r.label}] ${r.text}\n`);
    // the page's settings line: those of the mixing mode compared (Soft Thinking's with soft), the modes listed
    const shown = compareModes.find((m) => m === 'soft') ?? compareModes.find((m) => m !== 'standard') ?? 'standard';
    const settings = reportSettings(engine, { ...request, mix: { ...request.mix, mode: shown } }, flags.typed, 'flag');
    const line = { ...traceSettings(settings.values), mode: compareModes.join(', ') };
    writeTracePage(userPath(o.trace), {
      model: engine.dir,
      prompt: promptForDisplay(engine.tokenizer, ids),
      runs,
      settings: line,
    });
    process.stderr.write(`trace page written to ${path.resolve(userPath(o.trace))}\n`);
    return;
  }
  const abort = new AbortController();
  const onSigint = () => {
    interruption.happened = true;
    abort.abort();
  };
  process.once('SIGINT', onSigint);
  const tokens: TokenEvent[] = [];
  let done: DoneEvent | null = null;
  // without a tokenizer the output is the ids themselves
  const write = engine.tokenizer
    ? (e: TokenEvent) => e.text && process.stdout.write(e.text)
    : (e: TokenEvent) => process.stdout.write(`${tokens.length > 1 ? ' ' : ''}${e.token}`);
  progress.begin();
  try {
    for await (const e of generate(engine, [request], {
      signal: abort.signal,
      onPrefill: (p) => progress.prefill(p),
      prefillChunk: progress.prefillChunk,
    })) {
      if (e.type === 'token') {
        tokens.push(e);
        if (!o.json) write(e);
      } else done = e;
    }
  } finally {
    process.off('SIGINT', onSigint);
    progress.stop();
  }
  if (!done) return;
  // what ran: every setting of the mode, defaults filled in, and where each came from
  const settings = reportSettings(engine, request, flags.typed, 'flag');
  const mode = String(settings.values.mode);
  if (o.trace) {
    const texts = traceTexts(engine, ids);
    const run: TraceRun = {
      label: mode,
      mode,
      text: done.text,
      finishReason: done.finishReason,
      steps: tokens.map((t) => traceStep(texts, t)),
    };
    writeTracePage(userPath(o.trace), {
      model: engine.dir,
      prompt: promptForDisplay(engine.tokenizer, ids),
      runs: [run],
      settings: traceSettings(settings.values),
    });
    process.stderr.write(`trace page written to ${path.resolve(userPath(o.trace))}\n`);
  }
  if (o.json) {
    const tok = engine.tokenizer;
    const texts = tok
      ? new TokenTexts(tok, { context: ids, skipSpecialTokens: request.skipSpecialTokens ?? true })
      : null;
    process.stdout.write(
      JSON.stringify({
        model: engine.dir,
        backend: engine.backend.name,
        // true on the cpu backend with MOI_FLUSH_SUBNORMALS=1 (a GPU's float32 arithmetic)
        flush_subnormals: engine.backend.flushSubnormals,
        // what the weight matrices are held as, and why (the --dtype choice resolved by the loader)
        dtype: engine.loaded.dtype,
        dtypeNote: engine.loaded.dtypeNote,
        // threads multiplying the weights (1: tfjs's kernels) and the pool's SIMD path (null without the pool)
        threads: engine.threads.threads,
        simd: engine.threads.simd,
        prompt_tokens: ids.length,
        text: engine.tokenizer ? done.text : null,
        tokens: done.tokens,
        // standard, moi, direct: the normalized entropy H of the prior over its top-K candidates;
        // soft: S in nats (null after thinking)
        entropy: tokens.map((t) => {
          const h = t.mix ? t.mix.entropy : t.trace?.entropy;
          return h !== undefined && Number.isFinite(h) ? h : null;
        }),
        mix_weight: mode === 'standard' ? null : tokens.map((t) => t.mix?.weight ?? null),
        logprobs:
          request.sampling?.logprobs !== undefined
            ? tokens.map((t) => (t.logprobs ? logprobsWithText(texts, t.token, t.logprobs) : null))
            : undefined,
        ...(mode === 'soft' ? { think_end: thinkEndOf(tokens) } : {}),
        finish_reason: done.finishReason,
        stats: done.stats,
        settings: settings.values,
        settings_source: settings.sources,
      }) + '\n',
    );
    return;
  }
  process.stdout.write('\n');
  if (o.stats || o.verbose) {
    const s = done.stats;
    process.stderr.write(
      `[${backendLabel(engine.backend)}, ${dtypeLabel(engine.loaded)}, ${engine.threads.note}] prompt ${s.promptTokens} tok, ${s.prefillTokPerSec.toFixed(1)} tok/s | ` +
        `generated ${s.generatedTokens} tok, ${s.decodeTokPerSec.toFixed(1)} tok/s | finish: ${s.finishReason}\n`,
    );
  }
}

/** The settings a trace page shows (seed, temperature, β, ...: what ran, defaults filled in). */
function traceSettings(values: Record<string, unknown>): Record<string, string | number | boolean | null> {
  const out: Record<string, string | number | boolean | null> = {};
  for (const [k, v] of Object.entries(values)) {
    if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
    else if (Array.isArray(v)) out[k] = JSON.stringify(v);
  }
  return out;
}

/** Soft Thinking: the step whose token ended thinking, and why (null while it never ended). */
function thinkEndOf(tokens: TokenEvent[]): { step: number; reason: string } | null {
  const step = tokens.findIndex((t) => t.mix?.soft?.thinkEnd);
  return step < 0 ? null : { step, reason: tokens[step].mix!.soft!.thinkEnd! };
}

export function generateCommand(): Command {
  const cmd = new Command('generate')
    .description('generate text from a prompt (standard decoding or Mixture of Inputs)')
    .argument('[prompt...]', 'the prompt (else -p, or stdin)')
    .option('-p, --prompt <text>', 'the prompt')
    .option('-f, --file <file>', 'read the prompt from a file')
    .option('--ids <ids>', 'the prompt as raw token ids, e.g. 1,2,3', idList)
    .option('--chat', "wrap the prompt in the model's chat template")
    .option('--system <text>', 'system prompt (with --chat); alias --system-prompt')
    .addOption(new Option('--system-prompt <text>', 'alias of --system').hideHelp())
    .option('--chat-template <file>', "a Jinja chat template to use instead of the model's (with --chat)")
    .option(
      '-c, --ctx-size <n>',
      "context size in tokens, prompt included (default and most: the model's max_position_embeddings)",
      int('--ctx-size'),
    )
    .option('--json', 'print one JSON object: text, tokens, per-step entropy and mix weight, stats')
    .option('--stats', 'print speed and finish reason to stderr')
    .option('--trace <file.html>', "write a page of the tokens coloured by entropy, with each step's candidates")
    .option(
      '--compare-modes <modes>',
      'with --trace: decode the prompt in each mode (e.g. standard,moi) and align them',
    );
  addModelOptions(cmd);
  addSamplingOptions(cmd);
  return cmd.action((args: string[], o: GenerateFlags, c: Command) => run(args, o, c));
}
