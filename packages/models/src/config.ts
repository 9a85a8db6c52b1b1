/**
 * Reading config.json fields: each family's config type mirrors HF's names, with HF's
 * defaults; a missing or mistyped required field is a ModelError that names it.
 *
 * Every size, count and rope/norm/window parameter is bounded here, as it is read, so a
 * config can never make the loader allocate for a billion layers or build a graph that yields
 * NaN: the bounds are generous for real models (see LIMITS) and a value outside them is a
 * ModelError naming the field, the value and the allowed range.
 */
import { ModelError } from '@moi/core';

export type RawConfig = Record<string, unknown>;

export class ConfigReader {
  constructor(
    readonly raw: RawConfig,
    readonly source: string,
  ) {}

  private fail(key: string, want: string): never {
    throw new ModelError(
      'E_CONFIG',
      `${this.source}: field '${key}' must be ${want} (got ${JSON.stringify(this.raw[key])})`,
    );
  }

  num(key: string, def?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (def === undefined) this.fail(key, 'a number');
      return def;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'a number');
    return v;
  }

  /** A positive integer, at most `max` (defaults to a bound no real config exceeds). */
  int(key: string, def?: number, max = LIMITS.count): number {
    const v = this.num(key, def);
    if (!Number.isInteger(v) || v <= 0 || v > max) this.fail(key, `a positive integer ≤ ${max}`);
    return v;
  }

  /** A finite number > 0 (and ≤ max when given). */
  pos(key: string, def?: number, max = Infinity): number {
    const v = this.num(key, def);
    if (!(v > 0) || v > max) this.fail(key, max === Infinity ? 'a number > 0' : `a number in (0, ${max}]`);
    return v;
  }

  optNum(key: string): number | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    return this.num(key);
  }

  /** null when absent; otherwise a positive integer ≤ max. */
  optInt(key: string, max = LIMITS.count): number | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    return this.int(key, undefined, max);
  }

  /** null when absent (or null); otherwise a number > 0. */
  optPos(key: string): number | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    return this.pos(key);
  }

  bool(key: string, def: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') this.fail(key, 'true or false');
    return v;
  }

  str(key: string, def?: string): string {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (def === undefined) this.fail(key, 'a string');
      return def;
    }
    if (typeof v !== 'string') this.fail(key, 'a string');
    return v;
  }

  obj<T>(key: string): T | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(key, 'an object');
    return v as T;
  }

  strList(key: string): string[] | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) this.fail(key, 'a list of strings');
    return v as string[];
  }
}

/**
 * Upper bounds for sizes and counts: far above any published model (Llama 3.1 405B has 126
 * layers, hidden 16384, 128 heads; Gemma 3's vocabulary is 262,208; contexts reach 10M), far
 * below what would exhaust memory before the weight files are even looked at.
 */
export const LIMITS = {
  layers: 1024,
  hidden: 65536,
  intermediate: 1 << 20,
  vocab: 1 << 22,
  heads: 1024,
  headDim: 2048,
  positions: 1 << 26,
  /** any other count (window sizes, patterns) */
  count: 1 << 26,
} as const;

/** The fields every Llama-like config.json has, with HF's defaults. */
export interface BaseConfig {
  model_type: string;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  max_position_embeddings: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: Record<string, unknown> | null;
  tie_word_embeddings: boolean;
  hidden_act: string;
}

