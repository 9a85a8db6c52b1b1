/** Gemma (1): GELU-tanh MLP, RMSNorm with (1 + w), embeddings × √hidden, tied lm_head. */
import { activation } from '@moi/core';
import { readBase, type BaseConfig, type ConfigReader } from './config.ts';
import { dropBuffers, type Family } from './family.ts';
import { baseSpec, uniformLayers } from './llama.ts';
import type { DecoderSpec } from './spec.ts';

export interface GemmaConfig extends BaseConfig {
  hidden_activation: string;
  attention_bias: boolean;
}

/** HF Gemma reads hidden_activation, falling back to hidden_act, then gelu_pytorch_tanh. */
export function gemmaActivation(r: ConfigReader): string {
  return r.str('hidden_activation', r.str('hidden_act', 'gelu_pytorch_tanh'));
}

/** What every Gemma generation shares on top of the Llama base. */
export function gemmaSpec(c: GemmaConfig): Omit<DecoderSpec, 'layers' | 'qkNorm'> {
  return {
    ...baseSpec(c),
    act: activation(c.hidden_activation),
    qkvBias: c.attention_bias,
    oBias: c.attention_bias,
    mlpBias: false,
    normUnitOffset: true,
    // HF casts √hidden to the activation dtype (float32 here)
    embedScale: Math.fround(Math.sqrt(c.hidden_size)),
  };
}

/** The config fields Gemma 1 and 2 share, with HF's defaults. */
export function readGemmaBase(r: ConfigReader): GemmaConfig {
  return {
    ...readBase(r, { head_dim: 256, tie_word_embeddings: true, max_position_embeddings: 8192 }),
    hidden_activation: gemmaActivation(r),
    attention_bias: r.bool('attention_bias', false),
  };
}

export const gemma: Family<GemmaConfig> = {
  modelTypes: ['gemma'],
  parseConfig: readGemmaBase,
  toSpec: (c) => ({
    ...gemmaSpec(c),
    qkNorm: false,
    layers: uniformLayers(c, () => null),
  }),
  sanitize: dropBuffers,
};
