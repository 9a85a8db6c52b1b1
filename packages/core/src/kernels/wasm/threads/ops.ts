/**
 * The thread pool's operations: weights uploaded into the pool's shared memory in the kernels'
 * layouts (see wat.ts), and each op as "copy the inputs in, run the job(s), copy the output out",
 * with typed errors for bad shapes and ids. Phase B chains ops inside the pool instead of copying
 * out between them (see the design note in pool.ts); the `*At` forms take pool addresses for that.
 *
 * - matmul(pool, w, x, N): y [N, rows] = x [N, cols] · Wᵀ, split by weight rows.
 * - gather(pool, w, ids) / mix(pool, w, ids, wts, M, K): embedding rows by id, and the MoI mix
 *   Σ w_k · row_k, split by ids / 32-column blocks.
 * - SharedKv + splitHeads + attention: a KV cache in the pool, the heads of a fused qkv
 *   projection written into it, attention by (query row, head).
 */
import { ModelError, UsageError } from '../../../errors.ts';
import type { Allocation } from './memory.ts';
import type { ThreadPool } from './pool.ts';
import { FLOAT_PANEL, FLOAT_UNIT, PANEL, type MatKind } from './wat.ts';

export const BLOCK = 32;
/** rows are padded to whole float units (wat.ts FLOAT_UNIT: four 8-row panels), which q8's 4-row panels divide */
const ROW_PAD = FLOAT_UNIT;

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

// ---- weights ----

/** A matrix [rows, cols] in the pool's memory, in the kernels' layout for its kind. */
export interface SharedWeight {
  readonly kind: MatKind;
  readonly rows: number;
  readonly cols: number;
  /** rows padded to a multiple of 32, columns to a multiple of 32 */
  readonly rowsP: number;
  readonly colsP: number;
  /** bytes from one row to the next */
  readonly rowBytes: number;
  readonly data: Allocation;
  /** q8: f32 [colsP / 32][rowsP], block-major */
  readonly scales: Allocation | null;
}

export type WeightSource =
  | { kind: 'f32'; values: Float32Array }
  | { kind: 'bf16' | 'f16'; words: Uint16Array }
  | { kind: 'q8'; q: Int8Array; d: Float32Array };

const BYTES: Record<MatKind, number> = { f32: 4, bf16: 2, f16: 2, q8: 1 };

/** Rows and columns of a [rows, cols] weight as the pool holds it (padded), and its bytes a row. */
function paddedShape(kind: MatKind, rows: number, cols: number) {
  const rowsP = alignUp(rows, ROW_PAD);
  const colsP = alignUp(cols, BLOCK);
  return { rowsP, colsP, rowBytes: colsP * BYTES[kind] };
}

/** Bytes uploadWeight takes for a [rows, cols] weight of this kind: its padded data, and q8's scales. */
export function sharedWeightBytes(kind: MatKind, rows: number, cols: number): number {
  const { rowsP, colsP, rowBytes } = paddedShape(kind, rows, cols);
  return rowsP * rowBytes + (kind === 'q8' ? (colsP / BLOCK) * rowsP * 4 : 0);
}

/**
 * Upload a row-major [rows, cols] weight (the checkpoint's [out, in]): f32 values, bf16/f16
 * words, or q8 as packed.ts's quantizeQ8 gives it (q int8 [rows·cols], d f32 [rows][ceil(cols/32)]).
 */
