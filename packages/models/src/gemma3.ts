/**
 * Gemma 3 (text): layer_types or sliding_window_pattern, q/k norm, rope_local_base_freq with
 * default rope on sliding layers, rope_scaling on global layers only. Multimodal `gemma3`
 * checkpoints load their text tower: config.text_config, `language_model` prefixes remapped,
 * vision weights dropped.
 */
import { ModelError } from '@moi/core';
import { ConfigReader, readBase, type BaseConfig } from './config.ts';
import { dropBuffers, type Family } from './family.ts';
import { gemmaActivation, gemmaSpec } from './gemma.ts';
import type { LayerSpec } from './spec.ts';

export interface Gemma3TextConfig extends BaseConfig {
  hidden_activation: string;
  attention_bias: boolean;
  query_pre_attn_scalar: number;
  sliding_window: number;
  sliding_window_pattern: number;
  layer_types: string[];
  rope_local_base_freq: number;
  attn_logit_softcapping: number | null;
  final_logit_softcapping: number | null;
}

/** HF Gemma3TextConfig defaults (gemma-3-4b sizes), used where a text_config omits fields. */
const TEXT_DEFAULTS = {
  vocab_size: 262208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  max_position_embeddings: 131072,
  rope_theta: 1_000_000,
  tie_word_embeddings: true,
};

function parseText(r: ConfigReader): Gemma3TextConfig {
  const base = readBase(r, TEXT_DEFAULTS);
  const pattern = r.int('sliding_window_pattern', 6, 1024);
  const layerTypes =
    r.strList('layer_types') ??
    Array.from({ length: base.num_hidden_layers }, (_, i) =>
      (i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention',
    );
  if (layerTypes.length !== base.num_hidden_layers) {
    throw new ModelError(
      'E_CONFIG',
      `${r.source}: layer_types has ${layerTypes.length} entries for ${base.num_hidden_layers} layers`,
    );
  }
  for (const t of layerTypes) {
    if (t !== 'sliding_attention' && t !== 'full_attention')
      throw new ModelError('E_CONFIG', `${r.source}: unknown layer_types entry '${t}'`);
  }
  return {
    ...base,
    model_type: 'gemma3_text',
    hidden_activation: gemmaActivation(r),
    attention_bias: r.bool('attention_bias', false),
    query_pre_attn_scalar: r.pos('query_pre_attn_scalar', 256),
    sliding_window: r.int('sliding_window', 4096),
    sliding_window_pattern: pattern,
    layer_types: layerTypes,
    rope_local_base_freq: r.pos('rope_local_base_freq', 10000),
    attn_logit_softcapping: r.optPos('attn_logit_softcapping'),
    final_logit_softcapping: r.optPos('final_logit_softcapping'),
  };
}

export const gemma3: Family<Gemma3TextConfig> = {
  modelTypes: ['gemma3_text', 'gemma3'],
  parseConfig: (r: ConfigReader) => {
    if (r.raw.model_type !== 'gemma3') return parseText(r);
    const text = r.obj<Record<string, unknown>>('text_config') ?? {};
    return parseText(new ConfigReader({ model_type: 'gemma3_text', ...text }, `${r.source} (text_config)`));
  },
  toSpec: (c) => {
    const global = {
      dim: c.head_dim,
      base: c.rope_theta,
      scaling: c.rope_scaling,
      maxPositionEmbeddings: c.max_position_embeddings,
    };
    const local = {
      dim: c.head_dim,
      base: c.rope_local_base_freq,
      scaling: null,
      maxPositionEmbeddings: c.max_position_embeddings,
    };
    const layers: LayerSpec[] = c.layer_types.map((t) =>
      t === 'sliding_attention' ? { window: c.sliding_window, rope: local } : { window: null, rope: global },
    );
    return {
      ...gemmaSpec(c),
      qkNorm: true,
      sandwichNorms: true,
      attnScale: 1 / Math.sqrt(c.query_pre_attn_scalar),
      attnSoftcap: c.attn_logit_softcapping,
      finalSoftcap: c.final_logit_softcapping,
      layers,
    };
  },
  sanitize: (name) => {
    if (/(^|\.)(vision_tower|multi_modal_projector)\./.test(name)) return null;
    const n = name
      .replace(/^language_model\.model\./, 'model.')
      .replace(/^model\.language_model\./, 'model.')
      .replace(/^language_model\.lm_head\./, 'lm_head.');
    return dropBuffers(n);
  },
};
