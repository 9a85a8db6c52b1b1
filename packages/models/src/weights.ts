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

/**
 * Build the graph's weights, with the load-time layout work that makes a decode step cheap:
 * - linear weights transposed to [in, out]; q/k/v and gate/up fused into one matrix each;
 * - the input and pre-MLP norm weights folded into the rows of the matrix they feed
 *   (norm(x)·w·W = norm(x)·(diag(w)·W)), Gemma's (1 + w) included;
 * - the attention scale folded into the q columns (or, with q/k norm, into the q norm weights);
 * - the other norm weights stored as their effective values (1 + w for Gemma).
 * A tied head is not stored twice: the embedding rows are read from its [H, V] columns.
 */
export function buildWeights(s: DecoderSpec, read: TensorSource): DecoderWeights {
  const qDim = s.numHeads * s.headDim;
  const kvDim = s.numKvHeads * s.headDim;
  /** the norm weight as it multiplies: w, or 1 + w for Gemma */
  const effNorm = (n: string): tf.Tensor1D => {
    const w = read(n) as tf.Tensor1D;
    if (!s.normUnitOffset) return w;
    const e = tf.add(w, 1) as tf.Tensor1D;
    w.dispose();
    return e;
  };
  const vec = (n: string) => read(n) as tf.Tensor1D;
  const optVec = (on: boolean, n: string) => (on ? vec(n) : null);
  // [out, in] → [in, out]; several matrices side by side (fused) when given more than one;
  // rows scaled by a folded norm weight, columns by colScale
  const linearIn = (names: string[], rowScale?: tf.Tensor1D | null, colScale?: tf.Tensor1D | null): tf.Tensor2D => tf.tidy(() => {
    const parts = names.map((n) => {
      const w = read(n);
      const t = tf.transpose(w) as tf.Tensor2D;
      w.dispose();
      return t;
    });
    let m = parts.length === 1 ? parts[0] : (tf.concat(parts, 1) as tf.Tensor2D);
    if (rowScale) m = tf.mul(m, tf.reshape(rowScale, [-1, 1]));
    if (colScale) m = tf.mul(m, tf.reshape(colScale, [1, -1]));
    return m;
  });
  const catVec = (names: string[], scale?: tf.Tensor1D | null): tf.Tensor1D => tf.tidy(() => {
    const v = tf.concat(names.map(vec)) as tf.Tensor1D;
    return scale ? (tf.mul(v, scale) as tf.Tensor1D) : v;
  });
  // attention scale on the q columns (when there is no q norm to carry it)
  const qScale = s.qkNorm ? null : tf.concat([tf.fill([qDim], s.attnScale), tf.ones([2 * kvDim])]) as tf.Tensor1D;

  const layers: LayerWeights[] = [];
  for (let i = 0; i < s.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const a = `${p}self_attn.`;
    const inputNorm = effNorm(`${p}input_layernorm.weight`);
    const mlpNorm = effNorm(s.sandwichNorms ? `${p}pre_feedforward_layernorm.weight` : `${p}post_attention_layernorm.weight`);
    let qNorm: tf.Tensor1D | null = null;
    let kNorm: tf.Tensor1D | null = null;
    let qkNormRows: tf.Tensor2D | null = null;
    if (s.qkNorm) {
      const q0 = effNorm(`${a}q_norm.weight`);
      qNorm = tf.mul(q0, s.attnScale) as tf.Tensor1D;
      q0.dispose();
      kNorm = effNorm(`${a}k_norm.weight`);
      qkNormRows = tf.tidy(() => tf.concat([tf.tile(tf.reshape(qNorm!, [1, -1]), [s.numHeads, 1]), tf.tile(tf.reshape(kNorm!, [1, -1]), [s.numKvHeads, 1])]) as tf.Tensor2D);
    }
    layers.push({
      qkv: linearIn([`${a}q_proj.weight`, `${a}k_proj.weight`, `${a}v_proj.weight`], inputNorm, qScale),
      qkvBias: s.qkvBias ? catVec([`${a}q_proj.bias`, `${a}k_proj.bias`, `${a}v_proj.bias`], qScale) : null,
      qNorm, kNorm, qkNormRows,
      o: linearIn([`${a}o_proj.weight`]),
      oBias: optVec(s.oBias, `${a}o_proj.bias`),
      postAttnNorm: s.sandwichNorms ? effNorm(`${p}post_attention_layernorm.weight`) : null,
      gateUp: linearIn([`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`], mlpNorm),
      gateUpBias: s.mlpBias ? catVec([`${p}mlp.gate_proj.bias`, `${p}mlp.up_proj.bias`]) : null,
      down: linearIn([`${p}mlp.down_proj.weight`]),
      downBias: optVec(s.mlpBias, `${p}mlp.down_proj.bias`),
      postMlpNorm: s.sandwichNorms ? effNorm(`${p}post_feedforward_layernorm.weight`) : null,
    });
    inputNorm.dispose();
    mlpNorm.dispose();
  }
  qScale?.dispose();
  const finalNorm = effNorm('model.norm.weight');
  if (s.tieWordEmbeddings) {
    const e = read('model.embed_tokens.weight');
    const lmHead = tf.transpose(e) as tf.Tensor2D;
    e.dispose();
    return { embed: null, layers, finalNorm, lmHead };
  }
  const embed = read('model.embed_tokens.weight') as tf.Tensor2D;
  return { embed, layers, finalNorm, lmHead: linearIn(['lm_head.weight']) };
}