export function uploadWeight(
  pool: ThreadPool,
  src: WeightSource,
  rows: number,
  cols: number,
  name = 'weight',
): SharedWeight {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1) {
    throw new ModelError('E_SHAPE', `${name}: cannot upload a [${rows}, ${cols}] weight`);
  }
  const n = rows * cols;
  const len = src.kind === 'f32' ? src.values.length : src.kind === 'q8' ? src.q.length : src.words.length;
  if (len !== n) throw new ModelError('E_SHAPE', `${name}: ${len} values for [${rows}, ${cols}]`);
  const nb = Math.ceil(cols / BLOCK);
  if (src.kind === 'q8' && src.d.length !== rows * nb)
    throw new ModelError('E_SHAPE', `${name}: ${src.d.length} q8 scales for [${rows}, ${cols}] (want ${rows * nb})`);
  const { rowsP, colsP, rowBytes } = paddedShape(src.kind, rows, cols);
  const heap = pool.heap;
  const data = heap.alloc(rowsP * rowBytes, name);
  const scales = src.kind === 'q8' ? heap.alloc(nb * rowsP * 4, `${name} scales`) : null;
  heap.u8(data.ptr, rowsP * rowBytes).fill(0);
  if (src.kind === 'f32') {
    // units of 32 rows, column by column: (r, c) at (r & ~31)·colsP + 32c + (r & 31) (see wat.ts)
    layoutF32(heap.f32(data.ptr, rowsP * colsP), src.values, rows, cols, colsP);
  } else if (src.kind === 'q8') {
    const bad = src.q.indexOf(-128);
    if (bad >= 0) {
      throw new ModelError(
        'E_Q8_RANGE',
        `${name}: q8 value −128 at row ${Math.floor(bad / cols)}, column ${bad % cols}: Q8_0 weights lie in −127..127 (round(x / (max|x| / 127)))`,
      );
    }
    // panels of 4 rows interleaved by blocks: block b of panel row r at b·128 + 32r (see wat.ts)
    const at = (r: number, c: number) => (r & ~(PANEL - 1)) * colsP + c * PANEL + (r & (PANEL - 1)) * BLOCK;
    const dst = new Int8Array(heap.memory.buffer, data.ptr, rowsP * colsP);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c += BLOCK)
        dst.set(src.q.subarray(r * cols + c, r * cols + Math.min(cols, c + BLOCK)), at(r, c));
    }
    const sT = heap.f32(scales!.ptr, nb * rowsP);
    sT.fill(0);
    for (let r = 0; r < rows; r++) for (let b = 0; b < nb; b++) sT[b * rowsP + r] = src.d[r * nb + b];
  } else {
    // units of 32 rows, column by column; in each 8-row panel the words of rows 0, 4, 1, 5, 2, 6, 3, 7
    const dst = heap.u16(data.ptr, rowsP * colsP);
    for (let r = 0; r < rows; r++) {
      const j = r & (FLOAT_PANEL - 1);
      const base =
        (r & ~(FLOAT_UNIT - 1)) * colsP + (r & (FLOAT_UNIT - FLOAT_PANEL)) + (j < 4 ? 2 * j : 2 * (j - 4) + 1);
      const row = r * cols;
      for (let c = 0; c < cols; c++) dst[base + c * FLOAT_UNIT] = src.words[row + c];
    }
  }
  return { kind: src.kind, rows, cols, rowsP, colsP, rowBytes, data, scales };
}

/** f32 [rows, cols] row-major into units of 32 rows, column by column: (r, c) at (r & ~31)·colsP + 32c + (r & 31). */
function layoutF32(dst: Float32Array, v: Float32Array, rows: number, cols: number, colsP: number): void {
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    let d = (r & ~(FLOAT_UNIT - 1)) * colsP + (r & (FLOAT_UNIT - 1));
    for (let c = 0; c < cols; c++, d += FLOAT_UNIT) dst[d] = v[row + c];
  }
}

export function freeWeight(pool: ThreadPool, w: SharedWeight): void {
  pool.heap.release(w.data);
  if (w.scales) pool.heap.release(w.scales);
}

// ---- scratch: one reusable block, carved per op ----

const scratchOf = new WeakMap<ThreadPool, Allocation>();

/** Byte offsets of consecutive 64-byte-aligned regions of the given sizes in the pool's scratch block. */
export function scratch(pool: ThreadPool, ...sizes: number[]): number[] {
  const offs: number[] = [];
  let total = 0;
  for (const s of sizes) {
    offs.push(total);
    total += alignUp(Math.max(s, 1), 64);
  }
  let a = scratchOf.get(pool);
  if (!a || a.bytes < total) {
    if (a) pool.heap.release(a);
    a = pool.heap.alloc(Math.max(total, a ? a.bytes * 2 : 1 << 20), 'scratch');
    scratchOf.set(pool, a);
  }
  return offs.map((o) => a!.ptr + o);
}

/** Copy x [N, cols] into the pool at ptr as [N, colsP] (zero padding). */
function copyRowsIn(pool: ThreadPool, x: Float32Array, N: number, cols: number, colsP: number, ptr: number): void {
  const dst = pool.heap.f32(ptr, N * colsP);
  if (cols === colsP) dst.set(x.subarray(0, N * cols));
  else {
    for (let n = 0; n < N; n++) {
      dst.set(x.subarray(n * cols, (n + 1) * cols), n * colsP);
      dst.fill(0, n * colsP + cols, (n + 1) * colsP);
    }
  }
}

