/**
 * Soft Thinking settings (arXiv 2505.15778, reference: eric-ai-lab/Soft-Thinking, an SGLang 0.4.6
 * fork). The soft phase has its own filters (the request's temperature / top-k / top-p / min-p in
 * the reference's API); after think-end the row samples with the after-thinking ones. Defaults
 * follow the paper's runs. Bad values are refused with a UsageError (code E_MOI) naming the field.
 */
import { UsageError } from '@moi/core';

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

export const DEFAULT_THINKING: Readonly<SoftFilters> = Object.freeze({ temperature: 0.6, topK: 30, topP: 0.95, minP: 0.001 });
export const DEFAULT_AFTER_THINKING: Readonly<SoftFilters> = Object.freeze({ temperature: 0.6, topK: 30, topP: 0.95, minP: 0 });
export const DEFAULT_THINK_END = '</think>';
/** the paper's recommended cold stop, when it is turned on */
export const RECOMMENDED_COLD_STOP = Object.freeze({ entropy: 0.01, steps: 256 });
/**
 * Dirichlet noise draws Gamma variates per candidate on the host (uniforms) and the device (the
 * transform); this bounds the candidates a row may have before max_topk (its soft-phase top-k,
 * or the vocabulary when top-k is off).
 */
export const MAX_DIRICHLET_SLOTS = 4096;

function softError(message: string): UsageError {
  return new UsageError('E_MOI', `soft: ${message}`);
}

/** True when some option is given (an empty afterThinking counts as not given). */
export function anySoftOption(o: SoftOptions | undefined): boolean {
  if (!o) return false;
  return Object.entries(o).some(([k, v]) => v !== undefined &&
    (k !== 'afterThinking' || Object.values(v as object).some((x) => x !== undefined)));
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

function checkFilters(f: SoftFilters, where: string): void {
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (!num(f.temperature) || f.temperature < 0) throw softError(`${where}.temperature must be a finite number >= 0, got ${String(f.temperature)}`);
  if (!Number.isInteger(f.topK) || f.topK < 0) throw softError(`${where}.topK must be an integer >= 0 (0 or -1 = off), got ${String(f.topK)}`);
  if (!num(f.topP) || !(f.topP > 0 && f.topP <= 1)) throw softError(`${where}.topP must be in (0, 1], got ${String(f.topP)}`);
  if (!num(f.minP) || !(f.minP >= 0 && f.minP <= 1)) throw softError(`${where}.minP must be in [0, 1], got ${String(f.minP)}`);
}

/** Validate resolved settings (e.g. built by hand); `vocabSize` bounds ids and top-k when given. */
export function checkSoftSettings(s: SoftSettings, vocabSize?: number, where = 'soft'): void {
  checkFilters(s.thinking, `${where}.thinking`);
  checkFilters(s.afterThinking, `${where}.afterThinking`);
  if (typeof s.thinkEnd !== 'string' || s.thinkEnd === '') throw softError(`${where}.thinkEnd must be a non-empty string`);
  if (s.thinkEndId !== null) {
    if (!Number.isInteger(s.thinkEndId) || s.thinkEndId < 0 || (vocabSize !== undefined && s.thinkEndId >= vocabSize)) {
      throw softError(`${where}.thinkEndId must be a token id${vocabSize !== undefined ? ` in [0, ${vocabSize})` : ' >= 0'}, got ${String(s.thinkEndId)}`);
    }
  }
  if (!Number.isFinite(s.coldStopEntropy) || s.coldStopEntropy < 0) throw softError(`${where}.coldStopEntropy must be a finite number >= 0 (0 = off), got ${String(s.coldStopEntropy)}`);
  if (!Number.isInteger(s.coldStopSteps) || s.coldStopSteps < 1) throw softError(`${where}.coldStopSteps must be a positive integer, got ${String(s.coldStopSteps)}`);
  if (!SOFT_NOISES.includes(s.noise)) throw softError(`${where}.noise: unknown noise '${String(s.noise)}'; expected one of ${SOFT_NOISES.join(', ')}`);
  if (!Number.isFinite(s.gumbelTau) || s.gumbelTau <= 0) throw softError(`${where}.gumbelTau must be a finite number > 0, got ${String(s.gumbelTau)}`);
  if (!Number.isFinite(s.dirichletAlpha) || s.dirichletAlpha <= 0) throw softError(`${where}.dirichletAlpha must be a finite number > 0, got ${String(s.dirichletAlpha)}`);
  if (s.noise === 'dirichlet') {
    const slots = s.thinking.topK > 0 ? s.thinking.topK : vocabSize;
    if (slots === undefined || slots > MAX_DIRICHLET_SLOTS) {
      throw softError(`dirichlet noise needs a soft-phase top-k of at most ${MAX_DIRICHLET_SLOTS} ` +
        `(got ${s.thinking.topK > 0 ? s.thinking.topK : `off over a vocabulary of ${vocabSize ?? 'unknown size'}`}): its Gamma draws are made per candidate`);
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
  const noise = o.noise === undefined ? 'none' : o.noise.trim().toLowerCase();
  if (!(SOFT_NOISES as readonly string[]).includes(noise)) {
    throw softError(`unknown noise '${o.noise}'; expected one of ${SOFT_NOISES.join(', ')}`);
  }
  const s: SoftSettings = {
    thinking: filtersFrom({ temperature: o.temperature, topK: o.topK, topP: o.topP, minP: o.minP }, DEFAULT_THINKING),
    afterThinking: filtersFrom(o.afterThinking, DEFAULT_AFTER_THINKING),
    thinkEnd: o.thinkEnd ?? DEFAULT_THINK_END,
    thinkEndId: o.thinkEndId ?? null,
    coldStopEntropy: o.coldStopEntropy ?? 0,
    coldStopSteps: o.coldStopSteps ?? RECOMMENDED_COLD_STOP.steps,
    noise: noise as SoftNoise,
    gumbelTau: o.gumbelTau ?? 1,
    dirichletAlpha: o.dirichletAlpha ?? 1,
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
  if (!tokenizer) throw softError(`no tokenizer to find the think-end token '${s.thinkEnd}': ${hint}`);
  const ids = tokenizer.encode(s.thinkEnd, { addSpecialTokens: false });
  const last = ids[ids.length - 1];
  if (last === undefined || tokenizer.decode([last], { skipSpecialTokens: false }).trim() !== s.thinkEnd.trim()) {
    throw softError(`the tokenizer has no token for the think-end text '${s.thinkEnd}' ` +
      `(it encodes as ${ids.length} token${ids.length === 1 ? '' : 's'}: [${ids.join(', ')}]); ${hint}`);
  }
  return last;
}
