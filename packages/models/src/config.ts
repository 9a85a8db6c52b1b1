/**
 * Reading config.json fields: each family's config type mirrors HF's names, with HF's
 * defaults; a missing or mistyped required field is a ModelError that names it.
 */
import { ModelError } from '@moi/core';

export type RawConfig = Record<string, unknown>;

export class ConfigReader {
  constructor(readonly raw: RawConfig, readonly source: string) {}

  private fail(key: string, want: string): never {
    throw new ModelError('E_CONFIG', `${this.source}: field '${key}' must be ${want} (got ${JSON.stringify(this.raw[key])})`);
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

  int(key: string, def?: number): number {
    const v = this.num(key, def);
    if (!Number.isInteger(v) || v <= 0) this.fail(key, 'a positive integer');
    return v;
  }

  optNum(key: string): number | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    return this.num(key);
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
  const hidden = r.int('hidden_size', defaults.hidden_size);
  const heads = r.int('num_attention_heads', defaults.num_attention_heads);
  const c: BaseConfig = {
    model_type: r.str('model_type'),
    vocab_size: r.int('vocab_size', defaults.vocab_size),
    hidden_size: hidden,
    intermediate_size: r.int('intermediate_size', defaults.intermediate_size),
    num_hidden_layers: r.int('num_hidden_layers', defaults.num_hidden_layers),
    num_attention_heads: heads,
    num_key_value_heads: r.int('num_key_value_heads', defaults.num_key_value_heads ?? heads),
    head_dim: r.int('head_dim', defaults.head_dim ?? hidden / heads),
    max_position_embeddings: r.int('max_position_embeddings', defaults.max_position_embeddings ?? 2048),
    rms_norm_eps: r.num('rms_norm_eps', defaults.rms_norm_eps ?? 1e-6),
    rope_theta: r.num('rope_theta', defaults.rope_theta ?? 10000),
    rope_scaling: r.obj('rope_scaling'),
    tie_word_embeddings: r.bool('tie_word_embeddings', defaults.tie_word_embeddings ?? false),
    hidden_act: r.str('hidden_act', defaults.hidden_act ?? 'silu'),
  };
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    throw new ModelError('E_CONFIG', `${r.source}: num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${c.num_key_value_heads})`);
  }
  return c;
}
