/**
 * `moi-gen eval`: a paired evaluation of decoding modes on Countdown, AIME or a JSONL task, with
 * resumable results, statistics and an HTML report. `moi-gen eval score` re-scores saved
 * completions.
 */
import fs from 'node:fs';
import { Command, Option } from 'commander';
import { UsageError } from '@moi/core';
import { givenSoftOptions, MAX_BETA, type SoftOptions } from '@moi/moi';
import { Engine, EVAL_SETTINGS, parseModeList, requestFromSettings } from '@moi/engine';
import type { Completer } from '../eval/completer.ts';
import { EndpointCompleter } from '../eval/endpoint.ts';
import { InProcessCompleter } from '../eval/in-process.ts';
import { runEval, type EvalSettings } from '../eval/runner.ts';
import { loadTask, scorerFor } from '../eval/tasks.ts';
import { showProgress } from '../progress.ts';
import { loadTokenizer, type Tokenizer } from '@moi/engine';
import { resolveModel } from '../hub/index.ts';
import { loadEngine } from './load.ts';
import { addSettingOptions, dtypeOption, int, modelArg, settingFlags, userPath, type DtypeChoice } from './options.ts';

interface EvalFlags {
  model: string;
  task: string;
  modes: string;
  limit?: number;
  samples: number;
  seed: number;
  maxSeqs: number;
  out: string;
  endpoint?: string;
  apiKey?: string;
  tokenizer?: string;
  split?: string;
  backend?: string;
  dtype: DtypeChoice;
  revision?: string;
  quiet?: boolean;
}

/** `kind:PATH` with PATH relative to where the user typed it (pnpm runs scripts from the root). */
function localTaskPath(spec: string): string {
  const colon = spec.indexOf(':');
  if (colon < 0) return spec;
  const arg = spec.slice(colon + 1);
  if (arg === 'gen') return spec;
  const local = userPath(arg);
  return /\.(jsonl|json|parquet)$/i.test(arg) || fs.existsSync(local) ? `${spec.slice(0, colon)}:${local}` : spec;
}

async function run(o: EvalFlags, cmd: Command): Promise<void> {
  const modes = parseModeList(o.modes, '--modes');
  // the server loaded its own weights: a --dtype here would do nothing
  if (o.endpoint && cmd.getOptionValueSource('dtype') === 'cli') throw new UsageError('E_USAGE', '--dtype is for in-process runs; with --endpoint the server chose its weights\' dtype');
  if (!Number.isInteger(o.maxSeqs) || o.maxSeqs < 1) throw new UsageError('E_USAGE', `--max-seqs must be a positive integer, got ${o.maxSeqs}`);
  if (!Number.isInteger(o.samples) || o.samples < 1) throw new UsageError('E_USAGE', `--samples must be a positive integer, got ${o.samples}`);
  if (o.limit !== undefined && (!Number.isInteger(o.limit) || o.limit < 1)) throw new UsageError('E_USAGE', `--limit must be a positive integer, got ${o.limit}`);
  // the settings table's flags eval offers; its modes are explicit, so β's direct sentinel has no use here
  const given = requestFromSettings(settingFlags(o, cmd, EVAL_SETTINGS).values);
  const beta = given.mix?.beta as number | undefined; // a number: the table parsed the flag
  if (beta !== undefined && beta < 0) throw new UsageError('E_USAGE', `--beta must be in [0, ${MAX_BETA}] for eval (for the direct mixture, list direct in --modes), got ${beta}`);
  const soft = given.mix?.soft;
  if (soft && !modes.includes('soft')) {
    throw new UsageError('E_USAGE', `the Soft Thinking flags (${givenSoftOptions(soft).join(', ')}) need soft in --modes`);
  }
  const settings: EvalSettings = {
    model: o.model,
    task: o.task,
    modes,
    ...(beta !== undefined ? { beta } : {}),
    ...(given.mix?.topK !== undefined ? { mixTopK: given.mix.topK as number | 'all' } : {}),
    ...(soft ? { soft: soft as SoftOptions } : {}),
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
    samples: o.samples,
    seed: o.seed,
    sampling: given.sampling ?? {},
    maxTokens: given.maxTokens!,
    // in-process: the weights' dtype as asked (a resume with another --dtype is refused)
    ...(o.endpoint ? { endpoint: o.endpoint } : { dtype: o.dtype }),
  };
  const task = await loadTask(localTaskPath(o.task), { limit: o.limit, seed: o.seed, split: o.split });
  if (task.problems.length === 0) throw new UsageError('E_DATA', `task ${o.task} has no problems (${task.source})`);

  let completer: Completer;
  let tokenizer: Tokenizer | null;
  let engine: Engine | null = null;
  if (o.endpoint) {
    // the model name is the server's; a tokenizer (given, or the model's when it resolves) renders prompts here
    tokenizer = o.tokenizer ? loadTokenizer(await resolveModel(modelArg(o.tokenizer))) : null;
    completer = new EndpointCompleter(o.endpoint, o.model, o.maxSeqs, o.apiKey);
  } else {
    if (o.tokenizer) throw new UsageError('E_USAGE', '--tokenizer is for --endpoint; in-process runs use the model\'s own');
    engine = (await loadEngine(o)).engine;
    if (!engine.tokenizer) throw new UsageError('E_USAGE', `${engine.dir} has no tokenizer.json; eval needs text prompts`);
    tokenizer = engine.tokenizer;
    completer = new InProcessCompleter(engine, o.maxSeqs);
  }

  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once('SIGINT', onSigint);
  try {
    const out = userPath(o.out);
    const { markdown, resumed } = await runEval(task, settings, {
      out, completer, tokenizer, progress: showProgress(Boolean(o.quiet)), signal: abort.signal,
    });
    if (resumed) process.stderr.write(`resumed: ${resumed} results were already in ${out}\n`);
    process.stdout.write(markdown);
    process.stderr.write(`results, summary.json and report.html are in ${out}\n`);
  } finally {
    process.off('SIGINT', onSigint);
    await completer.close();
    engine?.dispose();
  }
}

