/**
 * From checkpoint tensors to the graph's weights: the expected names and shapes for a spec,
 * the checks (missing, unexpected, wrong shape: each a ModelError naming the tensors), and the
 * load-time layout work: linear weights transposed to [in, out], q/k/v and gate/up fused.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '@moi/core';
import { writableView } from './cache.ts';
import { packAndRelease } from './pack.ts';
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

/** Reads one graph tensor as float32 host data (row-major, HF shape). */
export type TensorSource = (name: string) => { data: Float32Array; shape: number[] };

/**
 * A float32 tensor of `shape` filled by `fill` writing straight into its memory: on wasm a heap
 * block allocated uninitialised, elsewhere one host array handed to the backend.
 */
function makeTensor(shape: number[], fill: (dst: Float32Array) => void): tf.Tensor {
  if (tf.getBackend() === 'wasm') {
    const info = (tf.backend() as any).makeOutput(shape, 'float32');
    const t = tf.engine().makeTensorFromTensorInfo(info);
    const view = writableView(t);
    if (view) {
      fill(view);
      return t;
    }
    t.dispose();
  }
  const host = new Float32Array(shape.reduce((x, y) => x * y, 1));
  fill(host);
  return tf.tensor(host, shape, 'float32');
}

/**
 * dst[c·ld + off + r] = src[r·C + c] · rowScale[c] · colScale[off + r]: the transpose of an
 * [R, C] block into columns off.. of a [C, ld] matrix, eight source rows per sweep (the reads
 * then stream and the writes land eight at a time).
 */
function transposeInto(src: Float32Array, R: number, C: number, dst: Float32Array, ld: number, off: number,
  rowScale: Float32Array | null, colScale: Float32Array | null): void {
  const cs = (r: number) => (colScale ? colScale[off + r] : 1);
  const TILE = 64; // tiles keep the strided writes of a tall matrix within a few pages
  const R8 = R - (R % 8);
  for (let r0 = 0; r0 < R8; r0 += TILE) {
    const r1 = Math.min(R8, r0 + TILE);
    for (let c0 = 0; c0 < C; c0 += TILE) {
      const c1 = Math.min(C, c0 + TILE);
      for (let r = r0; r < r1; r += 8) {
        const k0 = cs(r), k1 = cs(r + 1), k2 = cs(r + 2), k3 = cs(r + 3), k4 = cs(r + 4), k5 = cs(r + 5), k6 = cs(r + 6), k7 = cs(r + 7);
        for (let c = c0; c < c1; c++) {
          const sc = rowScale ? rowScale[c] : 1;
          const d = c * ld + off + r;
          const i = r * C + c;
          dst[d] = src[i] * sc * k0;
          dst[d + 1] = src[i + C] * sc * k1;
          dst[d + 2] = src[i + 2 * C] * sc * k2;
          dst[d + 3] = src[i + 3 * C] * sc * k3;
          dst[d + 4] = src[i + 4 * C] * sc * k4;
          dst[d + 5] = src[i + 5 * C] * sc * k5;
          dst[d + 6] = src[i + 6 * C] * sc * k6;
          dst[d + 7] = src[i + 7 * C] * sc * k7;
        }
      }
    }
  }
  for (let r = R8; r < R; r++) {
    const k = cs(r);
    for (let c = 0; c < C; c++) dst[c * ld + off + r] = src[r * C + c] * (rowScale ? rowScale[c] : 1) * k;
  }
}

/**
 * Build the graph's weights, with the load-time layout work that makes a decode step cheap, done
 * in one host pass per matrix straight into the final tensor (no intermediate device copies):
 * - linear weights transposed to [in, out]; q/k/v and gate/up fused into one matrix each;
 * - the input and pre-MLP norm weights folded into the rows of the matrix they feed
 *   (norm(x)·w·W = norm(x)·(diag(w)·W)), Gemma's (1 + w) included;
 * - the attention scale folded into the q columns (or, with q/k norm, into the q norm weights);
 * - the other norm weights stored as their effective values (1 + w for Gemma).
 * A tied head is not stored twice: the embedding rows are read from its [H, V] columns.
 */
