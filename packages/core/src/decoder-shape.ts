/**
 * The shape of a decoder-only transformer, as every backend's graph reads it: @moi/models'
 * DecoderSpec is this plus the family's model type, and the webgpu room's decode plan runs on it
 * as is (core does not import models, so the fields are declared here, once).
 */
import type { Activation, RopeSpec } from './nn.ts';

export interface LayerShape {
  /** sliding-window size for this layer, or null for full attention */
  window: number | null;
  rope: RopeSpec;
}

export interface DecoderShape {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  /** Gemma stores norm weights as w − 1 and applies (1 + w) */
  normUnitOffset: boolean;
  act: Activation;
  /** biases on q/k/v projections (Qwen2) */
  qkvBias: boolean;
  /** bias on o_proj (Llama's attention_bias) */
  oBias: boolean;
  /** biases on the MLP projections (Llama's mlp_bias) */
  mlpBias: boolean;
  /** per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3) */
  qkNorm: boolean;
  /** Gemma 2/3 sandwich norms: post_attention, pre_feedforward, post_feedforward */
  sandwichNorms: boolean;
  /** multiply input embeddings by this (Gemma: √hidden), or null */
  embedScale: number | null;
  /** multiplies q·kᵀ */
  attnScale: number;
  attnSoftcap: number | null;
  finalSoftcap: number | null;
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  layers: LayerShape[];
}
