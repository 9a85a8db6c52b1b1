/**
 * `moi-gen eval`: a paired evaluation of decoding modes on Countdown, AIME, GPQA, LiveCodeBench or
 * a JSONL task, with resumable results, statistics (pass@k with --samples) and an HTML report.
 * `moi-gen eval score` re-scores saved completions (LiveCodeBench's by running them in the sandbox).
 */
import fs from 'node:fs';
import { Command, Option } from 'commander';
import { UsageError } from '@moi/core';
import { givenSoftOptions, MAX_BETA, type SoftOptions } from '@moi/moi';
import { Engine, EVAL_SETTINGS, parseModeList, requestFromSettings } from '@moi/engine';
import type { Completer } from '../eval/completer.ts';
import { EndpointCompleter } from '../eval/endpoint.ts';
import { InProcessCompleter } from '../eval/in-process.ts';
import { rescore } from '../eval/rescore.ts';
import { runEval, type EvalSettings } from '../eval/runner.ts';
import { Sandbox, type SandboxOptions } from '../eval/sandbox.ts';
import { loadEvalTask } from '../eval/tasks.ts';
import { showProgress } from '../progress.ts';
import { loadTokenizer, type Tokenizer } from '@moi/engine';
import { resolveModel } from '../hub/index.ts';
import { loadEngine } from './load.ts';
import {
  addSettingOptions,
  checkTensorsOption,
  dtypeOption,
  int,
  threadsOption,
  modelArg,
  num,
  settingFlags,
  userPath,
  type DtypeChoice,
} from './options.ts';

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
  threads?: number;
  checkTensors?: boolean;
  revision?: string;
  quiet?: boolean;
  release?: string;
  startDate?: string;
  endDate?: string;
  passAt: string;
  execWorkers?: number;
  execTimeout?: number;
  execWall?: number;
  execMemory?: number;
  python?: string;
}

interface ExecFlags {
  execWorkers?: number;
  execTimeout?: number;
  execWall?: number;
  execMemory?: number;
  python?: string;
}

/** The sandbox's options from the --exec-* flags (checked). */
function sandboxOptions(o: ExecFlags): SandboxOptions {
  if (o.execWorkers !== undefined && (!Number.isInteger(o.execWorkers) || o.execWorkers < 1))
    throw new UsageError('E_USAGE', `--exec-workers must be a positive integer, got ${o.execWorkers}`);
  if (o.execTimeout !== undefined && !(o.execTimeout > 0))
    throw new UsageError('E_USAGE', `--exec-timeout must be > 0 seconds, got ${o.execTimeout}`);
  if (o.execMemory !== undefined && (!Number.isInteger(o.execMemory) || o.execMemory < 64))
    throw new UsageError('E_USAGE', `--exec-memory must be an integer >= 64 (MiB), got ${o.execMemory}`);
  if (o.execWall !== undefined && !(o.execWall > 0))
    throw new UsageError('E_USAGE', `--exec-wall must be > 0 seconds, got ${o.execWall}`);
  return {
    ...(o.execWorkers !== undefined ? { workers: o.execWorkers } : {}),
    ...(o.execTimeout !== undefined ? { timeoutSeconds: o.execTimeout } : {}),
    ...(o.execWall !== undefined ? { wallSeconds: o.execWall } : {}),
    ...(o.execMemory !== undefined ? { memoryMiB: o.execMemory } : {}),
    ...(o.python !== undefined ? { python: o.python } : {}),
  };
}

