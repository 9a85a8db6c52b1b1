/**
 * The normalized description of a decoder-only transformer that every family maps its
 * config.json onto. The graph (decoder.ts) reads only this.
 */
import type { DecoderShape, LayerShape } from '@moi/core';

export type LayerSpec = LayerShape;

/** The shape (core's DecoderShape: sizes, norms, biases, softcaps, per-layer window and rope) and the family. */
export interface DecoderSpec extends DecoderShape {
  modelType: string;
}
