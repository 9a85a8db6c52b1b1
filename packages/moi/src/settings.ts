/**
 * Mixture-of-Inputs settings: which mixing rule, its β, the candidate count K and which prior.
 * Reference-compatible: `MIXINPUTS_BETA` (as in the vLLM 0.8.5 patch of arXiv 2505.14827) turns
 * MoI on with that β, and a value ≤ −99 selects the direct mixture. Explicit options win over
 * the environment. Bad values are refused with a UsageError (code E_MOI), never clamped.
 */
import { describeRange, formatBound, UsageError, type NumericRange } from '@moi/core';
import {
  anySoftOption,
  checkSoftSettings,
  givenSoftOptions,
  resolveSoftSettings,
  type SoftOptions,
  type SoftSettings,
} from './soft-settings.ts';

/**
 * standard: next input is E[y]. moi: Bayesian mix of prior and y. direct: prior only.
 * soft: Soft Thinking (arXiv 2505.15778): pure soft inputs until think-end (see soft-settings.ts).
 */
export type MixMode = 'standard' | 'moi' | 'direct' | 'soft';
export const MIX_MODES: readonly MixMode[] = ['standard', 'moi', 'direct', 'soft'];

/** Where the prior comes from: the raw logits, or the sampler's processed logits. */
export type MixPrior = 'raw' | 'processed';
export const MIX_PRIORS: readonly MixPrior[] = ['raw', 'processed'];

export interface MixSettings {
  mode: MixMode;
  /** concentration β ≥ 0 of the moi rule (unused by the other modes) */
  beta: number;
  /** candidates: the top-K of the prior's log-probs, or the whole vocabulary */
  topK: number | 'all';
  prior: MixPrior;
  /** Soft Thinking's settings; present exactly when mode is 'soft' (topK is then its max_topk) */
  soft?: SoftSettings;
}

export const DEFAULT_BETA = 1.0;
export const DEFAULT_TOP_K = 20;
/** Soft Thinking's default max_topk (the paper's runs) */
export const DEFAULT_SOFT_TOP_K = 10;
/** Reference sentinel: MIXINPUTS_BETA at or below this selects the direct mixture. */
export const DIRECT_SENTINEL = -99;
export const BETA_ENV = 'MIXINPUTS_BETA';
/**
 * The largest β: the moi rule's weights a = H/(β+1), b = (β+1−H)/(β+1) stay finite in float32
 * (β + 1 far below float32's 3.4e38), and β = 1e9 already puts all but 1e-9 of the weight on the
 * sampled token, which float32 rounds to all of it.
 */
export const MAX_BETA = 1e9;
/** β as a request or flag gives it: moi's [0, 1e9], or the reference's direct sentinel. */
export const BETA_RANGE: NumericRange = [
  { min: 0, max: MAX_BETA },
  { min: -MAX_BETA, max: DIRECT_SENTINEL, note: 'the direct mixture' },
];

export interface MixOptions {
  mode?: string;
  beta?: number | string;
  /** a count, or 0 / 'all' for the whole vocabulary */
  topK?: number | string;
  prior?: string;
  /** the mode when neither `mode`, `beta` nor MIXINPUTS_BETA picks one (default 'moi') */
  defaultMode?: MixMode;
  /** Soft Thinking's options (mode 'soft' only) */
  soft?: SoftOptions;
}

/** `field`: the value's path in a request (mix.beta, mix.topK, ...), where it came from one. */
function moiError(message: string, field?: string): UsageError {
  return new UsageError('E_MOI', `moi: ${message}`, field ? { field } : undefined);
}

/** A number from an option or env value; refuses empty, non-numeric, NaN and ±Infinity. */
function parseBeta(value: number | string, source: string, field?: string): number {
  const n = typeof value === 'number' ? value : value.trim() === '' ? NaN : Number(value.trim());
  if (!Number.isFinite(n)) throw moiError(`${source} must be a finite number, got '${String(value)}'`, field);
  return n;
}

function parseTopK(value: number | string, source: string): number | 'all' {
  if (typeof value === 'string' && value.trim().toLowerCase() === 'all') return 'all';
  const n = typeof value === 'number' ? value : value.trim() === '' ? NaN : Number(value.trim());
  if (!Number.isInteger(n) || n < 0) {
    throw moiError(`${source} must be a non-negative integer or 'all', got '${String(value)}'`, 'mix.topK');
  }
  return n === 0 ? 'all' : n;
}

function parseChoice<T extends string>(value: string, allowed: readonly T[], source: string, field?: string): T {
  const v = value.trim().toLowerCase();
  if (!(allowed as readonly string[]).includes(v)) {
    throw moiError(`unknown ${source} '${value}'; expected one of ${allowed.join(', ')}`, field);
  }
  return v as T;
}

/**
 * Check settings built by hand (or resolved earlier) against the rules and, when given, the
 * vocabulary size. `where` names the row in error messages.
 */
