/**
 * Soft Thinking settings (arXiv 2505.15778, reference: eric-ai-lab/Soft-Thinking, an SGLang 0.4.6
 * fork). The soft phase has its own filters (the request's temperature / top-k / top-p / min-p in
 * the reference's API); after think-end the row samples with the after-thinking ones. Defaults
 * follow the paper's runs. Bad values are refused with a UsageError (code E_MOI) naming the field.
 */
import { describeRange, inRange, INT32_MAX, SAMPLING_RANGES, UsageError, type NumericRange } from '@moi/core';

export type SoftNoise = 'none' | 'gumbel' | 'dirichlet';
export const SOFT_NOISES: readonly SoftNoise[] = ['none', 'gumbel', 'dirichlet'];

/** One phase's filters, applied in this order: temperature, top-k, top-p, min-p. */
export interface SoftFilters {
  /** 0 = argmax (the reference: temperature 1 with top-k 1) */
  temperature: number;
  /** 0 = off (the reference's −1 is accepted and means off too) */
  topK: number;
  /** in (0, 1]; 1 = off */
  topP: number;
  /** in [0, 1]; 0 = off */
  minP: number;
}

export interface SoftSettings {
  /** the soft phase's filters */
  thinking: SoftFilters;
  /** the sampler's filters after think-end */
  afterThinking: SoftFilters;
  /** the think-end text ('</think>'): its token is the last id of encode(text) without special tokens */
  thinkEnd: string;
  /** the think-end token id; null until resolved from `thinkEnd` with the tokenizer (resolveThinkEnd) */
  thinkEndId: number | null;
  /** cold stop: S (nats) below this for `coldStopSteps` consecutive steps ends thinking; 0 = off */
  coldStopEntropy: number;
  coldStopSteps: number;
  noise: SoftNoise;
  /** Gumbel-softmax temperature τ */
  gumbelTau: number;
  /** Dirichlet concentration α (Gamma(α·p_i, 1)) */
  dirichletAlpha: number;
}

/** Options as they come from a request or the command line (values not given are undefined). */
export interface SoftOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  afterThinking?: Partial<SoftFilters>;
  thinkEnd?: string;
  thinkEndId?: number;
  coldStopEntropy?: number;
  coldStopSteps?: number;
  noise?: string;
  gumbelTau?: number;
  dirichletAlpha?: number;
}

export const DEFAULT_THINKING: Readonly<SoftFilters> = Object.freeze({
  temperature: 0.6,
  topK: 30,
  topP: 0.95,
  minP: 0.001,
});
export const DEFAULT_AFTER_THINKING: Readonly<SoftFilters> = Object.freeze({
  temperature: 0.6,
  topK: 30,
  topP: 0.95,
  minP: 0,
});
export const DEFAULT_THINK_END = '</think>';
/** the paper's recommended cold stop, when it is turned on */
export const RECOMMENDED_COLD_STOP = Object.freeze({ entropy: 0.01, steps: 256 });
/**
 * Dirichlet noise draws Gamma variates per candidate on the host (uniforms) and the device (the
 * transform); this bounds the candidates a row may have before max_topk (its soft-phase top-k,
 * or the vocabulary when top-k is off).
 */
export const MAX_DIRICHLET_SLOTS = 4096;
export const DEFAULT_SOFT_NOISE: SoftNoise = 'none';
export const DEFAULT_GUMBEL_TAU = 1;
export const DEFAULT_DIRICHLET_ALPHA = 1;
/** 0 = the cold stop is off */
export const DEFAULT_COLD_STOP_ENTROPY = 0;

/**
 * Ranges that keep Soft Thinking's float32 arithmetic finite (soft.ts):
 * - Gumbel τ divides (ln w + G), where G ∈ [−2.9, 17.4] (uniforms on a 2^-24 grid) and ln w is
 *   bounded by the logits' spread over the temperature: τ ≥ 1e-3 keeps it finite, τ ≤ 1e3 keeps
 *   it from a uniform blur of float32 rounding.
 * - Dirichlet draws Gamma(α·p): its log is ln Gamma(α·p + 1) + ln(u)/(α·p); the top candidate has
 *   p ≥ 1/MAX_DIRICHLET_SLOTS, so α ≥ 1e-3 keeps ln(u)/(α·p) ≥ −7e7 (finite, and the top slot
 *   always valid); α ≤ 1e3 keeps d = α·p + 2/3 and d·v far inside float32.
 * - The cold-stop threshold compares with S in nats, which is at most ln V (< 22 for any int32
 *   vocabulary): [0, 100].
 */