export function readBase(r: ConfigReader, defaults: Partial<BaseConfig> = {}): BaseConfig {
  const hidden = r.int('hidden_size', defaults.hidden_size, LIMITS.hidden);
  const heads = r.int('num_attention_heads', defaults.num_attention_heads, LIMITS.heads);
  const headDimDefault = defaults.head_dim ?? hidden / heads;
  if (r.raw.head_dim == null && !Number.isInteger(headDimDefault)) {
    throw new ModelError(
      'E_CONFIG',
      `${r.source}: hidden_size (${hidden}) must be a multiple of num_attention_heads (${heads}) when head_dim is not given`,
    );
  }
  const c: BaseConfig = {
    model_type: r.str('model_type'),
    vocab_size: r.int('vocab_size', defaults.vocab_size, LIMITS.vocab),
    hidden_size: hidden,
    intermediate_size: r.int('intermediate_size', defaults.intermediate_size, LIMITS.intermediate),
    num_hidden_layers: r.int('num_hidden_layers', defaults.num_hidden_layers, LIMITS.layers),
    num_attention_heads: heads,
    num_key_value_heads: r.int('num_key_value_heads', defaults.num_key_value_heads ?? heads, LIMITS.heads),
    head_dim: r.int('head_dim', headDimDefault, LIMITS.headDim),
    max_position_embeddings: r.int(
      'max_position_embeddings',
      defaults.max_position_embeddings ?? 2048,
      LIMITS.positions,
    ),
    rms_norm_eps: r.pos('rms_norm_eps', defaults.rms_norm_eps ?? 1e-6, 1),
    rope_theta: r.pos('rope_theta', defaults.rope_theta ?? 10000),
    rope_scaling: readRopeScaling(r),
    tie_word_embeddings: r.bool('tie_word_embeddings', defaults.tie_word_embeddings ?? false),
    hidden_act: r.str('hidden_act', defaults.hidden_act ?? 'silu'),
  };
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    throw new ModelError(
      'E_CONFIG',
      `${r.source}: num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${c.num_key_value_heads})`,
    );
  }
  if (c.head_dim % 2 !== 0) {
    throw new ModelError(
      'E_CONFIG',
      `${r.source}: head_dim (${c.head_dim}) must be even (rotary embeddings rotate pairs of dimensions)`,
    );
  }
  // q and o projections are [heads·head_dim, hidden]: bound their size as the others are bounded
  if (heads * c.head_dim > 4 * LIMITS.hidden) {
    throw new ModelError(
      'E_CONFIG',
      `${r.source}: num_attention_heads × head_dim (${heads} × ${c.head_dim}) must be ≤ ${4 * LIMITS.hidden}`,
    );
  }
  return c;
}

/**
 * rope_scaling: an object whose numeric parameters are in range (which of them a rope type needs
 * is checked by core's ropeInvFreq). factor > 0, the llama3 frequency factors > 0 with
 * low < high, original_max_position_embeddings a positive integer.
 */
function readRopeScaling(r: ConfigReader): Record<string, unknown> | null {
  const s = r.obj<Record<string, unknown>>('rope_scaling');
  if (!s) return null;
  const sub = new ConfigReader(s, r.source);
  const bad = (key: string, want: string): never => {
    throw new ModelError(
      'E_CONFIG',
      `${r.source}: field 'rope_scaling.${key}' must be ${want} (got ${JSON.stringify(s[key])})`,
    );
  };
  const positive = (key: string) => {
    const v = s[key];
    if (v === undefined || v === null) return;
    if (typeof v !== 'number' || !Number.isFinite(v) || !(v > 0)) bad(key, 'a number > 0');
  };
  for (const key of ['factor', 'low_freq_factor', 'high_freq_factor', 'attention_factor', 'beta_fast', 'beta_slow'])
    positive(key);
  const omp = s.original_max_position_embeddings;
  if (
    omp !== undefined &&
    omp !== null &&
    (typeof omp !== 'number' || !Number.isInteger(omp) || omp <= 0 || omp > LIMITS.positions)
  ) {
    bad('original_max_position_embeddings', `a positive integer ≤ ${LIMITS.positions}`);
  }
  const low = sub.optNum('low_freq_factor');
  const high = sub.optNum('high_freq_factor');
  if (low !== null && high !== null && !(high > low)) bad('high_freq_factor', `greater than low_freq_factor (${low})`);
  for (const key of ['rope_type', 'type']) {
    if (s[key] !== undefined && s[key] !== null && typeof s[key] !== 'string') bad(key, 'a string');
  }
  return s;
}