/** Copy [N, stride] rows' first `cols` values out of the pool into a fresh (or given) array. */
function copyRowsOut(
  pool: ThreadPool,
  ptr: number,
  N: number,
  cols: number,
  stride: number,
  out?: Float32Array,
): Float32Array {
  const y = out ?? new Float32Array(N * cols);
  copyColumnsOut(pool, ptr, N, stride, 0, cols, y);
  return y;
}

/** Copy columns [col, col + width) of [N, stride] rows out of the pool into y [N, width]. */
function copyColumnsOut(
  pool: ThreadPool,
  ptr: number,
  N: number,
  stride: number,
  col: number,
  width: number,
  y: Float32Array,
): void {
  const src = pool.heap.f32(ptr, N * stride);
  if (col === 0 && width === stride) y.set(src.subarray(0, N * width));
  else for (let n = 0; n < N; n++) y.set(src.subarray(n * stride + col, n * stride + col + width), n * width);
}

// ---- matmul ----

export type Q8Activations = 'x8' | 'x16';

export interface MatmulOptions {
  /** q8 only: x rounded to int8 per block (llama.cpp's Q8_0 × Q8_0, default) or to 16 bits (packed-wat.ts's decode) */
  q8?: Q8Activations;
  /** at most this many threads (default all) */
  threads?: number;
  /** write y here instead of a new array */
  out?: Float32Array;
}

/** x rows per chunk (the tiles' grouping of x rows; see wat.ts mm_K): about 192 KiB of (possibly quantized) x, a multiple of 4. */
function chunkRows(bytesPerRow: number): number {
  return Math.max(4, Math.floor((192 * 1024) / bytesPerRow / 4) * 4);
}

/** Weight-row grain per thread: whole 8-row tiles, at least 32 rows unless the matrix is small. */
function rowGrain(rowsP: number): number {
  return rowsP >= 256 ? 32 : ROW_PAD;
}

/** y [N, rows] = x [N, cols] · Wᵀ (see wat.ts for the arithmetic of each kind). */
export function matmul(
  pool: ThreadPool,
  w: SharedWeight,
  x: Float32Array,
  N: number,
  o: MatmulOptions = {},
): Float32Array {
  const y = o.out ?? new Float32Array(N * w.rows); // a short `out` is refused as a part that does not fit
  matmulSplit(pool, w, x, N, [{ col: 0, width: w.rows, out: y }], o);
  return y;
}

/** Where matmulSplit writes output features [col, col + width): out [N, width]. */
export interface OutputPart {
  col: number;
  width: number;
  out: Float32Array;
}

/**
 * The matmul with y's features handed out in parts (a fused projection's pieces, e.g. an MLP's
 * gate and up): the same values as matmul's y split along its features, each part's rows
 * contiguous in its own array.
 */
export function matmulSplit(
  pool: ThreadPool,
  w: SharedWeight,
  x: Float32Array,
  N: number,
  parts: OutputPart[],
  o: Omit<MatmulOptions, 'out'> = {},
): void {
  if (!Number.isInteger(N) || N < 1 || x.length < N * w.cols) {
    throw new ModelError('E_SHAPE', `matmul: x has ${x.length} values, not ${N} rows of ${w.cols}`);
  }
  for (const p of parts) {
    if (!(p.col >= 0 && p.width >= 0 && p.col + p.width <= w.rows) || p.out.length < N * p.width)
      throw new ModelError(
        'E_SHAPE',
        `matmul: output part [${p.col}, ${p.col + p.width}) of ${w.rows} features into ${p.out.length} values for ${N} rows`,
      );
  }
  const xBytes = N * w.colsP * 4;
  const yBytes = N * w.rowsP * 4;
  const nb = w.colsP / BLOCK;
  const q8 = w.kind === 'q8';
  const [xp, yp, xq, xd] = scratch(pool, xBytes, yBytes, q8 ? N * nb * 64 : 0, q8 ? N * nb * 4 : 0);
  copyRowsIn(pool, x, N, w.cols, w.colsP, xp);
  matmulAt(pool, w, xp, N, yp, { q8: o.q8, threads: o.threads, xq, xd });
  for (const p of parts) copyColumnsOut(pool, yp, N, w.rowsP, p.col, p.width, p.out);
}

