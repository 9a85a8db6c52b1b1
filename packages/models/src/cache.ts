/**
 * KV cache, preallocated at a fixed shape (static shapes suit tfjs), one per layer.
 *
 * - keys   [B, nKV, S, D]
 * - values [B, nKV, D, S]  (stored transposed: attention then reads both with transposeB, which
 *   keeps tfjs-wasm off its XNNPACK path that caches a packed copy of the B operand per tensor
 *   and would not see in-place writes)
 *
 * Each row (sequence) has its own offset, so rows of a batch can sit at different positions.
 * A sliding-window layer keeps only `window` slots and writes position p into slot p % window
 * (a rotating buffer); the attention mask, built from the positions each slot holds, keeps it
 * exact past the window.
 *
 * Writes go straight into the tensor's memory where the backend allows it (wasm heap, cpu typed
 * arrays): no copy of the buffer per token. Other backends (tensorflow, webgpu) fall back to
 * tf.tensorScatterUpdate, which makes a new buffer.
 */
import * as tf from '@tensorflow/tfjs-core';
import { heapValues, UsageError } from '@moi/core';

export interface KVCacheOptions {
  batch: number;
  kvHeads: number;
  headDim: number;
  /** most tokens a row may hold (prompt + generation) */
  capacity: number;
  /** sliding-window size; the cache then keeps min(window, capacity) slots */
  window?: number | null;
  /** never write in place (for tests of the fallback path) */
  noInPlace?: boolean;
}

export interface CacheView {
  keys: tf.Tensor4D;
  /** values transposed: [b, nKV, D, S] */
  valuesT: tf.Tensor4D;
  /** position held by each key slot, per returned row; −1 = empty */
  keyPositions: number[][];
}

/**
 * What the decoder and its attention op (attention.ts) ask of one layer's cache; KVCache is the
 * implementation. The attention kernels read `keys` / `valuesT` in place, with `slotPos` saying
 * which position each slot holds; the composite paths append and fetch.
 */
export interface LayerCache {
  /** tokens seen per row (= the row's next position) */
  readonly offset: readonly number[];
  /** the position held by each allocated slot, per row; −1 = empty */
  readonly slotPos: number[][];
  /** the buffers, [B, nKV, S, D] and [B, nKV, D, S] (S = alloc slots) */
  readonly keys: tf.Tensor4D;
  readonly valuesT: tf.Tensor4D;
  /** slots per row at most, allocated now, and the sliding window (null: full attention) */
  readonly size: number;
  readonly alloc: number;
  readonly window: number | null;
  checkFits(rows: number[], T: number): void;
  append(k: tf.Tensor4D, v: tf.Tensor4D, rows: number[]): void;
  appendRows(k: tf.Tensor, kCol: number, v: tf.Tensor, vCol: number, rows: number[]): void;
  updateAndFetch(k: tf.Tensor4D, v: tf.Tensor4D, rows: number[]): CacheView;
}

/** A Float32Array over a tensor's own memory, or null where the backend cannot do that. */
export function writableView(t: tf.Tensor): Float32Array | null {
  const name = tf.getBackend();
  if (name === 'wasm') return t.dtype === 'float32' ? (heapValues(t) as Float32Array | null) : null;
  if (name === 'cpu') {
    const values = (tf.backend() as any).data.get(t.dataId)?.values;
    return values instanceof Float32Array && values.length === t.size ? values : null;
  }
  return null;
}

/** Buffer growth step, in slots. */
export const GROW_SLOTS = 32;

export class KVCache implements LayerCache {
  readonly batch: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly capacity: number;
  readonly window: number | null;
  /** slots per row at most (capacity, or the window) */
  readonly size: number;
  /** slots per row allocated now: buffers grow GROW_SLOTS at a time up to `size`, so attention reads only about as many slots as there are tokens */
  alloc: number;
  /** tokens seen per row (= the next position) */
  readonly offset: number[];
  /** the position held by each slot, per row; −1 = empty */
  readonly slotPos: number[][];
  keys: tf.Tensor4D;
  valuesT: tf.Tensor4D;
  private readonly inPlace: boolean;

  constructor(o: KVCacheOptions) {
    this.batch = o.batch;
    this.kvHeads = o.kvHeads;
    this.headDim = o.headDim;
    this.capacity = o.capacity;
    this.window = o.window ?? null;
    this.size = this.window ? Math.min(this.window, o.capacity) : o.capacity;
    this.offset = new Array(o.batch).fill(0);
    this.alloc = Math.min(this.size, GROW_SLOTS);
    this.slotPos = Array.from({ length: o.batch }, () => new Array(this.alloc).fill(-1));
    this.keys = tf.keep(tf.zeros([o.batch, o.kvHeads, this.alloc, o.headDim])) as tf.Tensor4D;
    this.valuesT = tf.keep(tf.zeros([o.batch, o.kvHeads, o.headDim, this.alloc])) as tf.Tensor4D;
    this.inPlace = !o.noInPlace && writableView(this.keys) !== null;
  }

