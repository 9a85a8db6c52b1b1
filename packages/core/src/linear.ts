/**
 * One weight abstraction: a linear layer, and the rows of a vocabulary matrix (the embedding
 * source), are objects with one interface whatever their storage. The decoder asks a layer to
 * apply itself and never looks at how it is held.
 *
 * Storages here and beside:
 * - `F32Linear`: an f32 tensor laid out [in, out] (the layout XNNPACK's GEMV likes; a builder may
 *   have folded norm weights into its rows and scales into its columns), + bias;
 * - `F32Columns`: the same for a vocabulary matrix [H, V] (lm_head transposed, or a tied embedding),
 *   whose columns are also the embedding rows; `F32Table`: an untied embedding table [V, H];
 * - `PackedLinear`: a packed 16/8-bit weight (kernels/wasm/packed.ts) in the checkpoint's [out,
 *   in] layout, + an output scale and bias; one class serves as layer, head and embedding table;
 * - `VocabBlocks` (vocab-blocks.ts): an f32 vocabulary matrix split along the vocabulary for
 *   webgpu's buffer limits, head and embedding rows alike.
 *
 * How another storage plugs in: a class implementing `Linear` (and `EmbeddingRows` if it holds a
 * vocabulary matrix), made by a models `WeightStorage` (models/src/weights.ts) that reads the
 * checkpoint and says whether it folds norm weights. The decoder needs no new branch:
 * - a GPU's f16 buffers: `apply(x)` runs a WGSL GEMV (few rows) or GEMM (many) over the buffer
 *   (its fixed-shape decode plan binds the same buffers), returning a tfjs tensor on the device;
 * - a threaded CPU pool's weights in a shared `WebAssembly.Memory`: `apply(x)` copies x into the
 *   shared memory, has the workers each compute a band of output rows (split across outputs, never
 *   across a sum: every thread count gives the same bits), and copies y out into a tfjs tensor.
 * `bytes` is what the storage holds; `dispose()` frees it (and the bias/scale it owns).
 */
import * as tf from '@tensorflow/tfjs-core';
import { ModelError } from './errors.ts';
import { gatherRows } from './kernels/wasm/gather.ts';
import {
  disposePacked,
  packedBytes,
  packedMatMul,
  packedMatMulT,
  packedRows,
  type PackedWeight,
} from './kernels/wasm/packed.ts';
import { linear } from './nn.ts';

// ---------------------------------------------------------------------------------------------
// the interfaces

/** Memory a model holds: its size, and how to free it. */
export interface Weight {
  /** bytes held (tensor memory, as tfjs counts it) */
  readonly bytes: number;
  dispose(): void;
}

/** A linear layer: y = x · W (+ bias), W of any storage. */
export interface Linear extends Weight {
  readonly inDim: number;
  readonly outDim: number;
  /** y [N, outDim] for x [N, inDim]; the caller owns y */
  apply(x: tf.Tensor2D): tf.Tensor2D;
  /** apply(x) split along its features into parts of these widths, where a storage does it without tf.split's copies */
  applySplit?(x: tf.Tensor2D, widths: number[]): tf.Tensor2D[];
}

/** y = layer(x) split along its features into parts of the given widths (a fused projection's pieces). */
export function applySplit(layer: Linear, x: tf.Tensor2D, widths: number[]): tf.Tensor2D[] {
  return layer.applySplit ? layer.applySplit(x, widths) : (tf.split(layer.apply(x), widths, 1) as tf.Tensor2D[]);
}

/** The raw rows of an embedding matrix E [vocab, width], wherever they are held. */
export interface EmbeddingRows extends Weight {
  /** how error messages name the storage ('f32', 'packed', 'blocked') */
  readonly label: string;
  readonly vocab: number;
  readonly width: number;
  /** E[ids], [n, width] (f32), for ids int32 [n] */
  rows(ids: tf.Tensor1D): tf.Tensor2D;
  /** Σ_v w[b, v] E[v] for w [B, V'] (V' ≤ vocab): [B, width] */
  mix(w: tf.Tensor2D): tf.Tensor2D;
}

/** A vocabulary matrix serving both ways: the logits head (h · Eᵀ) and the embedding rows. */
export type VocabMatrix = Linear & EmbeddingRows;

export function isEmbeddingRows(x: unknown): x is EmbeddingRows {
  const o = x as Partial<EmbeddingRows> | null;
  return typeof o === 'object' && o !== null && typeof o.rows === 'function' && typeof o.mix === 'function';
}

function tensorBytes(t: tf.Tensor | null): number {
  return t ? t.size * 4 : 0;
}