export function buildWeights(s: DecoderSpec, read: TensorSource, opts: { release?: boolean } = {}): DecoderWeights {
  const qDim = s.numHeads * s.headDim;
  const kvDim = s.numKvHeads * s.headDim;
  /** the norm weight as it multiplies: w, or 1 + w for Gemma; optionally times a scale */
  const effNorm = (n: string, scale = 1): Float32Array => {
    const w = read(n).data;
    const out = new Float32Array(w.length);
    for (let i = 0; i < w.length; i++) out[i] = (s.normUnitOffset ? 1 + w[i] : w[i]) * scale;
    return out;
  };
  const vecT = (v: Float32Array) => tf.tensor1d(v);
  const vec = (n: string) => vecT(read(n).data);
  const optVec = (on: boolean, n: string) => (on ? vec(n) : null);
  // [out, in] matrices → one [in, Σout] tensor; rows scaled by a folded norm, columns by colScale
  // (matmul-only weights are then packed and their originals released, see pack.ts)
  const linearIn = (names: string[], rowScale?: Float32Array | null, colScale?: Float32Array | null, matmulOnly = true): tf.Tensor2D => {
    const parts = names.map(read);
    const inDim = parts[0].shape[1];
    const total = parts.reduce((n, p) => n + p.shape[0], 0);
    const t = makeTensor([inDim, total], (dst) => {
      let off = 0;
      for (const p of parts) {
        transposeInto(p.data, p.shape[0], inDim, dst, total, off, rowScale ?? null, colScale ?? null);
        off += p.shape[0];
      }
    }) as tf.Tensor2D;
    if (opts.release && matmulOnly) packAndRelease(t, names.join('+'));
    return t;
  };
  const catVec = (names: string[], scale?: Float32Array | null): tf.Tensor1D => {
    const parts = names.map((n) => read(n).data);
    const v = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) { v.set(p, off); off += p.length; }
    if (scale) for (let i = 0; i < v.length; i++) v[i] *= scale[i];
    return vecT(v);
  };
  // attention scale on the q columns (when there is no q norm to carry it)
  let qScale: Float32Array | null = null;
  if (!s.qkNorm) {
    qScale = new Float32Array(qDim + 2 * kvDim).fill(1);
    qScale.fill(s.attnScale, 0, qDim);
  }

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
      const qn = effNorm(`${a}q_norm.weight`, s.attnScale);
      const kn = effNorm(`${a}k_norm.weight`);
      qNorm = vecT(qn);
      kNorm = vecT(kn);
      const rows = new Float32Array((s.numHeads + s.numKvHeads) * s.headDim);
      for (let h = 0; h < s.numHeads + s.numKvHeads; h++) rows.set(h < s.numHeads ? qn : kn, h * s.headDim);
      qkNormRows = tf.tensor2d(rows, [s.numHeads + s.numKvHeads, s.headDim]);
    }
    layers.push({
      qkv: linearIn([`${a}q_proj.weight`, `${a}k_proj.weight`, `${a}v_proj.weight`], inputNorm, qScale),
      qkvBias: s.qkvBias ? catVec([`${a}q_proj.bias`, `${a}k_proj.bias`, `${a}v_proj.bias`], qScale) : null,
      qNorm, kNorm, qkNormRows,
      o: linearIn([`${a}o_proj.weight`]),
      oBias: optVec(s.oBias, `${a}o_proj.bias`),
      postAttnNorm: s.sandwichNorms ? vecT(effNorm(`${p}post_attention_layernorm.weight`)) : null,
      gateUp: linearIn([`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`], mlpNorm),
      gateUpBias: s.mlpBias ? catVec([`${p}mlp.gate_proj.bias`, `${p}mlp.up_proj.bias`]) : null,
      down: linearIn([`${p}mlp.down_proj.weight`]),
      downBias: optVec(s.mlpBias, `${p}mlp.down_proj.bias`),
      postMlpNorm: s.sandwichNorms ? vecT(effNorm(`${p}post_feedforward_layernorm.weight`)) : null,
      // folded above (f32 matrices); only packed matrices carry these separately
      inputNorm: null, mlpNorm: null, qkvScale: null,
    });
  }
  const finalNorm = vecT(effNorm('model.norm.weight'));
  // the tied head is also the embedding table (gathered): never released
  if (s.tieWordEmbeddings) return { embed: null, layers, finalNorm, lmHead: linearIn(['model.embed_tokens.weight'], null, null, false) };
  const e = read('model.embed_tokens.weight');
  const embed = makeTensor(e.shape, (dst) => dst.set(e.data)) as tf.Tensor2D;
  return { embed, layers, finalNorm, lmHead: linearIn(['lm_head.weight']) };
}
