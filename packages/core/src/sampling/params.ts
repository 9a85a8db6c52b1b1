/**
 * Sampling parameters of one request, their defaults and their validation.
 * Defaults follow vLLM: temperature 1 and every filter and penalty off. A model's
 * generation_config.json may supply defaults (as vLLM does: temperature, top_k, top_p, min_p,
 * repetition_penalty; `do_sample` is ignored), and explicit request values win over both.
 * Bad values are refused with a UsageError (code E_SAMPLING) that names the field, never clamped.
 */
import { UsageError } from '../errors.ts';
import { describeRange, inRange, INT32_MAX, type NumericRange } from '../range.ts';

export interface SamplingParams {
  /** softmax temperature; 0 = greedy (argmax) */
  temperature: number;
  /** keep the k most likely tokens; 0 = off */
  topK: number;
  /** nucleus: keep the smallest set of tokens whose mass is ≥ p; 1 = off */
  topP: number;
  /** keep tokens whose probability is ≥ minP × the top probability; 0 = off */
  minP: number;
  /** HF semantics over prompt + generated ids: logit > 0 → logit / p, else logit × p; 1 = off */
  repetitionPenalty: number;
  /** OpenAI/vLLM semantics over generated ids only: logit -= presence × [count > 0]; 0 = off */
  presencePenalty: number;
  /** OpenAI/vLLM semantics over generated ids only: logit -= frequency × count; 0 = off */
  frequencyPenalty: number;
  /** same seed + same inputs → same tokens; undefined = seeded from crypto */
  seed?: number;
  /** undefined = no logprobs; 0 = the chosen token's logprob only; n = also the top n */
  logprobs?: number;
}

export const DEFAULT_SAMPLING: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
});

/** The sampling fields of a Hugging Face generation_config.json (as parsed, snake_case). */
export interface GenerationConfigDefaults {
  temperature?: number | null;
  top_k?: number | null;
  top_p?: number | null;
  min_p?: number | null;
  repetition_penalty?: number | null;
  [other: string]: unknown;
}

/** OpenAI and vLLM accept presence/frequency penalties in [-2, 2]. */
export const MAX_ABS_PENALTY = 2;

/**
 * The ranges of the numeric fields, chosen so that every intermediate of the processors and of
 * the mixers that read their output stays finite in float32 (and no constant is subnormal):
 * - temperature divides the logits: 0 (greedy) or at least 1e-5 (vLLM's greedy threshold), so
 *   logits of any checkpoint scale by at most 1e5; at most 100 (OpenAI-style servers' bound);
 * - repetition penalty divides or multiplies logits: [0.01, 10] (a factor of 100 at most);
 * - top-p and min-p are masses compared with cumulative sums; top-k a count (int32 on the device).
 */
export const SAMPLING_RANGES = {
  temperature: [
    { min: 0, max: 0 },
    { min: 1e-5, max: 100 },
  ],
  topK: [{ min: 0, max: INT32_MAX }],
  topP: [{ min: 0, max: 1, minOpen: true }],
  minP: [{ min: 0, max: 1 }],
  repetitionPenalty: [{ min: 0.01, max: 10 }],
  presencePenalty: [{ min: -MAX_ABS_PENALTY, max: MAX_ABS_PENALTY }],
  frequencyPenalty: [{ min: -MAX_ABS_PENALTY, max: MAX_ABS_PENALTY }],
} as const satisfies Record<string, NumericRange>;

/** What 'off' or a special value means, for the messages. */
const MEANING: Partial<Record<keyof SamplingParams, string>> = {
  temperature: '0 = greedy',
  topK: '0 = off',
  topP: '1 = off',
  minP: '0 = off',
  repetitionPenalty: '1 = off',
  presencePenalty: '0 = off',
  frequencyPenalty: '0 = off',
};

const FROM_GENERATION_CONFIG: [keyof GenerationConfigDefaults & string, keyof SamplingParams][] = [
  ['temperature', 'temperature'],
  ['top_k', 'topK'],
  ['top_p', 'topP'],
  ['min_p', 'minP'],
  ['repetition_penalty', 'repetitionPenalty'],
];

const FIELDS: (keyof SamplingParams)[] = [
  'temperature',
  'topK',
  'topP',
  'minP',
  'repetitionPenalty',
  'presencePenalty',
  'frequencyPenalty',
  'seed',
  'logprobs',
];

function samplingError(label: string, rule: string, value: unknown, field?: string): UsageError {
  const shown = typeof value === 'number' ? String(value) : (JSON.stringify(value) ?? String(value));
  return new UsageError('E_SAMPLING', `${label} must be ${rule}, got ${shown}`, field ? { field } : undefined);
}

/**
 * Check one field; `label` names it where the value came from (for the message), `path` is its
 * place in a request (set on the error) when the value came from one.
 */
function check(field: keyof SamplingParams, value: unknown, label: string, path?: string): void {
  const fail = (rule: string) => samplingError(label, rule, value, path);
  if (typeof value !== 'number' || !Number.isFinite(value)) throw fail('a finite number');
  if (field in SAMPLING_RANGES) {
    const range = SAMPLING_RANGES[field as keyof typeof SAMPLING_RANGES];
    const integer = field === 'topK';
    if (!inRange(value, range, integer)) throw fail(`${describeRange(range, integer)} (${MEANING[field]})`);
    return;
  }
  switch (field) {
    case 'seed':
      if (!Number.isSafeInteger(value)) throw fail('a safe integer');
      break;
    case 'logprobs':
      if (!Number.isInteger(value) || value < 0) throw fail('an integer ≥ 0');
      break;
  }
}

/**
 * Merge request values over generation_config.json defaults over DEFAULT_SAMPLING, then validate.
 * `undefined` (and, from the config file, `null`) means "not given". Unknown keys are ignored.
 */
export function resolveSamplingParams(
  partial: Partial<SamplingParams> = {},
  generationConfigDefaults?: GenerationConfigDefaults,
): SamplingParams {
  const out: SamplingParams = { ...DEFAULT_SAMPLING };
  if (generationConfigDefaults) {
    for (const [hfName, field] of FROM_GENERATION_CONFIG) {
      const v = generationConfigDefaults[hfName];
      if (v === undefined || v === null) continue;
      check(field, v, `generation_config.json ${hfName}`);
      (out as unknown as Record<string, unknown>)[field] = v;
    }
  }
  for (const field of FIELDS) {
    const v = (partial as Record<string, unknown>)[field];
    if (v === undefined) continue;
    check(field, v, `sampling.${field}`, `sampling.${field}`);
    (out as unknown as Record<string, unknown>)[field] = v;
  }
  return out;
}

/** True when the row draws at random (temperature > 0); false = greedy argmax. */
export function isRandom(p: SamplingParams): boolean {
  return p.temperature > 0;
}
