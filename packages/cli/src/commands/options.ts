/**
 * Options shared by the subcommands: the model flags, and the settings table's flags (sampling,
 * length, MoI, Soft Thinking) made from @moi/engine's table, with their values read back.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { UsageError } from '@moi/core';
import { DTYPE_CHOICES, type DtypeChoice } from '@moi/models';
import { resolveMixSettings } from '@moi/moi';
import { resolveSamplingParams } from '@moi/core';
import {
  MAX_THREADS,
  parseSettingText,
  requestFromSettings,
  resolveThreads,
  ruleOf,
  settingAtPath,
  settingError,
  SETTINGS,
  type Setting,
  type SettingName,
  type SettingValue,
  type SettingValues,
  type TableSetting,
} from '@moi/engine';
import { registerFlagNames, warn } from './usage.ts';

// messages that name a request path (`sampling.topP`) name its flag instead
registerFlagNames((path) => settingAtPath(path)?.cli?.flag);

/** Paths the user typed are relative to where they typed them (pnpm runs scripts from the root). */
export function userPath(p: string): string {
  return path.resolve(process.env.INIT_CWD ?? process.cwd(), p);
}

/** A hub id (org/name, not an existing folder) stays as it is; anything else is a path. */
export function modelArg(m: string): string {
  const looksLikeId = /^[\w.-]+\/[\w.-]+$/.test(m) && !m.startsWith('.');
  return looksLikeId && !existsSync(userPath(m)) ? m : userPath(m);
}

export const num =
  (name: string) =>
  (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
    return n;
  };
export const int =
  (name: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be an integer`);
    return n;
  };
export const idList = (v: string): number[] => {
  const ids = v
    .split(/[\s,]+/)
    .filter(Boolean)
    .map(Number);
  if (ids.length === 0 || ids.some((x) => !Number.isInteger(x) || x < 0))
    throw new InvalidArgumentError('--ids takes comma-separated non-negative integers, e.g. 1,2,3');
  return ids;
};

/**
 * `--dtype`: how the weight matrices are held (every command that loads a model). A value outside
 * the choices is commander's own error naming the flag (exit 2), before anything loads.
 */
export function dtypeOption(): Option {
  return (
    new Option(
      '--dtype <dtype>',
      'weight matrices held as: auto (a bf16/f16 checkpoint stays 16-bit, f32 stays f32), ' +
        'f32, bf16 (16-bit words) or q8 (blocks of 32 int8 + a scale, as llama.cpp Q8_0); packed weights run on wasm, other backends widen them at load. ' +
        "On webgpu's GPU plan (issue 23): auto (f16 for a 16-bit checkpoint, f32 for f32), f32 or f16",
    )
      // (the GPU plan's f16 beside the table's choices; Engine.load refuses it off the plan)
      .argParser((v: string) => {
        if ((DTYPE_CHOICES as readonly string[]).includes(v) || v === 'f16') return v;
        throw new InvalidArgumentError(
          `Allowed choices are ${DTYPE_CHOICES.join(', ')}. On webgpu's GPU plan also f16.`,
        );
      })
      .default('auto')
  );
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

/**
 * `--threads <n>`: threads multiplying the weights (the wasm thread pool; every command that
 * loads a model). Default $MOI_THREADS, else the available cores (capped); a value outside 1..256
 * is a UsageError naming the flag (exit 2), before anything loads.
 */
export function threadsOption(): Option {
  return new Option(
    '--threads <n>',
    `threads for the weight matrices on wasm (1 to ${MAX_THREADS}; default $MOI_THREADS, else the available cores, at most 8)`,
  ).argParser((v: string) => resolveThreads(v, '--threads'));
}

/** The thread line for --stats and --verbose: e.g. 'threads 2 (pool, simd relaxed, fma)'. */
export function threadsLabel(t: { note: string }): string {
  return t.note;
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .requiredOption(
      '-m, --model <dir|id>',
      'model folder, or a Hugging Face hub id (found in the HF cache, else downloaded)',
    )
    .addOption(
      new Option('--backend <name>', 'tfjs backend (default: $MOI_BACKEND, else tensorflow > wasm > cpu)').choices([
        'tensorflow',
        'wasm',
        'cpu',
        'webgpu',
      ]),
    )
    .addOption(dtypeOption())
    .addOption(threadsOption())
    .option('--revision <rev>', 'hub revision', 'main')
    .option('-q, --quiet', 'no progress bars')
    .option('-v, --verbose', 'print what was loaded (model, backend, time) and the speed to stderr')
    .addOption(checkTensorsOption());
}

/** --no-check-tensors: skip the load's check of every weight for NaN/±Inf (llama.cpp's --check-tensors, on by default here). */
export function checkTensorsOption(): Option {
  return new Option(
    '--no-check-tensors',
    'skip the load-time check of every weight for NaN/Inf/|w| ≥ 2^64 (E_NONFINITE_WEIGHTS), for speed on trusted files',
  );
}

// ---- the settings table's flags

/** The settings generate and chat take as flags (all with a CLI flag). */
export const CLI_SETTINGS: readonly TableSetting[] = SETTINGS.filter((s) => s.cli !== null);

/** The help of a setting's flag: what it does, its rule, and its default (commander adds the default it fills in). */
function settingHelp(s: Setting, prefix: string, shownDefault: boolean): string {
  const rule = s.type === 'number' || s.type === 'int' || s.type === 'count' ? `: ${ruleOf(s)}` : '';
  const aliases = s.cli?.aliases?.length ? `; alias ${s.cli.aliases.join(', ')}` : '';
  const dflt = shownDefault
    ? ''
    : s.defaultText !== undefined
      ? ` (default: ${s.defaultText})`
      : s.default === null || Array.isArray(s.default) || s.type === 'flag'
        ? ''
        : ` (default: ${String(s.default)})`;
  return `${prefix}${s.help}${rule}${dflt}${aliases}`;
}

