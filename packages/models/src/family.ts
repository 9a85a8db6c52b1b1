/** What each model family file provides: config parsing, the graph spec, checkpoint names. */
import type { ConfigReader } from './config.ts';
import type { DecoderSpec } from './spec.ts';

export interface Family<C = unknown> {
  /** config.json `model_type` values this family serves */
  modelTypes: string[];
  /** config.json → the family's typed config (HF names, HF defaults) */
  parseConfig(r: ConfigReader): C;
  /** typed config → the graph's normalized spec */
  toSpec(c: C): DecoderSpec;
  /**
   * Map one checkpoint tensor name onto the graph's name (HF Llama-style names such as
   * `model.layers.0.self_attn.q_proj.weight`), or null to drop it (e.g. vision towers).
   */
  sanitize(name: string): string | null;
}

/** Buffers some checkpoints carry that are not weights. */
export function dropBuffers(name: string): string | null {
  return /\.rotary_emb\.inv_freq$/.test(name) ? null : name;
}
