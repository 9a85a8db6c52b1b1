/**
 * From checkpoint tensors to the graph's weights: the expected names and shapes for a spec, the
 * checks (missing, unexpected, wrong shape: each a ModelError naming the tensors), and the one
 * builder that makes the decoder's layers, whatever the matrices' storage.
 *
 * The builder writes the graph once: the checkpoint names, q/k/v and gate/up fused, the attention
 * scale on q (its output features, or the q norm with q/k norm), Gemma's (1 + w) norms, the bias
 * concatenations. A WeightStorage turns matrices into Linear objects and decides what it folds:
 * f32 (f32-weights.ts) folds the input and pre-MLP norm weights into the rows of the matrix they
 * feed; packed 16/8-bit (packed-weights.ts) folds nothing and the decoder applies those norms.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError, type EmbeddingRows, type Linear, type TensorInfo, type VocabMatrix, type Weight } from '@moi/core';
import { checkBufferFits } from './limits.ts';
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
  if (unexpected.length)
    throw new ModelError(
      'E_UNEXPECTED_TENSORS',
      `${where}: unexpected tensors (not in the ${'graph'} for this config): ${listNames(unexpected)}`,
    );
}

export function checkShape(name: string, want: number[], got: number[], where: string): void {
  if (want.length !== got.length || want.some((d, i) => d !== got[i])) {
    throw new ModelError(
      'E_SHAPE',
      `${where}: tensor ${name} has shape [${got.join(', ')}] but the config implies [${want.join(', ')}]`,
    );
  }
}

// ---- the decoder's weights ----

/**
 * One layer's weights: q/k/v and gate/up fused, each matrix a Linear of the storage's kind (its
 * bias, and the attention scale on q's features where no q/k norm carries it, inside it). Norm
 * weights are effective values (Gemma's 1 + w already added).
 */
export interface LayerWeights {
  /** the input norm's weight, applied at run time; null where the storage folded it into qkv's rows */
  inputNorm: tf.Tensor1D | null;
  /** [H] → [(nH + 2·nKV)·D]: q heads, k heads, v heads */
  qkv: Linear;
  /** q/k norm (Qwen3, Gemma 3): [D] each, q's scaled by the attention scale */
  qNorm: tf.Tensor1D | null;
  kNorm: tf.Tensor1D | null;
  /** the same as [(nH + nKV), D] rows, for the fused q/k heads */
  qkNormRows: tf.Tensor2D | null;
  /** [nH·D] → [H] */
  o: Linear;
  /** Gemma 2/3: post_attention_layernorm */
  postAttnNorm: tf.Tensor1D | null;
  /** the pre-MLP norm's weight, applied at run time; null where the storage folded it into gateUp's rows */
  mlpNorm: tf.Tensor1D | null;
  /** [H] → [2·I], gate features first */
  gateUp: Linear;
  /** [I] → [H] */
  down: Linear;
  /** Gemma 2/3: post_feedforward_layernorm */
  postMlpNorm: tf.Tensor1D | null;
}

export interface DecoderWeights {
  /** the untied embedding table's rows; null when tied (then the rows are lmHead's) */
  embed: EmbeddingRows | null;
  layers: LayerWeights[];
  /** effective final norm weight */
  finalNorm: tf.Tensor1D;
  /** the logits head (lm_head, or the tied embedding, stored once) */
  lmHead: VocabMatrix;
}

/** Each tensor and weight object the weights hold, once (a tied head is the embedding). */
export function weightParts(w: DecoderWeights): (tf.Tensor | Weight)[] {
  const parts = new Set<tf.Tensor | Weight>();
  for (const x of [w.embed, w.finalNorm, w.lmHead]) if (x) parts.add(x);
  for (const l of w.layers) for (const x of Object.values(l) as (tf.Tensor | Weight | null)[]) if (x) parts.add(x);
  return [...parts];
}

/** Bytes the weights hold. */
export function weightBytes(w: DecoderWeights): number {
  return weightParts(w).reduce((n, x) => n + (x instanceof tf.Tensor ? x.size * 4 : x.bytes), 0);
}