/** `eval score --task countdown|aime FILE.jsonl`: one {extracted, correct} line per input line. */
function score(file: string, o: { task: string }): void {
  const scorer = scorerFor(o.task);
  const path = userPath(file);
  if (!fs.existsSync(path)) throw new UsageError('E_USAGE', `${path} does not exist`);
  const lines = fs.readFileSync(path, 'utf8').split('\n');
  let out = '';
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let row: { completion?: unknown; answer?: unknown };
    try {
      row = JSON.parse(line) as typeof row;
    } catch (err) {
      throw new UsageError('E_DATA', `${path}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof row?.completion !== 'string' || row.answer === undefined) {
      throw new UsageError('E_DATA', `${path}:${i + 1}: a line needs "completion" (a string) and "answer"`);
    }
    if (o.task === 'countdown') {
      const a = row.answer as { target?: unknown; numbers?: unknown };
      if (!Number.isInteger(a?.target) || !Array.isArray(a?.numbers) || !a.numbers.every((n) => Number.isInteger(n))) {
        throw new UsageError('E_DATA', `${path}:${i + 1}: a countdown answer is {"target": n, "numbers": [..]}`);
      }
    }
    const v = scorer(row.completion, row.answer);
    out += JSON.stringify({ extracted: v.extracted, correct: v.correct, format_only: v.formatOnly, ...(v.reason ? { reason: v.reason } : {}) }) + '\n';
  });
  process.stdout.write(out);
}

export function evalCommand(): Command {
  const cmd = new Command('eval')
    .description('paired evaluation of decoding modes (Countdown, AIME, JSONL) with statistics, resume and an HTML report')
    .option('-m, --model <dir|id>', 'model folder or hub id (with --endpoint: the server\'s model name)')
    .option('--task <task>', 'countdown | countdown:gen | countdown:SRC | aime | aime:SRC | jsonl:PATH (SRC: hub dataset id, .jsonl or .parquet)')
    .option('--modes <list>', 'modes compared on the same problems and seeds', 'standard,moi')
    .option('--limit <n>', 'first n problems (countdown:gen: how many to generate, default 128)', int('--limit'))
    .option('--samples <k>', 'samples per problem and mode', int('--samples'), 1)
    .option('--seed <n>', 'run seed: per-problem seeds derive from it', int('--seed'), 0)
    .option('--max-seqs <n>', 'completions decoded together (or in flight with --endpoint)', int('--max-seqs'), 16)
    .option('--out <dir>', 'results folder (resumed when it holds an earlier run with the same settings)')
    .option('--endpoint <url>', 'an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1) instead of the local engine')
    .option('--api-key <key>', 'with --endpoint (default $OPENAI_API_KEY)')
    .option('--tokenizer <dir|id>', 'with --endpoint: render prompts locally with this tokenizer and chat template')
    .option('--split <name>', 'dataset split', 'train')
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(['tensorflow', 'wasm', 'cpu', 'webgpu']))
    .addOption(dtypeOption())
    .option('--revision <rev>', 'hub revision of the model', 'main')
    .option('-q, --quiet', 'no progress bar');
  // sampling, MoI, length and Soft Thinking flags (the soft ones for the soft mode's runs, --modes ...,soft),
  // from the settings table; eval's own default: 1024 new tokens per completion
  addSettingOptions(cmd, EVAL_SETTINGS, { surface: 'eval' })
    .action(async (o: EvalFlags, c: Command) => {
      if (!o.model) throw new UsageError('E_USAGE', 'eval needs --model');
      if (!o.task) throw new UsageError('E_USAGE', 'eval needs --task');
      if (!o.out) throw new UsageError('E_USAGE', 'eval needs --out DIR');
      await run(o, c);
    });
  cmd.addCommand(new Command('score')
    .description('re-score saved completions: JSONL lines {"completion", "answer"} in, {"extracted", "correct"} lines out')
    .option('--task <task>', 'countdown | aime | jsonl')
    .argument('<file>', 'JSONL file')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    // `eval score --task T` : the parent `eval` may parse --task first (it has the same option)
    .action((file: string, o: { task?: string }) => {
      const task = o.task ?? (cmd.opts() as { task?: string }).task;
      if (!task) throw new UsageError('E_USAGE', 'eval score needs --task countdown|aime|jsonl');
      score(file, { task });
    }));
  return cmd;
}
