/**
 * Gemma 2: sandwich norms (pre/post attention and feed-forward), attention and final logit
 * soft-capping, query_pre_attn_scalar, a sliding window on every other layer (even layers).
 */
import type { ConfigReader } from './config.ts';
import { dropBuffers, type Family } from './family.ts';
import { gemmaSpec, readGemmaBase, type GemmaConfig } from './gemma.ts';
import { uniformLayers } from './llama.ts';

export interface Gemma2Config extends GemmaConfig {
  query_pre_attn_scalar: number;
  sliding_window: number;
  attn_logit_softcapping: number | null;
  final_logit_softcapping: number | null;
}

export const gemma2: Family<Gemma2Config> = {
  modelTypes: ['gemma2'],
  parseConfig: (r: ConfigReader) => ({
    ...readGemmaBase(r),
    query_pre_attn_scalar: r.pos('query_pre_attn_scalar', 256),
    sliding_window: r.int('sliding_window', 4096),
    // explicit null switches capping off; absent means HF's defaults
    attn_logit_softcapping: r.raw.attn_logit_softcapping === undefined ? 50 : r.optPos('attn_logit_softcapping'),
    final_logit_softcapping: r.raw.final_logit_softcapping === undefined ? 30 : r.optPos('final_logit_softcapping'),
  }),
  toSpec: (c) => ({
    ...gemmaSpec(c),
    qkNorm: false,
    sandwichNorms: true,
    attnScale: 1 / Math.sqrt(c.query_pre_attn_scalar),
    attnSoftcap: c.attn_logit_softcapping,
    finalSoftcap: c.final_logit_softcapping,
    layers: uniformLayers(c, (i) => (i % 2 === 0 ? c.sliding_window : null)),
  }),
  sanitize: dropBuffers,
};