export function disposeWeights(w: DecoderWeights): void {
  for (const x of weightParts(w)) x.dispose();
}

// ---- reading the checkpoint ----

/** Reads a checkpoint's tensors by graph name: their header entries, and byte ranges of their data. */
export interface MatrixSource {
  info(name: string): TensorInfo;
  readRange(name: string, start: number, length: number): Uint8Array;
  /** a whole tensor as float32 (row-major, HF shape) */
  readFloat32(name: string): Float32Array;
  /** called once a tensor has been read whole (progress) */
  done?(name: string): void;
}

/** The parts of one linear layer the builder hands a storage. */
export interface LinearParts {
  /** what errors call it, e.g. 'layer 3 gateUp' */
  label: string;
  /** the checkpoint matrices, [out_i, in] each (one `in`), fused along their outputs in this order */
  names: string[];
  /** a norm weight [in] multiplying x first (only given to a storage that folds norms) */
  rowScale: Float32Array | null;
  /** multiplies output feature j (before the bias): the attention scale on q's features */
  colScale: Float32Array | null;
  /** [Σ out_i], added last */
  bias: tf.Tensor1D | null;
}

/**
 * How the matrices are held: makes each Linear (and the vocabulary matrix's head and embedding
 * rows) from the checkpoint, reading through the MatrixSource it was made with. A storage that
 * `foldsNorms` takes the input and pre-MLP norm weights into the rows of qkv and gateUp; one that
 * does not leaves them to the decoder (LayerWeights.inputNorm / mlpNorm). Another storage (a GPU's
 * f16 buffers, a threaded pool's shared memory) is one more class whose linear() returns its own
 * Linear (see @moi/core's linear.ts), chosen in load.ts from the dtype plan and the backend.
 */
export interface WeightStorage {
  readonly foldsNorms: boolean;
  linear(parts: LinearParts): Linear;
  /** the logits head from `name` ([V, H]); `tied`: it is also the embedding table */
  head(name: string, label: string, tied: boolean): VocabMatrix;
  /** the untied embedding table `name` [V, H] */
  embedding(name: string, label: string): EmbeddingRows;
}

// ---- the one builder ----

/**
 * The graph's weights from the checkpoint, matrices held by `storage`. `where` names the model in
 * errors. A failure part way disposes what was already made.
 */
