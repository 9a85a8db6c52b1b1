/** Llama 2/3/3.1/3.2 (and Mistral-layout checkpoints): rope_scaling, tied or untied lm_head. */
import { activation, ModelError } from '@moi/core';
import { readBase, type BaseConfig, type ConfigReader } from './config.ts';
import { dropBuffers, type Family } from './family.ts';
import type { DecoderSpec } from './spec.ts';

export interface LlamaConfig extends BaseConfig {
  attention_bias: boolean;
  mlp_bias: boolean;
  partial_rotary_factor: number;
  /** Mistral-style sliding window on every layer (null = off) */
  sliding_window: number | null;
}

export function parseLlamaConfig(r: ConfigReader): LlamaConfig {
  const base = readBase(r);
  return {
    ...base,
    attention_bias: r.bool('attention_bias', false),
    mlp_bias: r.bool('mlp_bias', false),
    partial_rotary_factor: readRotaryFactor(r, base.head_dim),
    sliding_window: r.optInt('sliding_window'),
  };
}

/** partial_rotary_factor in (0, 1], rotating an even number (≥ 2) of each head's dimensions. */
export function readRotaryFactor(r: ConfigReader, headDim: number): number {
  const f = r.pos('partial_rotary_factor', 1, 1);
  const dim = Math.round(headDim * f);
  if (dim < 2 || dim % 2 !== 0) {
    throw new ModelError(
      'E_CONFIG',
      `${r.source}: field 'partial_rotary_factor' (${f}) × head_dim (${headDim}) = ${dim} rotary dimensions; it must be an even number ≥ 2`,
    );
  }
  return f;
}

/** The spec fields every family shares, from the Llama-style base config. */
export function baseSpec(c: BaseConfig): Omit<DecoderSpec, 'layers' | 'qkvBias' | 'oBias' | 'mlpBias' | 'qkNorm'> {
  return {
    modelType: c.model_type,
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads: c.num_key_value_heads,
    headDim: c.head_dim,
    rmsNormEps: c.rms_norm_eps,
    normUnitOffset: false,
    act: activation(c.hidden_act),
    sandwichNorms: false,
    embedScale: null,
    attnScale: 1 / Math.sqrt(c.head_dim),
    attnSoftcap: null,
    finalSoftcap: null,
    tieWordEmbeddings: c.tie_word_embeddings,
    maxPositionEmbeddings: c.max_position_embeddings,
  };
}

export function uniformLayers(
  c: BaseConfig,
  window: (layer: number) => number | null,
  rotaryFactor = 1,
): DecoderSpec['layers'] {
  const rope = {
    dim: Math.round(c.head_dim * rotaryFactor),
    base: c.rope_theta,
    scaling: c.rope_scaling,
    maxPositionEmbeddings: c.max_position_embeddings,
  };
  return Array.from({ length: c.num_hidden_layers }, (_, i) => ({ window: window(i), rope }));
}

export const llama: Family<LlamaConfig> = {
  modelTypes: ['llama', 'mistral'],
  parseConfig: parseLlamaConfig,
  toSpec: (c) => ({
    ...baseSpec(c),
    qkvBias: c.attention_bias,
    oBias: c.attention_bias,
    mlpBias: c.mlp_bias,
    qkNorm: false,
    layers: uniformLayers(c, () => c.sliding_window, c.partial_rotary_factor),
  }),
  sanitize: dropBuffers,
};