  get isRotating(): boolean {
    return this.window !== null;
  }

  /** the slot where position p lives */
  slot(p: number): number {
    return this.window ? p % this.size : p;
  }

  /**
   * Append k, v ([rows.length, nKV, T, D]) at each row's offset, advance the offsets, and return
   * what attention should read for those rows. Call inside tf.tidy: returned tensors other than
   * the cache's own buffers belong to the caller.
   */
  updateAndFetch(k: tf.Tensor4D, v: tf.Tensor4D, rows: number[]): CacheView {
    const T = k.shape[2];
    this.checkFits(rows, T);
    this.grow(Math.min(this.size, Math.max(...rows.map((r) => this.offset[r] + T))));
    const allRows = rows.length === this.batch && rows.every((r, i) => r === i);
    const positions = rows.map((r) => Array.from({ length: T }, (_, t) => this.offset[r] + t));

    let view: CacheView;
    if (this.window && T > 1) {
      // A chunk on a rotating cache: attend over what the slots held before plus the whole
      // chunk (the mask applies the window), then keep only the chunk's last `size` tokens.
      const oldK = allRows ? this.keys : tf.gather(this.keys, rows);
      const oldV = allRows ? this.valuesT : tf.gather(this.valuesT, rows);
      view = {
        keys: tf.concat([oldK, k], 2) as tf.Tensor4D,
        valuesT: tf.concat([oldV, tf.transpose(v, [0, 1, 3, 2])], 3) as tf.Tensor4D,
        keyPositions: rows.map((r, i) => [...this.slotPos[r], ...positions[i]]),
      };
      this.write(k, v, rows, positions);
    } else {
      this.write(k, v, rows, positions);
      view = {
        keys: allRows ? this.keys : (tf.gather(this.keys, rows) as tf.Tensor4D),
        valuesT: allRows ? this.valuesT : (tf.gather(this.valuesT, rows) as tf.Tensor4D),
        keyPositions: rows.map((r) => this.slotPos[r]),
      };
    }
    for (const r of rows) this.offset[r] += T;
    return view;
  }

  /**
   * Append k, v ([rows.length, nKV, T, D]) at each row's offset and advance the offsets, fetching
   * nothing: for attention that reads the cache's own buffers in place (decodeAttention).
   */
  append(k: tf.Tensor4D, v: tf.Tensor4D, rows: number[]): void {
    const T = k.shape[2];
    this.checkFits(rows, T);
    this.grow(Math.min(this.size, Math.max(...rows.map((r) => this.offset[r] + T))));
    this.write(
      k,
      v,
      rows,
      rows.map((r) => Array.from({ length: T }, (_, t) => this.offset[r] + t)),
    );
    for (const r of rows) this.offset[r] += T;
  }

