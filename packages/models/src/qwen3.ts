/** Qwen3: per-head RMSNorm of q and k (q_norm, k_norm) and an explicit head_dim. */
import { readBase, type BaseConfig, type ConfigReader } from './config.ts';
import { dropBuffers, type Family } from './family.ts';
import { baseSpec, uniformLayers } from './llama.ts';

export interface Qwen3Config extends BaseConfig {
  attention_bias: boolean;
  use_sliding_window: boolean;
  sliding_window: number | null;
  max_window_layers: number;
}

export const qwen3: Family<Qwen3Config> = {
  modelTypes: ['qwen3'],
  parseConfig: (r: ConfigReader) => {
    const base = readBase(r, { head_dim: 128 });
    return {
      ...base,
      attention_bias: r.bool('attention_bias', false),
      use_sliding_window: r.bool('use_sliding_window', false),
      sliding_window: r.optNum('sliding_window'),
      max_window_layers: r.num('max_window_layers', base.num_hidden_layers),
    };
  },
  toSpec: (c) => ({
    ...baseSpec(c),
    qkvBias: c.attention_bias,
    oBias: c.attention_bias,
    mlpBias: false,
    qkNorm: true,
    layers: uniformLayers(c, (i) => (c.use_sliding_window && c.sliding_window && i >= c.max_window_layers ? c.sliding_window : null)),
  }),
  sanitize: dropBuffers,
};
