/**
 * The weight interface (linear.ts): one matrix held by every storage is one function. With values
 * that bf16 holds exactly, F32Linear ([in, out]), PackedLinear (bf16 [out, in], outScale and bias
 * given apart) and, for a vocabulary matrix, F32Columns, F32Table, PackedLinear and VocabBlocks in
 * both layouts give the same apply / rows / mix as a float64 product computed here from the
 * matrix's values, on wasm (kernels on and off) and cpu. Sizes, bytes and dispose agree; the plain
 * embedding forms wrap into the same objects.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  embeddingRows,
  embedRowsOf,
  embedVocab,
  embedWidth,
  F32Columns,
  F32Linear,
  F32Table,
  f32ToBf16,
  bf16ToF32,
  initBackend,
  isEmbeddingRows,
  mixAllRows,
  pack16,
  PackedLinear,
  setKernelsEnabled,
  VocabBlocks,
  type EmbeddingRows,
  type Linear,
} from '../src/index.ts';
import { randn, rng } from './kernel-data.ts';

/** Values bf16 holds exactly (so the packed and f32 storages hold the same matrix). */
function bf16Values(n: number, seed: number): Float32Array {
  return bf16ToF32(f32ToBf16(randn(rng(seed), n, 0.5)));
}

/** Row-major [R, C] → [C, R]. */
function transpose(a: Float32Array, R: number, C: number): Float32Array {
  const t = new Float32Array(R * C);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) t[c * R + r] = a[r * C + c];
  return t;
}

/** y[n, o] = Σ_i x[n, i] W[o, i] · scale[o] + bias[o], in float64 (W row-major [out, in]). */
function reference(
  x: Float32Array,
  N: number,
  W: Float32Array,
  out: number,
  inDim: number,
  scale: Float32Array | null,
  bias: Float32Array | null,
): Float64Array {
  const y = new Float64Array(N * out);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inDim; i++) s += x[n * inDim + i] * W[o * inDim + i];
      y[n * out + o] = s * (scale ? scale[o] : 1) + (bias ? bias[o] : 0);
    }
  }
  return y;
}

function close(got: tf.Tensor, want: Float64Array, shape: number[], what: string): void {
  assert.deepEqual(got.shape, shape, `${what}: shape`);
  const g = got.dataSync();
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(g[i] - want[i]) <= 1e-5 * (1 + Math.abs(want[i])), `${what}[${i}]: ${g[i]} vs ${want[i]}`);
  }
}

const RUNS = [
  { backend: 'wasm', kernels: true },
  { backend: 'wasm', kernels: false },
  { backend: 'cpu', kernels: true },
] as const;