  /**
   * append() for keys and values in the [rows·T, width] layout of a fused projection (row i·T + t;
   * the nKV key heads from column kCol of k, the value heads from column vCol of v), as the
   * prefill kernels leave them: written straight from those rows where the cache writes in place,
   * else transposed to [rows, nKV, T, D] and appended.
   */
  appendRows(k: tf.Tensor, kCol: number, v: tf.Tensor, vCol: number, rows: number[]): void {
    const N = k.shape[0] ?? 0;
    const T = N / rows.length;
    const H = this.kvHeads;
    const D = this.headDim;
    if (!this.inPlace) {
      const heads = (x: tf.Tensor, col: number) =>
        tf.transpose(
          tf.reshape(tf.slice(x, [0, col], [N, H * D]), [rows.length, T, H, D]),
          [0, 2, 1, 3],
        ) as tf.Tensor4D;
      const [k4, v4] = tf.tidy(() => [heads(k, kCol), heads(v, vCol)]);
      try {
        this.append(k4, v4, rows);
      } finally {
        tf.dispose([k4, v4]);
      }
      return;
    }
    this.checkFits(rows, T);
    this.grow(Math.min(this.size, Math.max(...rows.map((r) => this.offset[r] + T))));
    const first = Math.max(0, T - this.size);
    for (let i = 0; i < rows.length; i++) {
      for (let t = first; t < T; t++)
        this.slotPos[rows[i]][this.slot(this.offset[rows[i]] + t)] = this.offset[rows[i]] + t;
    }
    const S = this.alloc;
    const kW = k.shape[1] ?? 0;
    const vW = v.shape[1] ?? 0;
    // Views are made right here, after the last op: heap growth detaches older views.
    const kSrc = writableView(k)!;
    const vSrc = writableView(v)!;
    const kDst = writableView(this.keys)!;
    const vDst = writableView(this.valuesT)!;
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      for (let t = first; t < T; t++) {
        const s = this.slot(this.offset[r] + t);
        for (let h = 0; h < H; h++) {
          const ko = (i * T + t) * kW + kCol + h * D;
          kDst.set(kSrc.subarray(ko, ko + D), ((r * H + h) * S + s) * D);
          const vo = (i * T + t) * vW + vCol + h * D;
          const dst = (r * H + h) * D * S + s;
          for (let d = 0; d < D; d++) vDst[dst + d * S] = vSrc[vo + d];
        }
      }
    }
    for (const r of rows) this.offset[r] += T;
  }

  /**
   * Throw (E_CACHE_ROW, E_CONTEXT) unless T more tokens fit each of these rows. The decoder
   * checks every layer before the first write, so a failed call leaves the cache unchanged.
   */
  checkFits(rows: number[], T: number): void {
    for (const r of rows) {
      if (!Number.isInteger(r) || r < 0 || r >= this.batch)
        throw new UsageError('E_CACHE_ROW', `cache row ${r} is outside the batch of ${this.batch}`);
      // a rotating buffer is exact past capacity only when it holds the whole window
      const bounded = !this.window || this.size < this.window;
      if (bounded && this.offset[r] + T > this.capacity) {
        throw new UsageError(
          'E_CONTEXT',
          `context overflow: row ${r} holds ${this.offset[r]} tokens and ${T} more do not fit the cache capacity of ${this.capacity}`,
        );
      }
    }
  }

  /** Make room for `slots` slots per row (rounded up to GROW_SLOTS, at most `size`). */
  private grow(slots: number): void {
    if (slots <= this.alloc) return;
    const next = Math.min(this.size, Math.ceil(slots / GROW_SLOTS) * GROW_SLOTS);
    const add = next - this.alloc;
    const [B, H, , D] = this.keys.shape;
    const [keys, valuesT] = tf.tidy(() => [
      tf.concat([this.keys, tf.zeros([B, H, add, D])], 2),
      tf.concat([this.valuesT, tf.zeros([B, H, D, add])], 3),
    ]);
    this.keys.dispose();
    this.valuesT.dispose();
    this.keys = tf.keep(keys) as tf.Tensor4D;
    this.valuesT = tf.keep(valuesT) as tf.Tensor4D;
    for (const pos of this.slotPos) for (let i = 0; i < add; i++) pos.push(-1);
    this.alloc = next;
  }

  /** Write the tokens that stay (on a rotating cache, the last `size` of the chunk). */
  private write(k: tf.Tensor4D, v: tf.Tensor4D, rows: number[], positions: number[][]): void {
    const T = k.shape[2];
    const first = Math.max(0, T - this.size);
    for (let i = 0; i < rows.length; i++) {
      for (let t = first; t < T; t++) this.slotPos[rows[i]][this.slot(positions[i][t])] = positions[i][t];
    }
    if (this.inPlace) this.writeInPlace(k, v, rows, positions, first);
    else this.writeByScatter(k, v, rows, positions, first);
  }

  private writeInPlace(k: tf.Tensor4D, v: tf.Tensor4D, rows: number[], positions: number[][], first: number): void {
    const [, H, T, D] = k.shape;
    const S = this.alloc;
    // Views are made right here, after the last op: heap growth detaches older views.
    const kSrc = writableView(k);
    const vSrc = writableView(v);
    const kDst = writableView(this.keys);
    const vDst = writableView(this.valuesT);
    if (!kSrc || !vSrc || !kDst || !vDst) {
      this.writeByScatter(k, v, rows, positions, first);
      return;
    }
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      for (let h = 0; h < H; h++) {
        const src = (i * H + h) * T * D;
        for (let t = first; t < T; t++) {
          const s = this.slot(positions[i][t]);
          const so = src + t * D;
          kDst.set(kSrc.subarray(so, so + D), ((r * H + h) * S + s) * D);
          const vo = (r * H + h) * D * S + s;
          for (let d = 0; d < D; d++) vDst[vo + d * S] = vSrc[so + d];
        }
      }
    }
  }

  private writeByScatter(k: tf.Tensor4D, v: tf.Tensor4D, rows: number[], positions: number[][], first: number): void {
    const [, H, T, D] = k.shape;
    const kIdx: number[][] = [];
    const kSel: number[] = [];
    const vIdx: number[][] = [];
    const vSel: number[] = [];
    for (let i = 0; i < rows.length; i++) {
      for (let h = 0; h < H; h++) {
        for (let t = first; t < T; t++) {
          const s = this.slot(positions[i][t]);
          kIdx.push([rows[i], h, s]);
          kSel.push((i * H + h) * T + t);
          for (let d = 0; d < D; d++) {
            vIdx.push([rows[i], h, d, s]);
            vSel.push(((i * H + h) * D + d) * T + t); // v transposed to [b, H, D, T], flat
          }
        }
      }
    }
    const [newK, newV] = tf.tidy(() => {
      const kRows = tf.gather(tf.reshape(k, [-1, D]), kSel); // [N, D]
      const vVals = tf.gather(tf.reshape(tf.transpose(v, [0, 1, 3, 2]), [-1]), vSel); // [N·D]
      return [
        tf.tensorScatterUpdate(this.keys, tf.tensor2d(kIdx, [kIdx.length, 3], 'int32'), kRows),
        tf.tensorScatterUpdate(this.valuesT, tf.tensor2d(vIdx, [vIdx.length, 4], 'int32'), vVals),
      ];
    });
    this.keys.dispose();
    this.valuesT.dispose();
    this.keys = tf.keep(newK) as tf.Tensor4D;
    this.valuesT = tf.keep(newV) as tf.Tensor4D;
  }

  /**
   * Roll a row back to its first `n` tokens (e.g. a chat whose re-rendered history differs from
   * what was cached). Returns false where a rotating buffer has already overwritten what would
   * be needed; the caller then resets the row and prefills again.
   */
  truncate(row: number, n: number): boolean {
    if (n >= this.offset[row]) return n === this.offset[row];
    if (this.window && this.offset[row] > this.size && n > 0) return false;
    const pos = this.slotPos[row];
    const emptied: number[] = [];
    for (let s = 0; s < pos.length; s++)
      if (pos[s] >= n) {
        pos[s] = -1;
        emptied.push(s);
      }
    this.zeroSlots(row, emptied);
    this.offset[row] = n;
    return true;
  }

  /** Forget rows (all by default): offsets to 0, slots empty (and zeroed). Buffers stay allocated. */
  reset(rows?: number[]): void {
    for (const r of rows ?? this.offset.map((_, i) => i)) {
      const held: number[] = [];
      this.slotPos[r].forEach((p, s) => {
        if (p >= 0) held.push(s);
      });
      this.zeroSlots(r, held);
      this.offset[r] = 0;
      this.slotPos[r].fill(-1);
    }
  }

  /**
   * Zero a row's keys and values at these slots. An empty slot is masked out of attention, but a
   * mask cannot hide a non-finite value (NaN · 0 is NaN, NaN + −∞ is NaN): whatever a failed
   * request left there would poison the next request given this row. So every slot a row gives
   * up is zeroed, in place where the backend allows it (cost: the slots that held data).
   */
  private zeroSlots(row: number, slots: number[]): void {
    if (slots.length === 0) return;
    const [, H, S, D] = this.keys.shape;
    const kDst = this.inPlace ? writableView(this.keys) : null;
    const vDst = kDst ? writableView(this.valuesT) : null;
    if (kDst && vDst) {
      for (let h = 0; h < H; h++) {
        for (const s of slots) {
          kDst.fill(0, ((row * H + h) * S + s) * D, ((row * H + h) * S + s + 1) * D);
          const vo = (row * H + h) * D * S + s;
          for (let d = 0; d < D; d++) vDst[vo + d * S] = 0;
        }
      }
      return;
    }
    const keep = new Array<number>(this.batch * S).fill(1);
    for (const s of slots) keep[row * S + s] = 0;
    const [keys, valuesT] = tf.tidy(() => {
      const m = tf.tensor(keep, [this.batch, 1, S], 'bool');
      return [
        tf.where(tf.reshape(m, [this.batch, 1, S, 1]), this.keys, tf.zerosLike(this.keys)),
        tf.where(tf.reshape(m, [this.batch, 1, 1, S]), this.valuesT, tf.zerosLike(this.valuesT)),
      ];
    });
    this.keys.dispose();
    this.valuesT.dispose();
    this.keys = tf.keep(keys) as tf.Tensor4D;
    this.valuesT = tf.keep(valuesT) as tf.Tensor4D;
  }

  dispose(): void {
    this.keys.dispose();
    this.valuesT.dispose();
  }
}
