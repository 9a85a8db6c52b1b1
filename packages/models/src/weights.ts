/**
 * From checkpoint tensors to the graph's weights: the expected names and shapes for a spec,
 * the checks (missing, unexpected, wrong shape: each a ModelError naming the tensors), and the
 * load-time layout work: linear weights transposed to [in, out], q/k/v and gate/up fused.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '@moi/core';
import type { DecoderWeights, LayerWeights } from './decoder.ts';
import type { DecoderSpec } from './spec.ts';

/** Graph tensor name → expected HF shape ([out, in] for linear weights). */
export function expectedTensors(s: DecoderSpec): Map<string, number[]> {
  const H = s.hiddenSize;
  const q = s.numHeads * s.headDim;
  const kv = s.numKvHeads * s.headDim;
  const I = s.intermediateSize;
  const m = new Map<string, number[]>();
  m.set('model.embed_tokens.weight', [s.vocabSize, H]);
  for (let i = 0; i < s.numLayers; i++) {
    const p = `model.layers.${i}.`;
    m.set(`${p}input_layernorm.weight`, [H]);
    m.set(`${p}self_attn.q_proj.weight`, [q, H]);
    m.set(`${p}self_attn.k_proj.weight`, [kv, H]);
    m.set(`${p}self_attn.v_proj.weight`, [kv, H]);
    m.set(`${p}self_attn.o_proj.weight`, [H, q]);
    if (s.qkvBias) {
      m.set(`${p}self_attn.q_proj.bias`, [q]);
      m.set(`${p}self_attn.k_proj.bias`, [kv]);
      m.set(`${p}self_attn.v_proj.bias`, [kv]);
    }
    if (s.oBias) m.set(`${p}self_attn.o_proj.bias`, [H]);
    if (s.qkNorm) {
      m.set(`${p}self_attn.q_norm.weight`, [s.headDim]);
      m.set(`${p}self_attn.k_norm.weight`, [s.headDim]);
    }
    m.set(`${p}post_attention_layernorm.weight`, [H]);
    if (s.sandwichNorms) {
      m.set(`${p}pre_feedforward_layernorm.weight`, [H]);
      m.set(`${p}post_feedforward_layernorm.weight`, [H]);
    }
    m.set(`${p}mlp.gate_proj.weight`, [I, H]);
    m.set(`${p}mlp.up_proj.weight`, [I, H]);
    m.set(`${p}mlp.down_proj.weight`, [H, I]);
    if (s.mlpBias) {
      m.set(`${p}mlp.gate_proj.bias`, [I]);
      m.set(`${p}mlp.up_proj.bias`, [I]);
      m.set(`${p}mlp.down_proj.bias`, [H]);
    }
  }
  m.set('model.norm.weight', [H]);
  if (!s.tieWordEmbeddings) m.set('lm_head.weight', [s.vocabSize, H]);
  return m;
}

function listNames(names: string[]): string {
  const shown = names.slice(0, 12).join(', ');
  return names.length > 12 ? `${shown}, … (${names.length} in all)` : shown;
}

/** Fail, naming them, on missing or unexpected tensors; returns nothing when all fit. */
export function checkNames(expected: Map<string, number[]>, present: Set<string>, where: string): void {
  const missing = [...expected.keys()].filter((n) => !present.has(n));
  const unexpected = [...present].filter((n) => !expected.has(n));
  if (missing.length) throw new ModelError('E_MISSING_TENSORS', `${where}: missing tensors: ${listNames(missing)}`);
  if (unexpected.length) throw new ModelError('E_UNEXPECTED_TENSORS', `${where}: unexpected tensors (not in the ${'graph'} for this config): ${listNames(unexpected)}`);
}

export function checkShape(name: string, want: number[], got: number[], where: string): void {
  if (want.length !== got.length || want.some((d, i) => d !== got[i])) {
    throw new ModelError('E_SHAPE', `${where}: tensor ${name} has shape [${got.join(', ')}] but the config implies [${want.join(', ')}]`);
  }
}

/** Reads one graph tensor as float32 [shape]. */
export type TensorSource = (name: string) => tf.Tensor;

/** Build the graph's weights: [in, out] layouts and fused q/k/v, gate/up. */
export function buildWeights(s: DecoderSpec, read: TensorSource): DecoderWeights {
  const vec = (n: string) => read(n) as tf.Tensor1D;
  const optVec = (on: boolean, n: string) => (on ? vec(n) : null);
  // [out, in] → [in, out]; several matrices side by side (fused) when given more than one
  const linearIn = (...names: string[]): tf.Tensor2D => {
    const parts = names.map((n) => {
      const w = read(n);
      const t = tf.transpose(w) as tf.Tensor2D;
      w.dispose();
      return t;
    });
    if (parts.length === 1) return parts[0];
    const fused = tf.concat(parts, 1) as tf.Tensor2D;
    parts.forEach((p) => p.dispose());
    return fused;
  };
  const catVec = (names: string[]): tf.Tensor1D => {
    const parts = names.map(vec);
    const v = tf.concat(parts) as tf.Tensor1D;
    parts.forEach((p) => p.dispose());
    return v;
  };

  const embed = read('model.embed_tokens.weight') as tf.Tensor2D;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < s.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const a = `${p}self_attn.`;
    layers.push({
      inputNorm: vec(`${p}input_layernorm.weight`),
      qkv: linearIn(`${a}q_proj.weight`, `${a}k_proj.weight`, `${a}v_proj.weight`),
      qkvBias: s.qkvBias ? catVec([`${a}q_proj.bias`, `${a}k_proj.bias`, `${a}v_proj.bias`]) : null,
      o: linearIn(`${a}o_proj.weight`),
      oBias: optVec(s.oBias, `${a}o_proj.bias`),
      qNorm: optVec(s.qkNorm, `${a}q_norm.weight`),
      kNorm: optVec(s.qkNorm, `${a}k_norm.weight`),
      mlpNorm: vec(s.sandwichNorms ? `${p}pre_feedforward_layernorm.weight` : `${p}post_attention_layernorm.weight`),
      postAttnNorm: optVec(s.sandwichNorms, `${p}post_attention_layernorm.weight`),
      postMlpNorm: optVec(s.sandwichNorms, `${p}post_feedforward_layernorm.weight`),
      gateUp: linearIn(`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`),
      gateUpBias: s.mlpBias ? catVec([`${p}mlp.gate_proj.bias`, `${p}mlp.up_proj.bias`]) : null,
      down: linearIn(`${p}mlp.down_proj.weight`),
      downBias: optVec(s.mlpBias, `${p}mlp.down_proj.bias`),
    });
  }
  const finalNorm = vec('model.norm.weight');
  // A tied head is stored a second time in the [H, V] layout the matmul needs.
  const lmHead = s.tieWordEmbeddings ? (tf.transpose(embed) as tf.Tensor2D) : linearIn('lm_head.weight');
  return { embed, layers, finalNorm, lmHead };
}
