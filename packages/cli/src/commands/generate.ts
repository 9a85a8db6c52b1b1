/**
 * `moi-gen generate` (the default command): one prompt in, text streamed out. With --json, one
 * machine-readable object instead: text, tokens, per-step entropy and mix weight, stats.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { UsageError } from '@moi/core';
import { generate, type DoneEvent, type TokenEvent } from '../engine/generate.ts';
import type { Engine } from '../engine/engine.ts';
import { encodeChat } from '../text/index.ts';
import { loadEngine, type ModelFlags } from './load.ts';
import { addModelOptions, addSamplingOptions, checkMaxTokens, idList, mixFrom, samplingFrom, userPath, type SamplingFlags } from './options.ts';
import { TRACE_TOP, parseModes, traceModes, traceStep, writeTracePage, type TraceRun } from '../trace/trace.ts';

interface GenerateFlags extends ModelFlags, SamplingFlags {
  prompt?: string;
  ids?: number[];
  chat?: boolean;
  system?: string;
  json?: boolean;
  stats?: boolean;
  trace?: string;
  compareModes?: string;
}

/** Prompt text from -p, the arguments, or stdin (when it is not a terminal). */
function promptText(args: string[], o: GenerateFlags): string | null {
  if (o.prompt !== undefined) return o.prompt;
  if (args.length) return args.join(' ');
  if (!process.stdin.isTTY) {
    const text = readFileSync(0, 'utf8');
    return text.length ? text.replace(/\n$/, '') : null;
  }
  return null;
}

export function promptIds(engine: Engine, text: string | null, o: { ids?: number[]; chat?: boolean; system?: string }): number[] {
  if (o.ids) {
    if (text !== null) throw new UsageError('E_USAGE', 'give either --ids or a prompt, not both');
    if (o.chat) throw new UsageError('E_USAGE', '--chat needs a text prompt, not --ids');
    return o.ids;
  }
  if (text === null) throw new UsageError('E_USAGE', 'no prompt: pass it as an argument, with -p, on stdin, or as --ids');
  const tok = engine.tokenizer;
  if (!tok) throw new UsageError('E_USAGE', `${engine.dir} has no tokenizer.json: pass token ids with --ids`);
  if (o.chat) {
    const messages = [...(o.system ? [{ role: 'system', content: o.system }] : []), { role: 'user', content: text }];
    return encodeChat(tok, messages, { addGenerationPrompt: true });
  }
  if (o.system) throw new UsageError('E_USAGE', '--system needs --chat');
  return tok.encode(text, { addSpecialTokens: true });
}

async function run(args: string[], o: GenerateFlags): Promise<void> {
  checkMaxTokens(o.maxTokens);
  const text = o.ids ? null : promptText(args, o);
  const { engine, progress } = await loadEngine(o, Boolean(o.json));
  const ids = promptIds(engine, text, o);
  const request = {
    promptIds: ids, maxTokens: o.maxTokens, sampling: samplingFrom(o), mix: mixFrom(o),
    stop: o.stop, ignoreEos: Boolean(o.ignoreEos), ...(o.trace ? { trace: TRACE_TOP } : {}),
  };
  if (o.compareModes) {
    if (!o.trace) throw new UsageError('E_USAGE', '--compare-modes writes a trace page: give --trace out.html');
    const runs = await traceModes(engine, request, parseModes(o.compareModes));
    for (const r of runs) process.stdout.write(`[${r.label}] ${r.text}\n`);
    writeTracePage(userPath(o.trace), { model: engine.dir, prompt: engine.tokenizer?.decode(ids) ?? ids.join(','), runs });
    return;
  }
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once('SIGINT', onSigint);
  const tokens: TokenEvent[] = [];
  let done: DoneEvent | null = null;
  try {
    for await (const e of generate(engine, [request], { signal: abort.signal, onPrefill: (p) => progress.prefill(p) })) {
      if (e.type === 'token') {
        tokens.push(e);
        if (!o.json && e.text) process.stdout.write(e.text);
      } else done = e;
    }
  } finally {
    process.off('SIGINT', onSigint);
    progress.stop();
  }
  if (!done) return;
  if (o.trace) {
    const run: TraceRun = { label: request.mix.mode ?? 'standard', mode: request.mix.mode ?? 'standard', text: done.text, finishReason: done.finishReason, steps: tokens.map((t, i) => traceStep(engine, t, i ? tokens[i - 1].token : ids[ids.length - 1])) };
    writeTracePage(userPath(o.trace), { model: engine.dir, prompt: engine.tokenizer?.decode(ids) ?? ids.join(','), runs: [run] });
  }
  const mix = request.mix;
  if (o.json) {
    const mode = tokens.find((t) => t.mix) ? 'mixing' : 'standard';
    process.stdout.write(JSON.stringify({
      model: engine.dir,
      backend: engine.backend.name,
      prompt_tokens: ids.length,
      text: engine.tokenizer ? done.text : null,
      tokens: done.tokens,
      entropy: mode === 'standard' ? null : tokens.map((t) => t.mix?.entropy ?? null),
      mix_weight: mode === 'standard' ? null : tokens.map((t) => t.mix?.weight ?? null),
      logprobs: request.sampling.logprobs !== undefined ? tokens.map((t) => t.logprobs ?? null) : undefined,
      finish_reason: done.finishReason,
      stats: done.stats,
      settings: { mode: mix.mode ?? null, beta: mix.beta ?? null, mix_topk: mix.topK ?? null },
    }) + '\n');
    return;
  }
  process.stdout.write('\n');
  if (o.stats) {
    const s = done.stats;
    process.stderr.write(`[${engine.backend.name}] prompt ${s.promptTokens} tok, ${s.prefillTokPerSec.toFixed(1)} tok/s | ` +
      `generated ${s.generatedTokens} tok, ${s.decodeTokPerSec.toFixed(1)} tok/s | finish: ${s.finishReason}\n`);
  }
}

export function generateCommand(): Command {
  const cmd = new Command('generate')
    .description('generate text from a prompt (standard decoding or Mixture of Inputs)')
    .argument('[prompt...]', 'the prompt (else -p, or stdin)')
    .option('-p, --prompt <text>', 'the prompt')
    .option('--ids <ids>', 'the prompt as raw token ids, e.g. 1,2,3', idList)
    .option('--chat', 'wrap the prompt in the model\'s chat template')
    .option('--system <text>', 'system prompt (with --chat)')
    .option('--json', 'print one JSON object: text, tokens, per-step entropy and mix weight, stats')
    .option('--stats', 'print speed and finish reason to stderr')
    .option('--trace <file.html>', 'write a page of the tokens coloured by entropy, with each step\'s candidates')
    .option('--compare-modes <modes>', 'with --trace: decode the prompt in each mode (e.g. standard,moi) and align them');
  addModelOptions(cmd);
  addSamplingOptions(cmd);
  return cmd.action((args: string[], o: GenerateFlags) => run(args, o));
}