export const GUMBEL_TAU_RANGE: NumericRange = [{ min: 1e-3, max: 1e3 }];
export const DIRICHLET_ALPHA_RANGE: NumericRange = [{ min: 1e-3, max: 1e3 }];
export const COLD_STOP_ENTROPY_RANGE: NumericRange = [{ min: 0, max: 100 }];
export const COLD_STOP_STEPS_RANGE: NumericRange = [{ min: 1, max: INT32_MAX }];

/** `field`: the value's path in a request (mix.soft.gumbelTau, ...), where it came from one. */
function softError(message: string, field?: string): UsageError {
  return new UsageError('E_MOI', `soft: ${message}`, field ? { field } : undefined);
}

/** True when some option is given (an empty afterThinking counts as not given). */
export function anySoftOption(o: SoftOptions | undefined): boolean {
  if (!o) return false;
  return Object.entries(o).some(
    ([k, v]) => v !== undefined && (k !== 'afterThinking' || Object.values(v as object).some((x) => x !== undefined)),
  );
}

/** The names of the options given, for error messages. */
export function givenSoftOptions(o: SoftOptions | undefined): string[] {
  if (!o) return [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue;
    if (k === 'afterThinking') {
      for (const [k2, v2] of Object.entries(v as object)) if (v2 !== undefined) out.push(`afterThinking.${k2}`);
    } else out.push(k);
  }
  return out;
}

/**
 * One phase's filters, in the sampler's ranges (@moi/core's SAMPLING_RANGES). `path` is where a
 * request gives them: the soft phase's come from its sampling fields, after-thinking's from
 * mix.soft.afterThinking.
 */
function checkFilters(f: SoftFilters, where: string, path: string): void {
  const check = (name: keyof SoftFilters, range: NumericRange, integer = false, extra = '') => {
    if (!inRange(f[name], range, integer)) {
      throw softError(
        `${where}.${name} must be ${describeRange(range, integer)}${extra}, got ${String(f[name])}`,
        `${path}.${name}`,
      );
    }
  };
  check('temperature', SAMPLING_RANGES.temperature, false, ' (0 = argmax)');
  check('topK', SAMPLING_RANGES.topK, true, ' (0 or -1 = off)');
  check('topP', SAMPLING_RANGES.topP);
  check('minP', SAMPLING_RANGES.minP);
}

/** Validate resolved settings (e.g. built by hand); `vocabSize` bounds ids and top-k when given. */
export function checkSoftSettings(s: SoftSettings, vocabSize?: number, where = 'soft'): void {
  checkFilters(s.thinking, `${where}.thinking`, 'sampling');
  checkFilters(s.afterThinking, `${where}.afterThinking`, 'mix.soft.afterThinking');
  if (typeof s.thinkEnd !== 'string' || s.thinkEnd === '')
    throw softError(`${where}.thinkEnd must be a non-empty string`, 'mix.soft.thinkEnd');
  if (s.thinkEndId !== null) {
    const top = vocabSize ?? INT32_MAX + 1;
    if (!Number.isInteger(s.thinkEndId) || s.thinkEndId < 0 || s.thinkEndId >= top) {
      throw softError(
        `${where}.thinkEndId must be a token id in [0, ${top}), got ${String(s.thinkEndId)}`,
        'mix.soft.thinkEndId',
      );
    }
  }
  const check = (
    name: 'coldStopEntropy' | 'coldStopSteps' | 'gumbelTau' | 'dirichletAlpha',
    range: NumericRange,
    integer = false,
    extra = '',
  ) => {
    if (!inRange(s[name], range, integer)) {
      throw softError(
        `${where}.${name} must be ${describeRange(range, integer)}${extra}, got ${String(s[name])}`,
        `mix.soft.${name}`,
      );
    }
  };
  check('coldStopEntropy', COLD_STOP_ENTROPY_RANGE, false, ' (0 = off)');
  check('coldStopSteps', COLD_STOP_STEPS_RANGE, true);
  if (!SOFT_NOISES.includes(s.noise))
    throw softError(
      `${where}.noise: unknown noise '${String(s.noise)}'; expected one of ${SOFT_NOISES.join(', ')}`,
      'mix.soft.noise',
    );
  check('gumbelTau', GUMBEL_TAU_RANGE);
  check('dirichletAlpha', DIRICHLET_ALPHA_RANGE);
  if (s.noise === 'dirichlet') {
    // a top-k past the vocabulary keeps all of it (soft.ts), as off does
    const slots = s.thinking.topK > 0 ? Math.min(s.thinking.topK, vocabSize ?? Infinity) : vocabSize;
    if (slots === undefined || slots > MAX_DIRICHLET_SLOTS) {
      throw softError(
        `dirichlet noise needs a soft-phase top-k of at most ${MAX_DIRICHLET_SLOTS} ` +
          `(got ${s.thinking.topK > 0 ? s.thinking.topK : `off over a vocabulary of ${vocabSize ?? 'unknown size'}`}): its Gamma draws are made per candidate`,
        'sampling.topK',
      );
    }
  }
}