/** Refuse mixing weights over more ids than the table holds (a typed error, not a shape failure inside tfjs). */
function checkMixWidth(who: string, w: tf.Tensor2D, vocab: number): number {
  const V = w.shape[1];
  if (w.rank !== 2 || V > vocab)
    throw new ModelError('E_SHAPE', `${who}.mix: weights [${w.shape}] over more ids than the table's ${vocab}`);
  return V;
}

// ---------------------------------------------------------------------------------------------
// f32

/** An f32 linear layer, W [in, out] (+ bias [out]). */
export class F32Linear implements Linear {
  constructor(
    readonly weight: tf.Tensor2D,
    readonly bias: tf.Tensor1D | null = null,
  ) {}

  get inDim(): number {
    return this.weight.shape[0];
  }
  get outDim(): number {
    return this.weight.shape[1];
  }
  get bytes(): number {
    return tensorBytes(this.weight) + tensorBytes(this.bias);
  }

  apply(x: tf.Tensor2D): tf.Tensor2D {
    return linear(x, this.weight, this.bias) as tf.Tensor2D;
  }

  dispose(): void {
    this.weight.dispose();
    this.bias?.dispose();
  }
}

/** An f32 vocabulary matrix as the head, W = Eᵀ [H, V]: its columns are the embedding rows. */
export class F32Columns extends F32Linear implements VocabMatrix {
  readonly label = 'f32';

  constructor(weight: tf.Tensor2D) {
    super(weight, null);
  }

  get vocab(): number {
    return this.weight.shape[1];
  }
  get width(): number {
    return this.weight.shape[0];
  }

  rows(ids: tf.Tensor1D): tf.Tensor2D {
    return gatherRows(this.weight, ids, 'cols');
  }

  mix(w: tf.Tensor2D): tf.Tensor2D {
    const V = checkMixWidth('F32Columns', w, this.vocab);
    return tf.tidy(() => {
      const C = this.weight;
      return tf.matMul(w, C.shape[1] === V ? C : tf.slice(C, [0, 0], [C.shape[0], V]), false, true) as tf.Tensor2D;
    });
  }
}

/** An f32 embedding table E [V, H] (an untied embed_tokens.weight). */
export class F32Table implements EmbeddingRows {
  readonly label = 'f32';

  constructor(readonly table: tf.Tensor2D) {}

  get vocab(): number {
    return this.table.shape[0];
  }
  get width(): number {
    return this.table.shape[1];
  }
  get bytes(): number {
    return tensorBytes(this.table);
  }

  rows(ids: tf.Tensor1D): tf.Tensor2D {
    return gatherRows(this.table, ids, 'rows');
  }

  mix(w: tf.Tensor2D): tf.Tensor2D {
    const V = checkMixWidth('F32Table', w, this.vocab);
    return tf.tidy(() => {
      const E = this.table.shape[0] === V ? this.table : tf.slice(this.table, [0, 0], [V, this.table.shape[1]]);
      return tf.matMul(w, E) as tf.Tensor2D;
    });
  }

  dispose(): void {
    this.table.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// packed 16/8-bit

/**
 * A packed weight [out, in] (the checkpoint's layout, nothing folded): y = x · Wᵀ · outScale + bias.
 * As a vocabulary matrix its rows are the embedding rows (a tied head is stored once).
 */
export class PackedLinear implements VocabMatrix {
  readonly label = 'packed';

  constructor(
    readonly weight: PackedWeight,
    readonly bias: tf.Tensor1D | null = null,
    readonly outScale: tf.Tensor1D | null = null,
  ) {}

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
  get bytes(): number {
    return packedBytes(this.weight) + tensorBytes(this.bias) + tensorBytes(this.outScale);
  }

  apply(x: tf.Tensor2D): tf.Tensor2D {
    return packedMatMul(x, this.weight, { bias: this.bias, outScale: this.outScale });
  }

  rows(ids: tf.Tensor1D): tf.Tensor2D {
    return packedRows(this.weight, ids);
  }

  mix(w: tf.Tensor2D): tf.Tensor2D {
    const V = checkMixWidth('PackedLinear', w, this.vocab);
    const rows = this.weight.rows;
    return tf.tidy(() =>
      packedMatMulT(
        rows === V
          ? w
          : (tf.pad(w, [
              [0, 0],
              [0, rows - V],
            ]) as tf.Tensor2D),
        this.weight,
      ),
    );
  }

  dispose(): void {
    disposePacked(this.weight);
    this.bias?.dispose();
    this.outScale?.dispose();
  }
}
