/** Options shared by the subcommands, and their parsing into engine requests. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { UsageError } from '@moi/core';
import { DTYPE_CHOICES, type DtypeChoice } from '@moi/models';
import { anySoftOption, resolveMixSettings, type MixOptions, type SoftOptions } from '@moi/moi';
import { resolveSamplingParams, type SamplingParams } from '@moi/core';
import { warn } from './usage.ts';

/** Paths the user typed are relative to where they typed them (pnpm runs scripts from the root). */
export function userPath(p: string): string {
  return path.resolve(process.env.INIT_CWD ?? process.cwd(), p);
}

/** A hub id (org/name, not an existing folder) stays as it is; anything else is a path. */
export function modelArg(m: string): string {
  const looksLikeId = /^[\w.-]+\/[\w.-]+$/.test(m) && !m.startsWith('.');
  return looksLikeId && !existsSync(userPath(m)) ? m : userPath(m);
}

export const num = (name: string) => (v: string): number => {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
  return n;
};
export const int = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be an integer`);
  return n;
};
export const idList = (v: string): number[] => {
  const ids = v.split(/[\s,]+/).filter(Boolean).map(Number);
  if (ids.length === 0 || ids.some((x) => !Number.isInteger(x) || x < 0)) throw new InvalidArgumentError('--ids takes comma-separated non-negative integers, e.g. 1,2,3');
  return ids;
};
const collect = (v: string, prev: string[] = []) => [...prev, v];

/**
 * `--dtype`: how the weight matrices are held (every command that loads a model). A value outside
 * the choices is commander's own error naming the flag (exit 2), before anything loads.
 */
export function dtypeOption(): Option {
  return new Option('--dtype <dtype>', "weight matrices held as: auto (a bf16/f16 checkpoint stays 16-bit, f32 stays f32), " +
    'f32, bf16 (16-bit words) or q8 (blocks of 32 int8 + a scale, as llama.cpp Q8_0); packed weights run on wasm, other backends widen them at load')
    .choices(DTYPE_CHOICES)
    .default('auto');
}

/**
 * The loaded dtype and why, for --stats and --verbose lines: the note where it starts with the
 * dtype (`bf16 checkpoint kept in 16 bits`), else `f32: cpu: 16/8-bit weights widened …`.
 */
export function dtypeLabel(loaded: { dtype: string; dtypeNote: string }): string {
  if (!loaded.dtypeNote) return loaded.dtype;
  return loaded.dtypeNote.startsWith(loaded.dtype) ? loaded.dtypeNote : `${loaded.dtype}: ${loaded.dtypeNote}`;
}

export type { DtypeChoice };

export function addModelOptions(cmd: Command): Command {
  return cmd
    .requiredOption('-m, --model <dir|id>', 'model folder, or a Hugging Face hub id (found in the HF cache, else downloaded)')
    .addOption(new Option('--backend <name>', 'tfjs backend (default: $MOI_BACKEND, else tensorflow > wasm > cpu)').choices(['tensorflow', 'wasm', 'cpu', 'webgpu']))
    .addOption(dtypeOption())
    .option('--revision <rev>', 'hub revision', 'main')
    .option('-q, --quiet', 'no progress bars')
    .option('-v, --verbose', 'print what was loaded (model, backend, time) and the speed to stderr');
}

export function addSamplingOptions(cmd: Command): Command {
  cmd
    .option('--temperature <t>', 'sampling temperature; 0 = greedy (default: generation_config.json, else 1); alias --temp', num('--temperature'))
    .addOption(new Option('--temp <t>', 'alias of --temperature').argParser(num('--temp')).hideHelp())
    .option('--top-p <p>', 'nucleus sampling mass', num('--top-p'))
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', int('--top-k'))
    .option('--min-p <p>', 'keep tokens with p ≥ min-p × max p', num('--min-p'))
    .option('--repetition-penalty <r>', 'HF repetition penalty (1 = off)', num('--repetition-penalty'))
    .option('--presence-penalty <x>', 'OpenAI presence penalty', num('--presence-penalty'))
    .option('--frequency-penalty <x>', 'OpenAI frequency penalty', num('--frequency-penalty'))
    .option('--seed <n>', 'random seed (same seed and inputs, same tokens)', int('--seed'))
    .option('-n, --max-tokens <n>', 'most new tokens', int('--max-tokens'), 256)
    .option('--stop <text>', 'stop when this text appears (repeatable)', collect)
    .option('--ignore-eos', 'keep generating past the end-of-sequence token')
    .addOption(new Option('--mode <mode>', 'input mixing: standard (off), moi, direct, soft (Soft Thinking)').choices(['standard', 'moi', 'direct', 'soft']))
    .option('--beta <b>', 'MoI β: weight of the sampled token (default: $MIXINPUTS_BETA, else 1.0; ≤ -99 = direct)')
    .option('--mix-topk <k>', "candidates mixed: top-K (0 or 'all' = whole vocabulary; default 20, soft: 10 = max_topk)")
    .addOption(new Option('--mix-prior <prior>', 'distribution mixed: raw log-probs (as the reference) or processed (after temperature/top-p)').choices(['raw', 'processed']))
    .option('--logprobs <n>', 'report the chosen token logprob and the top-n (with --json)', int('--logprobs'));
  // Soft Thinking (--mode soft): --temperature/--top-k/--top-p/--min-p are the soft phase's filters
  return addSoftOptions(cmd);
}

/** Soft Thinking's flags (generate, chat, eval). */
export function addSoftOptions(cmd: Command): Command {
  return cmd
    .option('--think-end <text>', "soft: the text whose token ends thinking (default '</think>')")
    .option('--think-end-id <n>', 'soft: the think-end token id (for tokenizers without the text)', int('--think-end-id'))
    .option('--cold-stop-entropy <x>', 'soft: end thinking after --cold-stop-steps steps with entropy below x nats (0 = off; paper: 0.01)', num('--cold-stop-entropy'))
    .option('--cold-stop-steps <n>', 'soft: consecutive low-entropy steps for the cold stop (default 256)', int('--cold-stop-steps'))
    .option('--after-thinking-temperature <t>', 'soft: sampling temperature after thinking (default 0.6)', num('--after-thinking-temperature'))
    .option('--after-thinking-top-p <p>', 'soft: top-p after thinking (default 0.95)', num('--after-thinking-top-p'))
    .option('--after-thinking-top-k <k>', 'soft: top-k after thinking (default 30; 0 or -1 = off)', int('--after-thinking-top-k'))
    .option('--after-thinking-min-p <p>', 'soft: min-p after thinking (default 0)', num('--after-thinking-min-p'))
    .addOption(new Option('--soft-noise <kind>', 'soft: noise on the soft inputs (default none)').choices(['none', 'gumbel', 'dirichlet']))
    .option('--gumbel-tau <t>', 'soft: Gumbel-softmax temperature (default 1)', num('--gumbel-tau'))
    .option('--dirichlet-alpha <a>', 'soft: Dirichlet concentration (default 1)', num('--dirichlet-alpha'));
}

export interface SoftFlags {
  thinkEnd?: string; thinkEndId?: number; coldStopEntropy?: number; coldStopSteps?: number;
  afterThinkingTemperature?: number; afterThinkingTopP?: number; afterThinkingTopK?: number; afterThinkingMinP?: number;
  softNoise?: string; gumbelTau?: number; dirichletAlpha?: number;
}

export interface SamplingFlags extends SoftFlags {
  temperature?: number; temp?: number; topP?: number; topK?: number; minP?: number;
  repetitionPenalty?: number; presencePenalty?: number; frequencyPenalty?: number;
  seed?: number; logprobs?: number;
  mode?: string; beta?: string; mixTopk?: string; mixPrior?: string;
  maxTokens: number; stop?: string[]; ignoreEos?: boolean;
}

/** One value from a flag and its alias (`--temperature`/`--temp`): both given and different is an error. */
export function alias<T>(value: T | undefined, aliasValue: T | undefined, flag: string, aliasFlag: string): T | undefined {
  if (value !== undefined && aliasValue !== undefined && value !== aliasValue) {
    throw new UsageError('E_USAGE', `${flag} and ${aliasFlag} (an alias) disagree: give one of them`);
  }
  return value ?? aliasValue;
}

/**
 * Before the model loads: aliases merged, sampling and mixing flags validated (so a bad value
 * costs no load), and a warning for each flag that will have no effect.
 */
export function checkSamplingFlags(o: SamplingFlags, cmd: Command, where: { json?: boolean; chat?: boolean; compareModes?: string[] }): void {
  o.temperature = alias(o.temperature, o.temp, '--temperature', '--temp');
  checkMaxTokens(o.maxTokens);
  resolveSamplingParams(samplingFrom(o));
  // --compare-modes with soft: Soft Thinking's flags are for its run (validated as such)
  const softRun = where.compareModes?.includes('soft') && o.mode === undefined;
  const mix = resolveMixSettings({ ...mixFrom(o), ...(softRun ? { mode: 'soft' as const } : {}) }, process.env);
  const typed = (name: string) => cmd.getOptionValueSource(name) === 'cli';
  if (o.logprobs !== undefined && where.chat) warn('--logprobs has no effect in chat');
  else if (o.logprobs !== undefined && !where.json) warn('--logprobs has no effect without --json');
  if (o.beta !== undefined && mix.mode !== 'moi') warn(`--beta has no effect with --mode ${mix.mode}`);
  if (mix.mode === 'standard') {
    if (typed('mixTopk')) warn('--mix-topk has no effect with --mode standard');
    if (o.mixPrior !== undefined) warn('--mix-prior has no effect with --mode standard');
  }
}

export function samplingFrom(o: SamplingFlags): Partial<SamplingParams> {
  const s: Partial<SamplingParams> = {};
  if (o.temperature !== undefined) s.temperature = o.temperature;
  if (o.topP !== undefined) s.topP = o.topP;
  if (o.topK !== undefined) s.topK = o.topK;
  if (o.minP !== undefined) s.minP = o.minP;
  if (o.repetitionPenalty !== undefined) s.repetitionPenalty = o.repetitionPenalty;
  if (o.presencePenalty !== undefined) s.presencePenalty = o.presencePenalty;
  if (o.frequencyPenalty !== undefined) s.frequencyPenalty = o.frequencyPenalty;
  if (o.seed !== undefined) s.seed = o.seed;
  if (o.logprobs !== undefined) s.logprobs = o.logprobs;
  return s;
}

export function mixFrom(o: SamplingFlags): MixOptions {
  const m: MixOptions = { defaultMode: 'standard' };
  if (o.mixTopk !== undefined) m.topK = o.mixTopk;
  if (o.mode !== undefined) m.mode = o.mode;
  if (o.beta !== undefined) m.beta = o.beta;
  if (o.mixPrior !== undefined) m.prior = o.mixPrior;
  const soft = softFrom(o);
  if (anySoftOption(soft)) m.soft = soft;
  return m;
}

/** The Soft Thinking flags given (undefined where not); a mode other than soft refuses them. */
export function softFrom(o: SoftFlags): SoftOptions {
  return {
    thinkEnd: o.thinkEnd, thinkEndId: o.thinkEndId, coldStopEntropy: o.coldStopEntropy, coldStopSteps: o.coldStopSteps,
    afterThinking: { temperature: o.afterThinkingTemperature, topP: o.afterThinkingTopP, topK: o.afterThinkingTopK, minP: o.afterThinkingMinP },
    noise: o.softNoise, gumbelTau: o.gumbelTau, dirichletAlpha: o.dirichletAlpha,
  };
}

export function checkMaxTokens(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new UsageError('E_USAGE', `--max-tokens must be a positive integer, got ${n}`);
}