/**
 * The matmul on pool addresses: x at xp as [N, colsP] f32 (zero padded), y to yp as [N, rowsP];
 * q8 also needs xq (N·colsP·2 bytes) and xd (N·colsP/8 bytes) for the quantized x.
 */
export function matmulAt(
  pool: ThreadPool,
  w: SharedWeight,
  xp: number,
  N: number,
  yp: number,
  o: { q8?: Q8Activations; threads?: number; xq?: number; xd?: number } = {},
): void {
  const a = pool.args().i32;
  const nb = w.colsP / BLOCK;
  const threads = o.threads ?? pool.threads;
  const grain = rowGrain(w.rowsP);
  if (w.kind !== 'q8') {
    a.set([w.data.ptr, w.rowBytes, xp, w.colsP * 4, N, w.colsP, yp, w.rowsP * 4, chunkRows(w.colsP * 4)]);
    pool.dispatch(w.kind === 'f32' ? 'mm_f32' : w.kind === 'bf16' ? 'mm_bf16' : 'mm_f16', w.rowsP, grain, threads);
    return;
  }
  if (o.xq === undefined || o.xd === undefined) throw new UsageError('E_ARGS', 'matmulAt: q8 needs xq and xd scratch');
  const x16 = o.q8 === 'x16';
  // quantize x: rows split between threads only when there are many
  a.set([xp, w.colsP * 4, N, nb, o.xq, nb * 64, o.xd, nb * 4]);
  pool.dispatch(x16 ? 'quant_x16' : 'quant_x8', N, 4, N >= 16 ? threads : 1);
  pool
    .args()
    .i32.set([
      w.data.ptr,
      w.rowBytes,
      w.scales!.ptr,
      w.rowsP * 4,
      o.xq,
      nb * 64,
      o.xd,
      nb * 4,
      N,
      nb,
      yp,
      w.rowsP * 4,
      chunkRows(nb * 64),
    ]);
  pool.dispatch(x16 ? 'mm_q8x16' : 'mm_q8x8', w.rowsP, grain, threads);
}

// ---- rows: gather and mix ----

function checkIds(ids: Int32Array, rows: number, what: string): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= rows)
      throw new ModelError('E_INDEX', `${what}: id ${id} (#${i}) is outside the table's ${rows} rows`);
  }
}

function rowArgs(w: SharedWeight): number[] {
  return [w.data.ptr, w.rowBytes, w.scales?.ptr ?? 0, w.rowsP * 4];
}

/** Rows [n, cols] f32 of the table for ids [n] (the embedding lookup; widened exactly, q8 as q·d). */
export function gather(pool: ThreadPool, w: SharedWeight, ids: Int32Array, o: { threads?: number } = {}): Float32Array {
  checkIds(ids, w.rows, 'gather');
  const n = ids.length;
  if (n === 0) return new Float32Array(0);
  const [ip, op] = scratch(pool, n * 4, n * w.colsP * 4);
  pool.heap.i32(ip, n).set(ids);
  pool.args().i32.set([...rowArgs(w), ip, op, w.colsP * 4, w.colsP / BLOCK]);
  pool.dispatch(`gather_${w.kind}`, n, 1, o.threads);
  return copyRowsOut(pool, op, n, w.cols, w.colsP);
}

/**
 * The MoI mix: out [M, cols], row m = Σ_k wts[m·K + k] · row ids[m·K + k] (widened as gather),
 * k in order, f32 multiply then add from 0, split by 32-column blocks.
 */
export function mix(
  pool: ThreadPool,
  w: SharedWeight,
  ids: Int32Array,
  wts: Float32Array,
  M: number,
  K: number,
  o: { threads?: number } = {},
): Float32Array {
  if (ids.length !== M * K || wts.length !== M * K)
    throw new ModelError('E_SHAPE', `mix: ${ids.length} ids and ${wts.length} weights for ${M} rows of ${K}`);
  checkIds(ids, w.rows, 'mix');
  const [ip, wp, op] = scratch(pool, M * K * 4, M * K * 4, M * w.colsP * 4);
  pool.heap.i32(ip, M * K).set(ids);
  pool.heap.f32(wp, M * K).set(wts);
  pool.args().i32.set([...rowArgs(w), ip, wp, K, M, op, w.colsP * 4]);
  pool.dispatch(`mix_${w.kind}`, w.colsP / BLOCK, 1, o.threads);
  return copyRowsOut(pool, op, M, w.cols, w.colsP);
}