function parsePassAt(list: string): number[] {
  const ks = list
    .split(',')
    .map((k) => k.trim())
    .filter(Boolean)
    .map(Number);
  if (!ks.length || ks.some((k) => !Number.isInteger(k) || k < 1))
    throw new UsageError('E_USAGE', `--pass-at takes positive integers such as 1,5, got ${JSON.stringify(list)}`);
  return [...new Set(ks)].sort((a, b) => a - b);
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
  if (o.endpoint && cmd.getOptionValueSource('dtype') === 'cli')
    throw new UsageError(
      'E_USAGE',
      "--dtype is for in-process runs; with --endpoint the server chose its weights' dtype",
    );
  if (o.endpoint && o.threads !== undefined)
    throw new UsageError(
      'E_USAGE',
      '--threads is for in-process runs; with --endpoint the server runs its own threads',
    );
  if (!Number.isInteger(o.maxSeqs) || o.maxSeqs < 1)
    throw new UsageError('E_USAGE', `--max-seqs must be a positive integer, got ${o.maxSeqs}`);
  if (!Number.isInteger(o.samples) || o.samples < 1)
    throw new UsageError('E_USAGE', `--samples must be a positive integer, got ${o.samples}`);
  if (o.limit !== undefined && (!Number.isInteger(o.limit) || o.limit < 1))
    throw new UsageError('E_USAGE', `--limit must be a positive integer, got ${o.limit}`);
  // the settings table's flags eval offers; its modes are explicit, so β's direct sentinel has no use here
  const given = requestFromSettings(settingFlags(o, cmd, EVAL_SETTINGS).values);
  const beta = given.mix?.beta as number | undefined; // a number: the table parsed the flag
  if (beta !== undefined && beta < 0)
    throw new UsageError(
      'E_USAGE',
      `--beta must be in [0, ${MAX_BETA}] for eval (for the direct mixture, list direct in --modes), got ${beta}`,
    );
  const passAt = parsePassAt(o.passAt);
  if (passAt[passAt.length - 1] > o.samples)
    throw new UsageError(
      'E_USAGE',
      `--pass-at ${passAt[passAt.length - 1]} needs --samples >= ${passAt[passAt.length - 1]} (got ${o.samples})`,
    );
  const code = o.task === 'livecodebench' || o.task.startsWith('livecodebench:');
  const execGiven = [o.execWorkers, o.execTimeout, o.execWall, o.execMemory, o.python].some((x) => x !== undefined);
  if (!code && execGiven)
    throw new UsageError(
      'E_USAGE',
      '--exec-workers, --exec-timeout, --exec-wall, --exec-memory and --python are for --task livecodebench',
    );
  const sandbox = sandboxOptions(o);
  const soft = given.mix?.soft;
  if (soft && !modes.includes('soft')) {
    throw new UsageError(
      'E_USAGE',
      `the Soft Thinking flags (${givenSoftOptions(soft).join(', ')}) need soft in --modes`,
    );
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
  const task = await loadEvalTask(localTaskPath(o.task), {
    limit: o.limit,
    seed: o.seed,
    split: o.split,
    ...(o.release !== undefined ? { release: o.release } : {}),
    ...(o.startDate !== undefined ? { startDate: o.startDate } : {}),
    ...(o.endDate !== undefined ? { endDate: o.endDate } : {}),
    ...(code ? { sandbox } : {}),
  });
  if (task.kind === 'livecodebench') {
    // probe the sandbox before any decoding: no python, or no way to run it, fails now
    const p = await task.sandbox.protections();
    process.stderr.write(
      `sandbox: ${p.python} ${p.python_version} as ${p.user}; network namespace ${p.network_namespace ? 'yes' : 'NO'}, PID namespace ${p.pid_namespace ? 'yes' : 'NO'}; ${p.workers} workers` +
        `${p.degraded.length ? `\nsandbox degraded: ${p.degraded.join('; ')}` : ''}\n`,
    );
    // which problems, and the limits that decide verdicts: a resume with others is refused
    const l = task.sandbox.limits;
    Object.assign(settings, {
      ...(task.release ? { release: task.release } : {}),
      ...(o.startDate ? { startDate: o.startDate } : {}),
      ...(o.endDate ? { endDate: o.endDate } : {}),
      exec: { timeoutSeconds: l.timeoutSeconds, wallSeconds: l.wallSeconds, memoryMiB: l.memoryMiB },
    });
  }
  if (task.problems.length === 0) throw new UsageError('E_DATA', `task ${o.task} has no problems (${task.source})`);

  let completer: Completer;
  let tokenizer: Tokenizer | null;
  let engine: Engine | null = null;
  if (o.endpoint) {
    // the model name is the server's; a tokenizer (given, or the model's when it resolves) renders prompts here
    tokenizer = o.tokenizer ? loadTokenizer(await resolveModel(modelArg(o.tokenizer))) : null;
    completer = new EndpointCompleter(o.endpoint, o.model, o.maxSeqs, o.apiKey);
  } else {
    if (o.tokenizer)
      throw new UsageError('E_USAGE', "--tokenizer is for --endpoint; in-process runs use the model's own");
    engine = (await loadEngine(o)).engine;
    if (!engine.tokenizer)
      throw new UsageError('E_USAGE', `${engine.dir} has no tokenizer.json; eval needs text prompts`);
    tokenizer = engine.tokenizer;
    completer = new InProcessCompleter(engine, o.maxSeqs);
  }

  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once('SIGINT', onSigint);
  try {
    const out = userPath(o.out);
    const { markdown, resumed } = await runEval(task, settings, {
      out,
      completer,
      tokenizer,
      progress: showProgress(Boolean(o.quiet)),
      signal: abort.signal,
      passAt,
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

/** `eval score --task T FILE.jsonl`: one {extracted, correct, …} line per input line. */
async function score(file: string, o: { task: string } & ExecFlags): Promise<void> {
  const path = userPath(file);
  if (!fs.existsSync(path)) throw new UsageError('E_USAGE', `${path} does not exist`);
  const code = o.task === 'livecodebench';
  if (!code && [o.execWorkers, o.execTimeout, o.execWall, o.execMemory, o.python].some((x) => x !== undefined)) {
    throw new UsageError('E_USAGE', 'the --exec-* flags and --python are for --task livecodebench');
  }
  const sandbox = code ? new Sandbox(sandboxOptions(o)) : undefined;
  const lines = await rescore(fs.readFileSync(path, 'utf8'), path, o.task, sandbox);
  process.stdout.write(lines.map((l) => `${l}\n`).join(''));
  if (sandbox) {
    const p = await sandbox.protections();
    process.stderr.write(
      `sandbox: ${p.python} as ${p.user}; network namespace ${p.network_namespace ? 'yes' : 'no'}, PID namespace ${p.pid_namespace ? 'yes' : 'no'}` +
        `${p.degraded.length ? `; degraded: ${p.degraded.join('; ')}` : ''}\n`,
    );
  }
}

/** The sandbox's flags, on `eval` and `eval score`. */
function addExecOptions(cmd: Command): Command {
  return cmd
    .option(
      '--exec-workers <n>',
      'livecodebench: programs run at once (default: the cores; they run at nice 19, decoding first)',
      int('--exec-workers'),
    )
    .option(
      '--exec-timeout <s>',
      'livecodebench: CPU seconds per test (default 6, as LiveCodeBench)',
      num('--exec-timeout'),
    )
    .option(
      '--exec-wall <s>',
      'livecodebench: idle wall-clock seconds (neither running nor waiting for a CPU) before a program is killed (default 4 × timeout + 2)',
      num('--exec-wall'),
    )
    .option(
      '--exec-memory <MiB>',
      'livecodebench: address-space limit per program (default 4096)',
      int('--exec-memory'),
    )
    .option('--python <path>', 'livecodebench: the interpreter that runs the programs (default python3)');
}

export function evalCommand(): Command {
  const cmd = new Command('eval')
    .description(
      'paired evaluation of decoding modes (Countdown, AIME, GPQA, LiveCodeBench, JSONL) with statistics, resume and an HTML report',
    )
    .option('-m, --model <dir|id>', "model folder or hub id (with --endpoint: the server's model name)")
    .option(
      '--task <task>',
      'countdown | countdown:gen | countdown:SRC | aime | aime:SRC | gpqa | gpqa:SRC | livecodebench | livecodebench:SRC | jsonl:PATH (SRC: hub dataset id, .jsonl or .parquet; livecodebench: .jsonl, a folder of test*.jsonl, or a hub id)',
    )
    .option('--modes <list>', 'modes compared on the same problems and seeds', 'standard,moi')
    .option('--limit <n>', 'first n problems (countdown:gen: how many to generate, default 128)', int('--limit'))
    .option('--samples <k>', 'samples per problem and mode', int('--samples'), 1)
    .option('--pass-at <list>', 'k of pass@k to report, each <= --samples (e.g. 1,5)', '1')
    .option('--release <tag>', 'livecodebench: release_vN, release_latest, vN or vA_vB (default release_v5)')
    .option('--start-date <YYYY-MM-DD>', 'livecodebench: first contest date kept')
    .option('--end-date <YYYY-MM-DD>', 'livecodebench: last contest date kept')
    .option('--seed <n>', 'run seed: per-problem seeds derive from it', int('--seed'), 0)
    .option('--max-seqs <n>', 'completions decoded together (or in flight with --endpoint)', int('--max-seqs'), 16)
    .option('--out <dir>', 'results folder (resumed when it holds an earlier run with the same settings)')
    .option(
      '--endpoint <url>',
      'an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1) instead of the local engine',
    )
    .option('--api-key <key>', 'with --endpoint (default $OPENAI_API_KEY)')
    .option('--tokenizer <dir|id>', 'with --endpoint: render prompts locally with this tokenizer and chat template')
    .option('--split <name>', 'dataset split', 'train')
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(['tensorflow', 'wasm', 'cpu', 'webgpu']))
    .addOption(dtypeOption())
    .addOption(threadsOption())
    .addOption(checkTensorsOption())
    .option('--revision <rev>', 'hub revision of the model', 'main')
    .option('-q, --quiet', 'no progress bar');
  addExecOptions(cmd);
  // sampling, MoI, length and Soft Thinking flags (the soft ones for the soft mode's runs, --modes ...,soft),
  // from the settings table; eval's own default: 1024 new tokens per completion
  addSettingOptions(cmd, EVAL_SETTINGS, { surface: 'eval' }).action(async (o: EvalFlags, c: Command) => {
    if (!o.model) throw new UsageError('E_USAGE', 'eval needs --model');
    if (!o.task) throw new UsageError('E_USAGE', 'eval needs --task');
    if (!o.out) throw new UsageError('E_USAGE', 'eval needs --out DIR');
    await run(o, c);
  });
  cmd.addCommand(
    addExecOptions(
      new Command('score')
        .description(
          're-score saved completions: JSONL lines {"completion", "answer"} in, {"extracted", "correct", …} lines out',
        )
        .option('--task <task>', 'countdown | aime | gpqa | livecodebench | jsonl')
        .argument('<file>', 'JSONL file'),
    )
      .exitOverride()
      .showHelpAfterError('(run with --help for usage)')
      // `eval score --task T` : the parent `eval` may parse --task (and the --exec-* flags) first (it has the same options)
      .action(async (file: string, o: { task?: string } & ExecFlags) => {
        const parent = cmd.opts() as { task?: string } & ExecFlags;
        const task = o.task ?? parent.task;
        if (!task) throw new UsageError('E_USAGE', 'eval score needs --task countdown|aime|gpqa|livecodebench|jsonl');
        const pick = <K extends keyof ExecFlags>(k: K) => o[k] ?? parent[k];
        await score(file, {
          task,
          execWorkers: pick('execWorkers'),
          execTimeout: pick('execTimeout'),
          execWall: pick('execWall'),
          execMemory: pick('execMemory'),
          python: pick('python'),
        });
      }),
  );
  return cmd;
}
