/**
 * The thread pool's weights behind the one weight interface (linear.ts): `ThreadedLinear` holds a
 * matrix [out, in] (the checkpoint's layout) as a SharedWeight in the pool's shared memory, f32,
 * bf16, f16 or q8, and serves as a linear layer, a logits head and an embedding table alike (a
 * tied head is stored once).
 *
 * - `apply(x)`: x [N, in] is read where tfjs holds it (a view of the wasm heap, no copy there),
 *   copied into the pool, multiplied across the pool's threads split by output rows (ops.ts
 *   matmul: every thread count gives the same bits), and copied straight into a fresh tfjs
 *   tensor's memory; then the epilogue y·outScale + bias (each rounded to f32, as packed.ts's
 *   epilogue). q8 multiplies int8 activations (quant_x8: llama.cpp's Q8_0 × Q8_0).
 * - `rows(ids)`: the pool's gather (exact widening; q8 as q·d).
 * - `mix(w)`: Σ_v w[b, v]·E[v] by the pool's mix over each row's nonzero weights, in id order.
 *
 * The tfjs side only sees inputs and a fresh output tensor, so tidy scopes and leak counts work as
 * for any op. The pool is shared by all of a model's weights and owned by whoever made it (the
 * model loader): dispose() here frees the weight's blocks only.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from '../../../errors.ts';
import { heapValues } from '../module.ts';
import type { VocabMatrix } from '../../../linear.ts';
import { freeWeight, gather, matmulSplit, mix, uploadWeight, type SharedWeight, type WeightSource } from './ops.ts';
import type { ThreadPool } from './pool.ts';

// ---- tfjs tensors ↔ host arrays ----

/** A tensor's values as a host array: a view of the wasm heap where it lives there, else a copy. */
export function hostValues(t: tf.Tensor, dtype: 'float32' | 'int32'): Float32Array | Int32Array {
  const view = t.dtype === dtype ? heapValues(t) : null;
  if (view) return view;
  const v = t.dataSync();
  return dtype === 'float32' ? Float32Array.from(v as ArrayLike<number>) : Int32Array.from(v as ArrayLike<number>);
}

/**
 * Fresh float32 tensors [rows, cols_k] whose values `fill` writes: straight into the wasm heap on
 * wasm (the views are made after every allocation, which may grow the heap), else host arrays
 * handed to the backend.
 */
export function outputTensors(rows: number, cols: number[], fill: (dst: Float32Array[]) => void): tf.Tensor2D[] {
  if (tf.getBackend() === 'wasm') {
    const backend = tf.backend() as unknown as { makeOutput(shape: number[], dtype: string): tf.TensorInfo };
    const ts = cols.map(
      (c) => tf.engine().makeTensorFromTensorInfo(backend.makeOutput([rows, c], 'float32')) as tf.Tensor2D,
    );
    const views = ts.map((t) => (t.size === 0 ? new Float32Array(0) : (heapValues(t) as Float32Array | null)));
    if (views.every((v) => v !== null)) {
      try {
        fill(views as Float32Array[]);
      } catch (e) {
        tf.dispose(ts);
        throw e;
      }
      return ts;
    }
    tf.dispose(ts);
  }
  const host = cols.map((c) => new Float32Array(rows * c));
  fill(host);
  return host.map((h, k) => tf.tensor2d(h, [rows, cols[k]]));
}

function outputTensor(rows: number, cols: number, fill: (dst: Float32Array) => void): tf.Tensor2D {
  return outputTensors(rows, [cols], ([dst]) => fill(dst))[0];
}

// ---- the layer ----

export interface ThreadedLinearOptions {
  /** [rows], added last */
  bias?: tf.Tensor1D | null;
  /** [rows], multiplies output feature j before the bias (the attention scale on q's features) */
  outScale?: tf.Tensor1D | null;
  /** names the weight in errors */
  label?: string;
}

export class ThreadedLinear implements VocabMatrix {
  readonly label = 'threaded';
  private readonly biasValues: Float32Array | null;
  private readonly scaleValues: Float32Array | null;
  private readonly name: string;
  private freed = false;

  private constructor(
    readonly pool: ThreadPool,
    readonly weight: SharedWeight,
    private readonly o: ThreadedLinearOptions,
  ) {
    this.name = o.label ?? 'threaded weight';
    for (const [what, t] of [
      ['bias', o.bias],
      ['outScale', o.outScale],
    ] as const) {
      if (t && (t.size !== weight.rows || t.dtype !== 'float32')) {
        throw new ModelError(
          'E_SHAPE',
          `${this.name}: ${what} [${t.shape}] (${t.dtype}) does not fit ${weight.rows} output features`,
        );
      }
    }
    this.biasValues = o.bias ? Float32Array.from(o.bias.dataSync()) : null;
    this.scaleValues = o.outScale ? Float32Array.from(o.outScale.dataSync()) : null;
  }