// ---- the KV cache, the head split, attention ----

/**
 * A KV cache in the pool: keys [Bc][nKV][S][D], values transposed [Bc][nKV][D][S], and the
 * position each slot holds, slotPos [Bc][S] (−1 = empty). S is the capacity rounded up to 4.
 */
export class SharedKv {
  readonly S: number;
  readonly keys: Allocation;
  readonly valsT: Allocation;
  readonly slotPos: Allocation;

  constructor(
    readonly pool: ThreadPool,
    readonly Bc: number,
    readonly nKV: number,
    capacity: number,
    readonly D: number,
  ) {
    if (D % 8 !== 0 || D < 8) throw new ModelError('E_SHAPE', `SharedKv: head dim ${D} must be a multiple of 8`);
    if (!(Bc >= 1 && nKV >= 1 && capacity >= 1))
      throw new ModelError('E_SHAPE', `SharedKv: rows ${Bc}, kv heads ${nKV}, capacity ${capacity}`);
    this.S = alignUp(capacity, 4);
    const n = Bc * nKV * this.S * D;
    this.keys = pool.heap.alloc(n * 4, 'kv keys');
    this.valsT = pool.heap.alloc(n * 4, 'kv values');
    this.slotPos = pool.heap.alloc(Bc * this.S * 4, 'kv slots');
    pool.heap.f32(this.keys.ptr, n).fill(0);
    pool.heap.f32(this.valsT.ptr, n).fill(0);
    pool.heap.i32(this.slotPos.ptr, Bc * this.S).fill(-1);
  }

  /** Write one slot from JS (k, v: [nKV·D]). */
  write(crow: number, slot: number, pos: number, k: Float32Array, v: Float32Array): void {
    const { S, D, nKV } = this;
    const keys = this.pool.heap.f32(this.keys.ptr, this.Bc * nKV * S * D);
    const vals = this.pool.heap.f32(this.valsT.ptr, this.Bc * nKV * S * D);
    for (let g = 0; g < nKV; g++) {
      keys.set(k.subarray(g * D, (g + 1) * D), ((crow * nKV + g) * S + slot) * D);
      for (let d = 0; d < D; d++) vals[((crow * nKV + g) * D + d) * S + slot] = v[g * D + d];
    }
    this.pool.heap.i32(this.slotPos.ptr, this.Bc * S)[crow * S + slot] = pos;
  }

  /** Positions of every slot of every row, [Bc][S] (a view; −1 = empty). */
  positions(): Int32Array {
    return this.pool.heap.i32(this.slotPos.ptr, this.Bc * this.S);
  }

  free(): void {
    this.pool.heap.release(this.keys);
    this.pool.heap.release(this.valsT);
    this.pool.heap.release(this.slotPos);
  }
}

export interface SplitHeadsOptions {
  /** per row: cache row, slot, position (the slot's new position) */
  rows: Int32Array;
  /** cos and sin [N][D] per row (rotate-half RoPE); omit for none */
  cos?: Float32Array;
  sin?: Float32Array;
  /** RMSNorm weights [D] for q and k heads (Qwen3, Gemma 3); omit for none */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  eps?: number;
  threads?: number;
}

/**
 * From qkv [N, (nH + 2·nKV)·D] (a fused projection's output), q [N, nH, D] (normed and rotated
 * as asked) returned, k (normed, rotated) and v written into the cache at each row's slot.
 */