export function buildWeights(s: DecoderSpec, src: MatrixSource, storage: WeightStorage, where: string): DecoderWeights {
  const made: (tf.Tensor | Weight)[] = [];
  const keep = <T extends tf.Tensor | Weight>(x: T): T => {
    made.push(x);
    return x;
  };
  const qDim = s.numHeads * s.headDim;
  const kvDim = s.numKvHeads * s.headDim;
  const fold = storage.foldsNorms;
  const readVec = (n: string) => {
    const v = src.readFloat32(n);
    src.done?.(n);
    return v;
  };
  /** the norm weight as it multiplies: w, or 1 + w for Gemma; optionally times a scale */
  const effNorm = (n: string, scale = 1): Float32Array => {
    const w = readVec(n);
    const out = new Float32Array(w.length);
    for (let i = 0; i < w.length; i++) out[i] = (s.normUnitOffset ? 1 + w[i] : w[i]) * scale;
    return out;
  };
  const vec = (label: string, v: Float32Array): tf.Tensor1D => {
    checkBufferFits(where, label, [v.length]);
    return keep(tf.tensor1d(v));
  };
  /** vectors concatenated, optionally times a scale per element */
  const catVec = (label: string, names: string[], scale: Float32Array | null = null): tf.Tensor1D => {
    const parts = names.map(readVec);
    const v = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) {
      v.set(p, off);
      off += p.length;
    }
    if (scale) for (let i = 0; i < v.length; i++) v[i] *= scale[i];
    return vec(label, v);
  };
  const linear = (parts: LinearParts): Linear => keep(storage.linear(parts));
  // the attention scale on q's output features (when there is no q norm to carry it)
  let qScale: Float32Array | null = null;
  if (!s.qkNorm) {
    qScale = new Float32Array(qDim + 2 * kvDim).fill(1);
    qScale.fill(s.attnScale, 0, qDim);
  }

  try {
    const layers: LayerWeights[] = [];
    for (let i = 0; i < s.numLayers; i++) {
      const p = `model.layers.${i}.`;
      const a = `${p}self_attn.`;
      const at = `layer ${i} `;
      const inputNorm = effNorm(`${p}input_layernorm.weight`);
      const mlpNorm = effNorm(
        s.sandwichNorms ? `${p}pre_feedforward_layernorm.weight` : `${p}post_attention_layernorm.weight`,
      );
      let qNorm: tf.Tensor1D | null = null;
      let kNorm: tf.Tensor1D | null = null;
      let qkNormRows: tf.Tensor2D | null = null;
      if (s.qkNorm) {
        const qn = effNorm(`${a}q_norm.weight`, s.attnScale);
        const kn = effNorm(`${a}k_norm.weight`);
        qNorm = vec(`${at}qNorm`, qn);
        kNorm = vec(`${at}kNorm`, kn);
        const rows = new Float32Array((s.numHeads + s.numKvHeads) * s.headDim);
        for (let h = 0; h < s.numHeads + s.numKvHeads; h++) rows.set(h < s.numHeads ? qn : kn, h * s.headDim);
        qkNormRows = keep(tf.tensor2d(rows, [s.numHeads + s.numKvHeads, s.headDim]));
      }
      const mlpBias = (names: string[], label: string) =>
        s.mlpBias
          ? catVec(
              label,
              names.map((n) => `${p}mlp.${n}.bias`),
            )
          : null;
      layers.push({
        inputNorm: fold ? null : vec(`${at}inputNorm`, inputNorm),
        qkv: linear({
          label: `${at}qkv`,
          names: ['q', 'k', 'v'].map((x) => `${a}${x}_proj.weight`),
          rowScale: fold ? inputNorm : null,
          colScale: qScale,
          bias: s.qkvBias
            ? catVec(
                `${at}qkvBias`,
                ['q', 'k', 'v'].map((x) => `${a}${x}_proj.bias`),
                qScale,
              )
            : null,
        }),
        qNorm,
        kNorm,
        qkNormRows,
        o: linear({
          label: `${at}o`,
          names: [`${a}o_proj.weight`],
          rowScale: null,
          colScale: null,
          bias: s.oBias ? vec(`${at}oBias`, readVec(`${a}o_proj.bias`)) : null,
        }),
        postAttnNorm: s.sandwichNorms ? vec(`${at}postAttnNorm`, effNorm(`${p}post_attention_layernorm.weight`)) : null,
        mlpNorm: fold ? null : vec(`${at}mlpNorm`, mlpNorm),
        gateUp: linear({
          label: `${at}gateUp`,
          names: [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`],
          rowScale: fold ? mlpNorm : null,
          colScale: null,
          bias: mlpBias(['gate_proj', 'up_proj'], `${at}gateUpBias`),
        }),
        down: linear({
          label: `${at}down`,
          names: [`${p}mlp.down_proj.weight`],
          rowScale: null,
          colScale: null,
          bias: mlpBias(['down_proj'], `${at}downBias`),
        }),
        postMlpNorm: s.sandwichNorms ? vec(`${at}postMlpNorm`, effNorm(`${p}post_feedforward_layernorm.weight`)) : null,
      });
    }
    const finalNorm = vec('final norm', effNorm('model.norm.weight'));
    if (s.tieWordEmbeddings) {
      const lmHead = keep(
        storage.head('model.embed_tokens.weight', 'lm_head (the tied model.embed_tokens.weight)', true),
      );
      return { embed: null, layers, finalNorm, lmHead };
    }
    const embed = keep(storage.embedding('model.embed_tokens.weight', 'embed (model.embed_tokens.weight)'));
    return {
      embed,
      layers,
      finalNorm,
      lmHead: keep(storage.head('lm_head.weight', 'lm_head (lm_head.weight)', false)),
    };
  } catch (err) {
    for (const x of made) x.dispose();
    throw err;
  }
}
