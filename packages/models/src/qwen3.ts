/** Qwen3: per-head RMSNorm of q and k (q_norm, k_norm) and an explicit head_dim. */
import { readBase, type BaseConfig, type ConfigReader } from './config.ts';
import { dropBuffers, type Family } from './family.ts';
import { baseSpec, uniformLayers } from './llama.ts';
import { qwenWindowAt, readQwenWindow, type QwenWindow } from './qwen2.ts';

export type Qwen3Config = BaseConfig & QwenWindow & { attention_bias: boolean };

export const qwen3: Family<Qwen3Config> = {
  modelTypes: ['qwen3'],
  parseConfig: (r: ConfigReader) => {
    const base = readBase(r, { head_dim: 128 });
    return { ...base, ...readQwenWindow(r, base), attention_bias: r.bool('attention_bias', false) };
  },
  toSpec: (c) => ({
    ...baseSpec(c),
    qkvBias: c.attention_bias,
    oBias: c.attention_bias,
    mlpBias: false,
    qkNorm: true,
    layers: uniformLayers(c, qwenWindowAt(c)),
  }),
  sanitize: dropBuffers,
};