export function splitHeads(
  pool: ThreadPool,
  kv: SharedKv,
  qkv: Float32Array,
  N: number,
  nH: number,
  o: SplitHeadsOptions,
): Float32Array {
  const { D, nKV, S } = kv;
  const width = (nH + 2 * nKV) * D;
  if (qkv.length !== N * width || o.rows.length !== 3 * N)
    throw new ModelError(
      'E_SHAPE',
      `splitHeads: qkv ${qkv.length} values / rows ${o.rows.length} for ${N} rows of ${width}`,
    );
  if ((o.cos || o.sin) && (o.cos?.length !== N * D || o.sin?.length !== N * D))
    throw new ModelError('E_SHAPE', `splitHeads: cos/sin must be [${N}, ${D}]`);
  for (const [name, t] of [
    ['qNorm', o.qNorm],
    ['kNorm', o.kNorm],
  ] as const) {
    if (t && t.length !== D) throw new ModelError('E_SHAPE', `splitHeads: ${name} has ${t.length} values, not ${D}`);
  }
  const info = new Int32Array(2 * N);
  const pos = kv.positions();
  for (let n = 0; n < N; n++) {
    const [crow, slot, p] = [o.rows[3 * n], o.rows[3 * n + 1], o.rows[3 * n + 2]];
    if (crow < 0 || crow >= kv.Bc || slot < 0 || slot >= S)
      throw new ModelError(
        'E_INDEX',
        `splitHeads: row ${n} writes cache row ${crow}, slot ${slot}, outside [${kv.Bc}, ${S}]`,
      );
    info[2 * n] = crow;
    info[2 * n + 1] = slot;
    pos[crow * S + slot] = p;
  }
  const [qkvp, qp, ip, cp, sp, qn, kn] = scratch(
    pool,
    qkv.length * 4,
    N * nH * D * 4,
    info.length * 4,
    o.cos ? N * D * 4 : 0,
    o.sin ? N * D * 4 : 0,
    o.qNorm ? D * 4 : 0,
    o.kNorm ? D * 4 : 0,
  );
  const heap = pool.heap;
  heap.f32(qkvp, qkv.length).set(qkv);
  heap.i32(ip, info.length).set(info);
  if (o.cos && o.sin) {
    heap.f32(cp, N * D).set(o.cos);
    heap.f32(sp, N * D).set(o.sin);
  }
  if (o.qNorm) heap.f32(qn, D).set(o.qNorm);
  if (o.kNorm) heap.f32(kn, D).set(o.kNorm);
  const { i32, f32 } = pool.args();
  i32.set([
    qkvp,
    width * 4,
    nH,
    nKV,
    D,
    qp,
    kv.keys.ptr,
    kv.valsT.ptr,
    S,
    ip,
    o.cos ? cp : 0,
    o.cos ? sp : 0,
    o.qNorm ? qn : 0,
    o.kNorm ? kn : 0,
  ]);
  f32[14] = o.eps ?? 1e-6;
  pool.dispatch('split_heads', N * (nH + nKV), 1, o.threads);
  return heap.f32(qp, N * nH * D).slice();
}

export interface AttentionOptions {
  /** sliding window (a slot is seen when qpos − pos < window); 0 / omitted = none */
  window?: number;
  /** attention-logit softcap; 0 / omitted = none */
  softcap?: number;
  threads?: number;
}

/**
 * Attention of query rows q [Nq, nH, D] (the scale folded in) over the cache: row i reads cache
 * row qinfo[2i] at position qinfo[2i + 1] (it sees slots with 0 ≤ pos ≤ that position, within
 * the window). Returns [Nq, nH, D]. Split by (query row, head).
 */
export function attention(
  pool: ThreadPool,
  kv: SharedKv,
  q: Float32Array,
  qinfo: Int32Array,
  nH: number,
  o: AttentionOptions = {},
): Float32Array {
  const { D, nKV, S } = kv;
  const Nq = qinfo.length / 2;
  if (!Number.isInteger(Nq) || q.length !== Nq * nH * D || nH % nKV !== 0) {
    throw new ModelError(
      'E_ATTENTION',
      `attention: q ${q.length} values, ${qinfo.length / 2} query rows, ${nH} heads over ${nKV} kv heads of ${D}`,
    );
  }
  for (let i = 0; i < Nq; i++) {
    if (qinfo[2 * i] < 0 || qinfo[2 * i] >= kv.Bc)
      throw new ModelError(
        'E_ATTENTION',
        `attention: query row ${i} reads cache row ${qinfo[2 * i]}, outside the cache's ${kv.Bc}`,
      );
  }
  const [qp, ip, op, sc] = scratch(pool, q.length * 4, qinfo.length * 4, q.length * 4, pool.threads * S * 4);
  pool.heap.f32(qp, q.length).set(q);
  pool.heap.i32(ip, qinfo.length).set(qinfo);
  const { i32, f32 } = pool.args();
  i32.set([qp, kv.keys.ptr, kv.valsT.ptr, kv.slotPos.ptr, ip, op, nH, nKV, S, D, o.window ?? 0, 0, sc, S * 4]);
  f32[11] = o.softcap ?? 0;
  pool.dispatch('attention', Nq * nH, 1, o.threads);
  return pool.heap.f32(op, q.length).slice();
}