/** The parser of a setting's flag: the table's check, as commander's "argument is invalid" error (exit 2). */
function settingParser(s: Setting, flag: string): (text: string, previous: unknown) => SettingValue {
  return (text, previous) => {
    try {
      const v = parseSettingText(s, text, flag);
      if (s.type !== 'texts') return v;
      const list = [...(Array.isArray(previous) ? (previous as string[]) : []), ...(v as string[])];
      if (list.length > s.maxItems) throw settingError(s, flag, list);
      return list;
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}

/** A commander Option for a setting's flag (or one of its aliases, hidden from help). */
export function settingOption(
  s: Setting,
  o: { alias?: string; helpPrefix?: string; default?: SettingValue } = {},
): Option {
  const cli = s.cli!;
  const flag = o.alias ?? cli.flag;
  const names = `${!o.alias && cli.short ? `${cli.short}, ` : ''}${flag}${cli.arg ? ` ${cli.arg}` : ''}`;
  const fill = o.default ?? (cli.fillDefault && !o.alias ? (s.default ?? undefined) : undefined);
  const opt = new Option(
    names,
    o.alias ? `alias of ${cli.flag}` : settingHelp(s, o.helpPrefix ?? '', fill !== undefined),
  );
  if (s.type === 'enum') opt.choices(s.choices);
  else if (s.type !== 'flag') opt.argParser(settingParser(s, flag));
  if (fill !== undefined) opt.default(fill);
  if (o.alias) opt.hideHelp();
  return opt;
}

/** Add settings' flags (and their hidden aliases) to a command; eval's take eval's defaults where the table gives them. */
export function addSettingOptions(
  cmd: Command,
  settings: readonly Setting[],
  o: { helpPrefix?: string; surface?: 'eval' } = {},
): Command {
  for (const s of settings) {
    cmd.addOption(
      settingOption(s, { helpPrefix: o.helpPrefix, default: o.surface === 'eval' ? s.eval?.default : undefined }),
    );
    for (const alias of s.cli?.aliases ?? []) cmd.addOption(settingOption(s, { alias }));
  }
  return cmd;
}

/** The sampling, MoI, Soft Thinking and length flags of generate and chat, all from the settings table. */
export function addSamplingOptions(cmd: Command): Command {
  return addSettingOptions(cmd, CLI_SETTINGS);
}

/** The attribute commander stores a flag's value under (`--top-p` → `topP`). */
const attribute = (flag: string) => new Option(flag).attributeName();

/** One value from a flag and its alias (`--temperature`/`--temp`): both given and different is an error. */
export function alias<T>(
  value: T | undefined,
  aliasValue: T | undefined,
  flag: string,
  aliasFlag: string,
): T | undefined {
  if (value !== undefined && aliasValue !== undefined && value !== aliasValue) {
    throw new UsageError('E_USAGE', `${flag} and ${aliasFlag} (an alias) disagree: give one of them`);
  }
  return value ?? aliasValue;
}

/** The settings given as flags (aliases merged, filled-in defaults included), and which of them were typed. */
export interface FlagSettings {
  values: SettingValues;
  typed: Set<SettingName>;
}

export function settingFlags(o: object, cmd: Command, settings: readonly TableSetting[] = CLI_SETTINGS): FlagSettings {
  const opts = o as Record<string, SettingValue | undefined>;
  const values: SettingValues = {};
  const typed = new Set<SettingName>();
  for (const s of settings) {
    const cli = s.cli!;
    const key = attribute(cli.flag);
    let v = opts[key];
    let wasTyped = cmd.getOptionValueSource(key) === 'cli';
    for (const a of cli.aliases ?? []) {
      const av = opts[attribute(a)];
      if (av === undefined) continue;
      v = alias(wasTyped ? v : undefined, av, cli.flag, a);
      wasTyped = true;
    }
    if (v === undefined) continue;
    values[s.name] = v;
    if (wasTyped) typed.add(s.name);
  }
  return { values, typed };
}

/**
 * Before the model loads: sampling and mixing flags validated together (so a bad combination
 * costs no load), and a warning for each flag that will have no effect.
 */
export function checkSamplingFlags(
  f: FlagSettings,
  where: { json?: boolean; chat?: boolean; compareModes?: string[] },
): void {
  const r = requestFromSettings(f.values);
  resolveSamplingParams(r.sampling);
  // --compare-modes with soft: Soft Thinking's flags are for its run (validated as such)
  const softRun = where.compareModes?.includes('soft') && r.mix?.mode === undefined;
  const mix = resolveMixSettings(
    { defaultMode: 'standard', ...r.mix, ...(softRun ? { mode: 'soft' as const } : {}) },
    process.env,
  );
  const typed = (name: SettingName) => f.typed.has(name);
  if (typed('logprobs') && where.chat) warn('--logprobs has no effect in chat');
  else if (typed('logprobs') && !where.json) warn('--logprobs has no effect without --json');
  if (typed('beta') && mix.mode !== 'moi') warn(`--beta has no effect with --mode ${mix.mode}`);
  if (mix.mode === 'standard') {
    if (typed('mix_topk')) warn('--mix-topk has no effect with --mode standard');
    if (typed('mix_prior')) warn('--mix-prior has no effect with --mode standard');
  }
}