  /** Upload a row-major [rows, cols] matrix (the checkpoint's [out, in]) into the pool. */
  static upload(
    pool: ThreadPool,
    src: WeightSource,
    rows: number,
    cols: number,
    o: ThreadedLinearOptions = {},
  ): ThreadedLinear {
    const w = uploadWeight(pool, src, rows, cols, o.label);
    try {
      return new ThreadedLinear(pool, w, o);
    } catch (e) {
      freeWeight(pool, w);
      throw e;
    }
  }

  get inDim(): number {
    return this.weight.cols;
  }
  get outDim(): number {
    return this.weight.rows;
  }
  get vocab(): number {
    return this.weight.rows;
  }
  get width(): number {
    return this.weight.cols;
  }
  get kind(): SharedWeight['kind'] {
    return this.weight.kind;
  }

  get bytes(): number {
    const w = this.weight;
    return (
      w.data.bytes +
      (w.scales?.bytes ?? 0) +
      (this.o.bias ? this.o.bias.size * 4 : 0) +
      (this.o.outScale ? this.o.outScale.size * 4 : 0)
    );
  }

  apply(x: tf.Tensor2D): tf.Tensor2D {
    return this.applySplit(x, [this.outDim])[0];
  }

  /**
   * y = apply(x) split along its features into parts of the given widths, each a fresh tensor
   * (tf.split of apply(x), without the copies tfjs's split makes).
   */
  applySplit(x: tf.Tensor2D, widths: number[]): tf.Tensor2D[] {
    if (x.rank !== 2 || x.shape[1] !== this.inDim)
      throw new ModelError(
        'E_SHAPE',
        `${this.name}: x [${x.shape}] does not fit a [${this.outDim}, ${this.inDim}] weight`,
      );
    if (widths.reduce((a, b) => a + b, 0) !== this.outDim || widths.some((w) => !(Number.isInteger(w) && w >= 0)))
      throw new ModelError(
        'E_SHAPE',
        `${this.name}: parts [${widths}] are not whole widths adding up to its ${this.outDim} output features`,
      );
    this.check();
    const N = x.shape[0];
    return outputTensors(N, widths, (ys) => {
      const xv = hostValues(x, 'float32') as Float32Array; // after the outputs' allocation: a current view
      let col = 0;
      const parts = ys.map((out, k) => ({ col: (col += widths[k]) - widths[k], width: widths[k], out }));
      matmulSplit(this.pool, this.weight, xv, N, parts);
      const s = this.scaleValues;
      const b = this.biasValues;
      if (!s && !b) return;
      for (const { col, width, out } of parts) {
        for (let n = 0; n < N; n++) {
          const o = n * width;
          for (let j = 0; j < width; j++) {
            let v = out[o + j];
            if (s) v = Math.fround(v * s[col + j]);
            if (b) v = Math.fround(v + b[col + j]);
            out[o + j] = v;
          }
        }
      }
    });
  }

  rows(ids: tf.Tensor1D): tf.Tensor2D {
    if (ids.rank !== 1 || ids.dtype !== 'int32')
      throw new ModelError('E_DTYPE', `${this.name}.rows: ids must be int32 [n], got ${ids.dtype} [${ids.shape}]`);
    this.check();
    const v = gather(this.pool, this.weight, Int32Array.from(hostValues(ids, 'int32')));
    return outputTensor(ids.size, this.width, (dst) => dst.set(v));
  }

  mix(w: tf.Tensor2D): tf.Tensor2D {
    const V = w.shape[1];
    if (w.rank !== 2 || V > this.vocab)
      throw new ModelError(
        'E_SHAPE',
        `${this.name}.mix: weights [${w.shape}] over more ids than the table's ${this.vocab}`,
      );
    this.check();
    const B = w.shape[0];
    const wv = hostValues(w, 'float32') as Float32Array;
    // each row's nonzero weights, in id order; rows padded to the longest with weight 0 on id 0
    let K = 1;
    const counts = new Int32Array(B);
    for (let b = 0; b < B; b++) {
      let c = 0;
      for (let v = 0; v < V; v++) if (wv[b * V + v] !== 0) c++;
      counts[b] = c;
      K = Math.max(K, c);
    }
    const ids = new Int32Array(B * K);
    const wts = new Float32Array(B * K);
    for (let b = 0; b < B; b++) {
      let k = 0;
      for (let v = 0; v < V; v++) {
        const x = wv[b * V + v];
        if (x !== 0) {
          ids[b * K + k] = v;
          wts[b * K + k] = x;
          k++;
        }
      }
    }
    const out = B > 0 ? mix(this.pool, this.weight, ids, wts, B, K) : new Float32Array(0);
    return outputTensor(B, this.width, (dst) => dst.set(out));
  }

  private check(): void {
    if (this.freed) throw new ModelError('E_DISPOSED', `${this.name}: used after dispose()`);
  }

  dispose(): void {
    if (this.freed) return;
    this.freed = true;
    freeWeight(this.pool, this.weight);
    this.o.bias?.dispose();
    this.o.outScale?.dispose();
  }
}