for (const run of RUNS) {
  describe(`weights: one interface, every storage (${run.backend}${run.kernels ? '' : ', kernels off'})`, () => {
    before(async () => {
      await initBackend({ backend: run.backend });
      setKernelsEnabled(run.kernels);
    });
    after(async () => {
      setKernelsEnabled(true);
      await initBackend({ backend: 'wasm' });
    });

    it('a linear layer: F32Linear [in, out] with the scale folded into its columns equals PackedLinear with outScale, and the float64 product', () => {
      const n0 = tf.memory().numTensors;
      const [out, inDim, N] = [37, 45, 3];
      const W = bf16Values(out * inDim, 1);
      const scale = Float32Array.from({ length: out }, (_, o) => (o < 20 ? 0.125 : 1));
      const bias = randn(rng(2), out, 0.1);
      const x = randn(rng(3), N * inDim);
      // the f32 storage's fold: column o of Wᵀ times scale[o] (exact: a power of two)
      const folded = transpose(W, out, inDim);
      for (let i = 0; i < inDim; i++) for (let o = 0; o < out; o++) folded[i * out + o] *= scale[o];
      const layers: [string, Linear][] = [
        ['F32Linear', new F32Linear(tf.tensor2d(folded, [inDim, out]), tf.tensor1d(bias))],
        [
          'PackedLinear',
          new PackedLinear(pack16('bf16', f32ToBf16(W), out, inDim), tf.tensor1d(bias), tf.tensor1d(scale)),
        ],
      ];
      const want = reference(x, N, W, out, inDim, scale, bias);
      const xt = tf.tensor2d(x, [N, inDim]);
      for (const [name, l] of layers) {
        assert.deepEqual([l.inDim, l.outDim], [inDim, out], name);
        const y = l.apply(xt);
        close(y, want, [N, out], name);
        y.dispose();
      }
      assert.equal(layers[0][1].bytes, (inDim * out + out) * 4);
      assert.equal(layers[1][1].bytes, Math.ceil((out * inDim * 2) / 4) * 4 + 2 * out * 4);
      xt.dispose();
      for (const [, l] of layers) l.dispose();
      assert.equal(tf.memory().numTensors, n0, 'dispose frees the weight, its bias and its scale');
    });

    it('a vocabulary matrix: every storage gives the same logits, rows and mixtures', () => {
      const n0 = tf.memory().numTensors;
      const [V, H, N] = [53, 24, 2];
      const E = bf16Values(V * H, 4); // [V, H]
      const ET = transpose(E, V, H); // [H, V]
      const blockBytes = 10 * H * 4; // 6 blocks, the last short
      const sources: [string, EmbeddingRows & Partial<Linear>][] = [
        ['F32Columns', new F32Columns(tf.tensor2d(ET, [H, V]))],
        ['F32Table', new F32Table(tf.tensor2d(E, [V, H]))],
        ['PackedLinear', new PackedLinear(pack16('bf16', f32ToBf16(E), V, H))],
        ['VocabBlocks rows', VocabBlocks.fromValues(E, [V, H], 'rows', blockBytes)],
        ['VocabBlocks cols', VocabBlocks.fromValues(ET, [H, V], 'cols', blockBytes)],
      ];
      const h = randn(rng(5), N * H);
      const ids = [0, 7, V - 1, 12, 12];
      const p = randn(rng(6), N * (V - 3)).map(Math.abs); // weights over the first V - 3 ids
      const wantLogits = reference(h, N, E, V, H, null, null);
      const wantRows = Float64Array.from(ids.flatMap((id) => Array.from(E.subarray(id * H, (id + 1) * H))));
      const wantMix = reference(
        p,
        N,
        ET.filter((_, i) => i % V < V - 3),
        H,
        V - 3,
        null,
        null,
      );
      const ht = tf.tensor2d(h, [N, H]);
      const idt = tf.tensor1d(ids, 'int32');
      const pt = tf.tensor2d(p, [N, V - 3]);
      const tooWide = tf.zeros([1, V + 1]) as tf.Tensor2D;
      for (const [name, src] of sources) {
        assert.ok(isEmbeddingRows(src), name);
        assert.deepEqual([src.vocab, src.width], [V, H], name);
        const got = [src.rows(idt), src.mix(pt)];
        close(got[0], wantRows, [ids.length, H], `${name} rows`);
        close(got[1], wantMix, [N, H], `${name} mix`);
        if (src.apply) got.push(src.apply(ht));
        if (src.apply) close(got[2], wantLogits, [N, V], `${name} apply`);
        tf.dispose(got);
        assert.throws(
          () => src.mix(tooWide),
          (e: { code?: string }) => e.code === 'E_SHAPE',
          `${name}: weights over more ids than it holds`,
        );
      }
      assert.ok(!isEmbeddingRows(new F32Linear(ht)), 'a layer is not an embedding source');
      tf.dispose([ht, idt, pt, tooWide]);
      for (const [, s] of sources) s.dispose();
      assert.equal(tf.memory().numTensors, n0, 'dispose frees every storage; nothing leaks');
    });

    it('the plain forms ({ table }, { columns }, { packed }, { blocks }) wrap into the same rows and mixtures', () => {
      const n0 = tf.memory().numTensors;
      const [V, H] = [19, 8];
      const E = bf16Values(V * H, 7);
      const table = tf.tensor2d(E, [V, H]);
      const columns = tf.tensor2d(transpose(E, V, H), [H, V]);
      const packed = pack16('bf16', f32ToBf16(E), V, H);
      const blocks = VocabBlocks.fromValues(E, [V, H], 'rows', 5 * H * 4);
      const ids = tf.tensor1d([3, 18, 0], 'int32');
      const w = tf.tensor2d(randn(rng(8), 2 * V).map(Math.abs), [2, V]) as tf.Tensor2D;
      const want = {
        rows: Float64Array.from([3, 18, 0].flatMap((id) => Array.from(E.subarray(id * H, (id + 1) * H)))),
        mix: reference(w.dataSync() as Float32Array, 2, transpose(E, V, H), H, V, null, null),
      };
      for (const [name, src] of [
        ['table', { table }],
        ['columns', { columns }],
        ['packed', { packed }],
        ['blocks', { blocks }],
        ['object', new F32Table(table)],
      ] as const) {
        assert.equal(embedVocab(src), V, name);
        assert.equal(embedWidth(src), H, name);
        assert.equal(
          embeddingRows(src).label,
          name === 'packed' ? 'packed' : name === 'blocks' ? 'blocked' : 'f32',
          name,
        );
        tf.tidy(() => {
          close(embedRowsOf(src, ids), want.rows, [3, H], `${name} rows`);
          close(mixAllRows(src, w, V), want.mix, [2, H], `${name} mix`);
        });
      }
      assert.throws(
        () => mixAllRows({ table }, w, V - 1),
        (e: { code?: string }) => e.code === 'E_SHAPE',
      );
      tf.dispose([table, columns, packed.data, ids, w]);
      blocks.dispose();
      assert.equal(tf.memory().numTensors, n0, 'the wrappers own nothing; nothing leaks');
    });
  });
}