export function checkMixSettings(s: MixSettings, vocabSize?: number, where = 'settings'): void {
  if (!MIX_MODES.includes(s.mode))
    throw moiError(
      `${where}.mode: unknown mode '${String(s.mode)}'; expected one of ${MIX_MODES.join(', ')}`,
      'mix.mode',
    );
  if (!MIX_PRIORS.includes(s.prior))
    throw moiError(
      `${where}.prior: unknown prior '${String(s.prior)}'; expected one of ${MIX_PRIORS.join(', ')}`,
      'mix.prior',
    );
  if (typeof s.beta !== 'number' || !Number.isFinite(s.beta))
    throw moiError(`${where}.beta must be a finite number, got '${String(s.beta)}'`, 'mix.beta');
  if (s.mode === 'moi' && s.beta < 0)
    throw moiError(`${where}.beta must be >= 0 in moi mode, got ${s.beta}`, 'mix.beta');
  if (s.mode === 'moi' && s.beta > MAX_BETA)
    throw moiError(
      `${where}.beta must be ${describeRange(BETA_RANGE.slice(0, 1))} in moi mode, got ${s.beta}`,
      'mix.beta',
    );
  if (s.topK !== 'all') {
    if (!Number.isInteger(s.topK) || s.topK < 1)
      throw moiError(`${where}.topK must be a positive integer or 'all', got '${String(s.topK)}'`, 'mix.topK');
    if (vocabSize !== undefined && s.topK > vocabSize)
      throw moiError(`${where}.topK ${s.topK} is larger than the vocabulary (${vocabSize})`, 'mix.topK');
  }
  if (s.mode === 'soft') {
    if (!s.soft) throw moiError(`${where}.soft: mode 'soft' needs its soft settings`, 'mix.mode');
    checkSoftSettings(s.soft, vocabSize, `${where}.soft`);
  } else if (s.soft !== undefined) {
    throw moiError(`${where}.soft is only for mode 'soft', not '${s.mode}'`, 'mix.mode');
  }
}

/**
 * Resolve MoI settings from options and the environment.
 * - mode: `opts.mode`; else picked by a β (an explicit `opts.beta`, else MIXINPUTS_BETA):
 *   'direct' when β ≤ −99, 'moi' otherwise; else `opts.defaultMode` ('moi' if not given).
 * - beta: `opts.beta`, else MIXINPUTS_BETA (unless it is the direct sentinel), else 1.0.
 * - topK: 20 by default ('all' for a vocabulary of 20 or fewer); 0 or 'all' = the whole
 *   vocabulary; larger than `vocabSize` is refused. prior: 'raw' by default.
 */
export function resolveMixSettings(
  opts: MixOptions = {},
  env: NodeJS.ProcessEnv = process.env,
  vocabSize?: number,
): MixSettings {
  const rawEnv = env[BETA_ENV];
  const envBeta =
    rawEnv === undefined || rawEnv.trim() === '' ? undefined : parseBeta(rawEnv, `${BETA_ENV} (environment)`);
  const optBeta = opts.beta === undefined ? undefined : parseBeta(opts.beta, 'option beta', 'mix.beta');

  // The β that speaks for the mode, and where it came from.
  const pick =
    optBeta !== undefined
      ? { beta: optBeta, source: 'option beta', env: false, field: 'mix.beta' }
      : envBeta !== undefined
        ? { beta: envBeta, source: `${BETA_ENV} (environment)`, env: true, field: undefined }
        : undefined;

  let mode: MixMode;
  if (opts.mode !== undefined) mode = parseChoice(opts.mode, MIX_MODES, 'mode', 'mix.mode');
  else if (pick) mode = pick.beta <= DIRECT_SENTINEL ? 'direct' : 'moi';
  else mode = opts.defaultMode !== undefined ? parseChoice(opts.defaultMode, MIX_MODES, 'defaultMode') : 'moi';

  // The sentinel only selects the direct mixture; it is not a β.
  const beta = pick && pick.beta > DIRECT_SENTINEL ? pick.beta : DEFAULT_BETA;
  // An explicit mode 'moi' overrides the environment's direct sentinel (β stays 1.0), but an
  // explicit negative β for moi is an error.
  const envSentinel = pick?.env === true && pick.beta <= DIRECT_SENTINEL;
  if (mode === 'moi' && pick && pick.beta < 0 && !envSentinel) {
    throw moiError(
      `${pick.source} must be >= 0 in moi mode, got ${pick.beta}` +
        (pick.beta <= DIRECT_SENTINEL ? ` (values <= ${DIRECT_SENTINEL} select mode 'direct')` : ''),
      pick.field,
    );
  }
  if (mode === 'moi' && pick && pick.beta > MAX_BETA) {
    throw moiError(`${pick.source} must be in [0, ${formatBound(MAX_BETA)}] in moi mode, got ${pick.beta}`, pick.field);
  }

  // The default K never exceeds a (tiny) vocabulary: there it means the whole of it.
  const defaultK = mode === 'soft' ? DEFAULT_SOFT_TOP_K : DEFAULT_TOP_K;
  const topK =
    opts.topK !== undefined
      ? parseTopK(opts.topK, 'option topK')
      : vocabSize !== undefined && vocabSize <= defaultK
        ? 'all'
        : defaultK;
  if (topK !== 'all' && vocabSize !== undefined && topK > vocabSize) {
    throw moiError(`option topK ${topK} is larger than the vocabulary (${vocabSize})`, 'mix.topK');
  }
  const prior = opts.prior === undefined ? 'raw' : parseChoice(opts.prior, MIX_PRIORS, 'prior', 'mix.prior');

  const settings: MixSettings = { mode, beta, topK, prior };
  if (mode === 'soft') settings.soft = resolveSoftSettings(opts.soft ?? {}, vocabSize);
  else if (anySoftOption(opts.soft)) {
    const given = givenSoftOptions(opts.soft);
    throw moiError(`the soft-thinking options (${given.join(', ')}) need mode 'soft'`, `mix.soft.${given[0]}`);
  }
  checkMixSettings(settings, vocabSize);
  return settings;
}