/** The reference's −1 (off) becomes 0; anything else is kept for the check. */
const topKOff = (k: number | undefined): number | undefined => (k === -1 ? 0 : k);

function filtersFrom(o: Partial<SoftFilters> | undefined, defaults: Readonly<SoftFilters>): SoftFilters {
  return {
    temperature: o?.temperature ?? defaults.temperature,
    topK: topKOff(o?.topK) ?? defaults.topK,
    topP: o?.topP ?? defaults.topP,
    minP: o?.minP ?? defaults.minP,
  };
}

/** Resolve Soft Thinking settings from options, over the paper's defaults; then validate. */
export function resolveSoftSettings(o: SoftOptions, vocabSize?: number): SoftSettings {
  const noise = o.noise === undefined ? DEFAULT_SOFT_NOISE : o.noise.trim().toLowerCase();
  if (!(SOFT_NOISES as readonly string[]).includes(noise)) {
    throw softError(`unknown noise '${o.noise}'; expected one of ${SOFT_NOISES.join(', ')}`, 'mix.soft.noise');
  }
  const s: SoftSettings = {
    thinking: filtersFrom({ temperature: o.temperature, topK: o.topK, topP: o.topP, minP: o.minP }, DEFAULT_THINKING),
    afterThinking: filtersFrom(o.afterThinking, DEFAULT_AFTER_THINKING),
    thinkEnd: o.thinkEnd ?? DEFAULT_THINK_END,
    thinkEndId: o.thinkEndId ?? null,
    coldStopEntropy: o.coldStopEntropy ?? DEFAULT_COLD_STOP_ENTROPY,
    coldStopSteps: o.coldStopSteps ?? RECOMMENDED_COLD_STOP.steps,
    noise: noise as SoftNoise,
    gumbelTau: o.gumbelTau ?? DEFAULT_GUMBEL_TAU,
    dirichletAlpha: o.dirichletAlpha ?? DEFAULT_DIRICHLET_ALPHA,
  };
  checkSoftSettings(s, vocabSize);
  return s;
}

/** What a tokenizer must offer to resolve the think-end token (structurally, the engine's Tokenizer). */
export interface ThinkEndTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
}

/**
 * The think-end token id: the given id, else the last id of encode(thinkEnd) without special
 * tokens (as the reference). A tokenizer with no token for the text (its last id does not decode
 * to the whole text) is refused, as is a missing tokenizer; the message says to pass the id.
 */
export function resolveThinkEnd(s: SoftSettings, tokenizer: ThinkEndTokenizer | null | undefined): number {
  if (s.thinkEndId !== null) return s.thinkEndId;
  const hint = `pass the think-end token id (--think-end-id N / think_end as an id)`;
  if (!tokenizer)
    throw softError(`no tokenizer to find the think-end token '${s.thinkEnd}': ${hint}`, 'mix.soft.thinkEnd');
  const ids = tokenizer.encode(s.thinkEnd, { addSpecialTokens: false });
  const last = ids[ids.length - 1];
  if (last === undefined || tokenizer.decode([last], { skipSpecialTokens: false }).trim() !== s.thinkEnd.trim()) {
    throw softError(
      `the tokenizer has no token for the think-end text '${s.thinkEnd}' ` +
        `(it encodes as ${ids.length} token${ids.length === 1 ? '' : 's'}: [${ids.join(', ')}]); ${hint}`,
      'mix.soft.thinkEnd',
    );
  }
  return last;
}
