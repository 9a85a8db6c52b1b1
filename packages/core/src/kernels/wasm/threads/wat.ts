/**
 * The thread pool's kernels as WebAssembly text, generated for one SIMD path ('relaxed' or
 * 'simd128'; see simd.ts). The module imports a shared memory (the pool's, memory.ts) and has no
 * globals, stack or data of its own.
 *
 * Calling convention: every job kernel is `NAME(a, s, e, t)`: `a` the byte address of its
 * argument words (i32, or f32 where noted) in the job descriptor, [s, e) the units this thread
 * does, t the thread's index (for per-thread scratch). A job splits its units between threads
 * in contiguous ranges (pool.ts); every unit's result is computed by the same instructions in the
 * same order whichever thread runs it and whatever else that thread runs, so a result never
 * depends on the thread count, nor on which other rows share a batch (batched == alone).
 *
 * Layouts (all made by ops.ts):
 * - A weight W [rows, cols] keeps the checkpoint's [out, in] values, rows padded to a multiple of
 *   32 (zero rows) and columns to a multiple of 32 (zeros), so no kernel has a tail. Per kind:
 *   - f32 / bf16 / f16: units of 32 rows stored column by column: column c of a unit holds its 4
 *     panels of 8 rows, each panel one vector of its 8 rows' values (f32: 32 bytes; 16-bit: 16
 *     bytes, the words of rows 0, 4, 1, 5, 2, 6, 3, 7, so that `shl 16` and `and 0xffff0000` widen
 *     (bf16) or place (f16) rows 0-3 and 4-7 in order). A matmul tile multiplies a panel's vectors
 *     by x values splat (outer-product form: no horizontal sums), and the 1 × 32 tile of decode
 *     reads the matrix as one stream (measured: with 8-row panels apart, decode at 2 threads fell
 *     from 56 to 34-40 tok/s on SmolLM2-135M f32).
 *   - q8: llama.cpp's Q8_0 blocks: rows in panels of 4 interleaved by blocks (block b of panel row
 *     r at b·128 + 32r: the int8 values, 32 bytes a block), and the f32 scales transposed,
 *     [blocks][rows] (the scales of 4 consecutive rows of one block are one load).
 * - x [N, cols] f32, rows padded with zeros to the padded column count. q8 multiplies x
 *   quantized per row and block of 32 (`quant_x8`, `quant_x16`).
 *
 * Matmuls, out [N, rows] = x · Wᵀ, split by weight rows (units: padded rows, in whole tiles):
 * - f32 / bf16 / f16 (`mm_f32`, `mm_bf16`, `mm_f16`): each output is one f32 accumulator over the
 *   columns in order (a lane of a vector of 4 weight rows), relaxed: acc = fma(w, x, acc),
 *   simd128: acc = acc + w·x, from acc = 0. Tiles of X x rows × 8 or 16 weight rows (FLOAT_TILES);
 *   each thread's weight rows go 32 at a time, and every x row (in chunks) passes over those 32
 *   while they sit in cache, so a weight is read from memory once per call whatever N is.
 * - q8 with int8 activations (`mm_q8x8`), as llama.cpp's Q8_0 × Q8_0: per block b, the exact
 *   integer T = Σ q_w·q_x, then out += f32(T) · (d_w · d_x) in f32 (multiply then add, on both
 *   paths), blocks in order. relaxed: x is stored as |q| (0..127, the i7 operand
 *   `i32x4.relaxed_dot_i8x16_i7x16_add_s` wants) and its sign as a byte mask s (0 or −1), moved
 *   onto the weights as llama.cpp's AVX2 path does with `sign`: a = (w ^ s) − s = ±w, T = dot(a,
 *   |q|) (weights must lie in −127..127: −128 has no negation in int8; uploads refuse it). simd128: x is stored as
 *   i16 and the weights widened, T from `i32x4.dot_i16x8_s`. Each pair's 4 lanes are added to
 *   the exact T (integers: any order), 4 weight rows' T in one vector, so both paths give the
 *   same bits.
 * - q8 with 16-bit activations (`mm_q8x16`): packed-wat.ts's matmul_q8x16, lane for lane (the
 *   same bits as that single-thread kernel on whole blocks).
 *
 * Others: `attention` (by query head: (query row, head) units), `split_heads` (q/k/v heads out
 * of a fused projection, RMS-normed and rotated, k and v written into the cache), `gather_K`
 * (rows by id, widened) and `mix_K` (Σ_i w_i · row_i over the MoI candidates, split by 32-column
 * blocks), `noop` (the empty job, for the round-trip measurement), and the self-tests (simd.ts).
 */
import type { SimdPath } from './simd.ts';
import { f16FromTop, hsum } from '../wat-text.ts';
import { kernelsSource } from '../module.ts';

export type MatKind = 'f32' | 'bf16' | 'f16' | 'q8';
export const MAT_KINDS: readonly MatKind[] = ['f32', 'bf16', 'f16', 'q8'];

/** q8 weight rows per panel: 4 rows stored interleaved by 32-byte blocks (see the header). */
export const PANEL = 4;
/** f32/bf16/f16 weight rows per panel: 8 rows stored column by column (see the header). */
export const FLOAT_PANEL = 8;
/** f32/bf16/f16: the weight rows of one unit of work (four panels); rows are padded to it. */
export const FLOAT_UNIT = 32;
/**
 * Tile shapes, x rows → weight rows per call: 4 × 8 while 4 x rows remain, then 2 × 16, then
 * 1 × 32 (8 accumulators each). Measured (one thread, relaxed; a prototype of these loops): in
 * cache (576→1536, 1536→576) 4 × 8 and 2 × 16 gave 52 GFLOP/s, 3 × 8 42 (the row-panel
 * dot-product tiles of before 25–30, XNNPACK's f32 GEMM 28–33). Eight accumulators are the most
 * V8's x64 code keeps in vector registers here, and they bound the tile: each accumulator is a
 * chain of dependent FMAs, and bench/fma-ceiling.ts measures register-only chains at 55–57 GFLOP/s
 * for 8, 85 for 12, 100 for 14 a thread; the tiles with 10 or 12 accumulators (5 × 8, 6 × 8,
 * 3 × 16) spill and run at 20–25;
 * from memory (a 256 MB matrix, one row of x, as decode) 1 × 32 read 28–29 GB/s, 1 × 16 23,
 * 1 × 8 20-21 (four streams keep more reads in flight), XNNPACK's GEMV 20-26.
 */
export const FLOAT_TILES: Record<number, number> = { 4: 8, 2: 16, 1: 32 };
/** q8 int8 tiles: R is 4 (one scale vector); X x rows up to 2. */
export const Q8_TILES: Record<number, number> = { 1: 4, 2: 4 };

// ---- text helpers ----

const arg = (k: number) => `(i32.load offset=${4 * k} (local.get $a))`;
const argf = (k: number) => `(f32.load offset=${4 * k} (local.get $a))`;

/** i8x16.shuffle immediates selecting 32-bit lanes [i, j, k, l] of (a, b) (4..7 = b's lanes). */
function lanes32(...l: number[]): string {
  return l.flatMap((x) => [4 * x, 4 * x + 1, 4 * x + 2, 4 * x + 3]).join(' ');
}

/** Exact lane totals of 4 i32x4 (locals a..d): [Σa, Σb, Σc, Σd]; integer adds, any order is exact. */
function reduce4(a: string, b: string, c: string, d: string): string {
  const u = `(i32x4.add (i8x16.shuffle ${lanes32(0, 4, 1, 5)} (local.get ${a}) (local.get ${b})) (i8x16.shuffle ${lanes32(2, 6, 3, 7)} (local.get ${a}) (local.get ${b})))`;
  const v = `(i32x4.add (i8x16.shuffle ${lanes32(0, 4, 1, 5)} (local.get ${c}) (local.get ${d})) (i8x16.shuffle ${lanes32(2, 6, 3, 7)} (local.get ${c}) (local.get ${d})))`;
  return `(i32x4.add (i8x16.shuffle ${lanes32(0, 1, 4, 5)} (local.tee $ru ${u}) (local.tee $rv ${v})) (i8x16.shuffle ${lanes32(2, 3, 6, 7)} (local.get $ru) (local.get $rv)))`;
}

/**
 * The loops of mm_K and mm_q8x8 (their locals): weight rows [s, e) `step` at a time outside, x
 * rows [0, N) in chunks of `chunk` inside; `body` runs the chunk's x rows [n, n1) on weight rows r.
 */
function rowsThenChunks(step: number, body: string): string {
  return `(local.set $r (local.get $s))
    (block $dr (loop $lr
      (br_if $dr (i32.ge_u (local.get $r) (local.get $e)))
      (local.set $n0 (i32.const 0))
      (block $dc (loop $lc
        (br_if $dc (i32.ge_u (local.get $n0) (local.get $N)))
        (local.set $n1 (i32.add (local.get $n0) (local.get $chunk)))
        (if (i32.gt_u (local.get $n1) (local.get $N)) (then (local.set $n1 (local.get $N))))
        (local.set $n (local.get $n0))
        ${body}
        (local.set $n0 (local.get $n1))
        (br $lc)))
      (local.set $r (i32.add (local.get $r) (i32.const ${step})))
      (br $lr)))`;
}

/** A generator for one SIMD path. */
class Gen {
  constructor(readonly simd: SimdPath) {}
  /** the x-chunk body of floatMatmul (set while generating it) */
  private floatChunk: () => string = () => '';

  /** a·b + c on f32x4: one fused op (relaxed) or multiply then add (simd128) */
  fma(a: string, b: string, c: string): string {
    return this.simd === 'relaxed' ? `(f32x4.relaxed_madd ${a} ${b} ${c})` : `(f32x4.add ${c} (f32x4.mul ${a} ${b}))`;
  }

  /**
   * The int8 dot: lane i = Σ_{k<4} a[4i+k]·b[4i+k] + c[i], a signed, b in 0..127. relaxed: the
   * instruction; simd128: two 16-bit dots and a pairwise add (used by the self-tests only).
   */
  dot8(a: string, b: string, c: string): string {
    if (this.simd === 'relaxed') return `(i32x4.relaxed_dot_i8x16_i7x16_add_s ${a} ${b} ${c})`;
    const lo = `(i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_s (local.tee $da ${a})) (i16x8.extend_low_i8x16_s (local.tee $db ${b})))`;
    const hi = `(i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_s (local.get $da)) (i16x8.extend_high_i8x16_s (local.get $db)))`;
    return `(i32x4.add ${c} (i32x4.add (i8x16.shuffle ${lanes32(0, 2, 4, 6)} (local.tee $dl ${lo}) (local.tee $dh ${hi}))
      (i8x16.shuffle ${lanes32(1, 3, 5, 7)} (local.get $dl) (local.get $dh))))`;
  }

  // ---- f32 / bf16 / f16 matmul ----

  /**
   * tile_K_X_P(w, x, xs, cols, o, os, m): X x rows (from x, xs bytes apart) times P panels of 8
   * weight rows (consecutive panels of a 32-row unit, the first at w) over cols columns,
   * outer-product form: per column k,
   * the panel's 8 weights of column k (one vector f32 ×2, or one 16-bit vector widened into two)
   * times x[i, k] splat, into 2 accumulators per (x row, panel) holding rows 0-3 and 4-7. Each
   * output is acc = fma(w[r, k], x[i, k], acc) for k = 0, 1, … in order from acc = 0 (simd128:
   * acc + w·x), whatever the tile, so every tile gives an output the same bits. Outputs (x row i,
   * weight row 8p + j) go to o + i·os + 4(8p + j). m: the 0xffff0000 lane mask (a parameter, so it
   * stays in a register). One column per iteration: unrolled, TurboFan hoists the loads and spills
   * (measured: 4 x rows × 8 weight rows gave 52 GFLOP/s at one column a step, 27 at two).
   */
  floatTile(kind: Exclude<MatKind, 'q8'>, X: number, P: number): string {
    const L: string[] = [];
    const acc = (i: number, p: number, h: 'a' | 'b') => `$c${i}_${p}${h}`;
    const locals = ['(local $k i32) (local $s v128) (local $h v128) (local $v v128)'];
    for (let p = 0; p < P; p++) locals.push(`(local $w${p}a v128) (local $w${p}b v128)`);
    for (let i = 0; i < X; i++) locals.push(`(local $xp${i} i32)`);
    for (let i = 0; i < X; i++)
      for (let p = 0; p < P; p++) locals.push(`(local ${acc(i, p, 'a')} v128) (local ${acc(i, p, 'b')} v128)`);
    L.push(
      `(func $tile_${kind}_${X}_${P} (param $w i32) (param $x i32) (param $xs i32) (param $cols i32) (param $o i32) (param $os i32) (param $m v128)`,
    );
    L.push(`  ${locals.join(' ')}`);
    for (let i = 0; i < X; i++)
      L.push(`  (local.set $xp${i} (i32.add (local.get $x) (i32.mul (local.get $xs) (i32.const ${i}))))`);
    L.push(`  (loop $step`);
    for (let p = 0; p < P; p++) {
      // panel p of the tile: the next 32 (f32) or 16 (16-bit) bytes of the unit's column
      if (kind === 'f32') {
        L.push(`    (local.set $w${p}a (v128.load offset=${32 * p} (local.get $w)))`);
        L.push(`    (local.set $w${p}b (v128.load offset=${32 * p + 16} (local.get $w)))`);
      } else {
        // 8 words, rows 0, 4, 1, 5, 2, 6, 3, 7: shl 16 widens rows 0-3, the mask keeps rows 4-7
        const lo = `(i32x4.shl (local.tee $v (v128.load offset=${16 * p} (local.get $w))) (i32.const 16))`;
        const hi = `(v128.and (local.get $v) (local.get $m))`;
        L.push(`    (local.set $w${p}a ${kind === 'bf16' ? lo : f16FromTop(lo)})`);
        L.push(`    (local.set $w${p}b ${kind === 'bf16' ? hi : f16FromTop(hi)})`);
      }
    }
    for (let i = 0; i < X; i++) {
      L.push(`    (local.set $s (v128.load32_splat (local.get $xp${i})))`);
      for (let p = 0; p < P; p++)
        for (const h of ['a', 'b'] as const)
          L.push(
            `    (local.set ${acc(i, p, h)} ${this.fma(`(local.get $w${p}${h})`, '(local.get $s)', `(local.get ${acc(i, p, h)})`)})`,
          );
    }
    L.push(`    (local.set $w (i32.add (local.get $w) (i32.const ${kind === 'f32' ? 128 : 64})))`);
    for (let i = 0; i < X; i++) L.push(`    (local.set $xp${i} (i32.add (local.get $xp${i}) (i32.const 4)))`);
    L.push(`    (br_if $step (i32.lt_u (local.tee $k (i32.add (local.get $k) (i32.const 1))) (local.get $cols))))`);
    for (let i = 0; i < X; i++) {
      const row = i === 0 ? '(local.get $o)' : `(i32.add (local.get $o) (i32.mul (local.get $os) (i32.const ${i})))`;
      for (let p = 0; p < P; p++) {
        L.push(`  (v128.store offset=${32 * p} ${row} (local.get ${acc(i, p, 'a')}))`);
        L.push(`  (v128.store offset=${32 * p + 16} ${row} (local.get ${acc(i, p, 'b')}))`);
      }
    }
    L.push(')');
    return L.join('\n');
  }

  /**
   * mm_K (a: w, rb, x, xs, N, cols, out, os, chunk): out[n, r] for weight rows [s, e) (multiples
   * of 32: four panels), all x rows: per 32 weight rows, per chunk of `chunk` x rows, the
   * FLOAT_TILES shapes: x rows 4 at a time (a 4 × 8 tile per panel), then 2 (2 × 16 per two
   * panels), then 1 (1 × 32). Weight rows outside, x rows inside: the 32 rows' weights stay in L2
   * while all of x streams past them (from L2 or L3), instead of every weight coming from memory
   * once per chunk of x (measured, 2 threads, N = 128: 3 to 12% faster on the peer shapes'
   * matrices, the most where the columns are many and the chunks small). The order of the loops
   * does not change any output's arithmetic.
   */
  floatMatmul(kind: Exclude<MatKind, 'q8'>): string {
    const callTile = (X: number, P: number, panel: number) => `(call $tile_${kind}_${X}_${P}
            (i32.add (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))) (i32.const ${panel * (kind === 'f32' ? 32 : 16)}))
            (i32.add (local.get $x) (i32.mul (local.get $n) (local.get $xs))) (local.get $xs) (local.get $cols)
            (i32.add (i32.add (local.get $out) (i32.mul (local.get $n) (local.get $os))) (i32.shl (i32.add (local.get $r) (i32.const ${FLOAT_PANEL * panel})) (i32.const 2))) (local.get $os) (local.get $m))`;
    // per unit: the widest tile in a loop while its x rows remain, then each narrower one once if its
    // x rows remain; a tile of R weight rows runs on each R-row slice of the unit
    const widths = Object.keys(FLOAT_TILES)
      .map(Number)
      .sort((a, b) => b - a);
    const unit = (X: number) => {
      const R = FLOAT_TILES[X];
      const calls = [];
      for (let q = 0; q < FLOAT_UNIT / R; q++) calls.push(callTile(X, R / FLOAT_PANEL, (q * R) / FLOAT_PANEL));
      return `${calls.join('\n          ')}
          (local.set $n (i32.add (local.get $n) (i32.const ${X})))`;
    };
    const xLoop = [
      `(block $dn (loop $ln
          (br_if $dn (i32.gt_u (i32.add (local.get $n) (i32.const ${widths[0]})) (local.get $n1)))
          ${unit(widths[0])}
          (br $ln)))`,
      ...widths.slice(1).map(
        (X) => `(if (i32.ge_u (i32.sub (local.get $n1) (local.get $n)) (i32.const ${X})) (then
          ${unit(X)}))`,
      ),
    ].join('\n        ');
    return `(func (export "mm_${kind}") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $w i32) (local $rb i32) (local $x i32) (local $xs i32) (local $N i32) (local $cols i32) (local $out i32) (local $os i32) (local $chunk i32)
    (local $n0 i32) (local $n1 i32) (local $n i32) (local $r i32) (local $m v128)
    (local.set $w ${arg(0)}) (local.set $rb ${arg(1)}) (local.set $x ${arg(2)}) (local.set $xs ${arg(3)})
    (local.set $N ${arg(4)}) (local.set $cols ${arg(5)}) (local.set $out ${arg(6)}) (local.set $os ${arg(7)}) (local.set $chunk ${arg(8)})
    (local.set $m (v128.const i32x4 0xffff0000 0xffff0000 0xffff0000 0xffff0000))
    ${rowsThenChunks(FLOAT_UNIT, xLoop)}
  )`;
  }

  // ---- q8 ----

  /**
   * tile_q8_X_R(w, rb, sp, ss, xq, xqs, xd, xds, nb, o, os): R (a multiple of 4) weight rows from
   * w (rb bytes apart; their block-b scales at sp + b·ss, 4 rows a vector), X quantized x rows
   * from xq (xqs bytes apart, 64 bytes a block; scales at xd, xds apart); out (x row i, weight
   * row r) at o + i·os + 4r. relaxed: |q| and its sign mask, 32 bytes each per block; simd128: 32 i16.
   */
  q8Tile(X: number, R: number): string {
    const G = R / 4;
    const L: string[] = [];
    const locals = [
      '(local $b i32) (local $wb i32) (local $xb i32) (local $ru v128) (local $rv v128) (local $w0 v128) (local $w1 v128) (local $cp v128) (local $cn v128)',
      '(local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128) (local $dw v128) (local $zero v128)',
      '(local $i0 v128) (local $i1 v128) (local $i2 v128) (local $i3 v128)',
    ];
    for (let g = 0; g < G; g++) for (let i = 0; i < X; i++) locals.push(`(local $f${g}_${i} v128)`);
    L.push(`(func $tile_q8_${X}_${R} (param $w i32) (param $rb i32) (param $sp i32) (param $ss i32) (param $xq i32) (param $xqs i32)
  (param $xd i32) (param $xds i32) (param $nb i32) (param $o i32) (param $os i32)`);
    L.push(`  ${locals.join(' ')}`);
    L.push(`  (block $done (loop $blk`);
    L.push(`    (br_if $done (i32.ge_u (local.get $b) (local.get $nb)))`);
    // block b of panel row k of group g: w + 4g·rb + b·128 + 32k
    L.push(`    (local.set $wb (i32.add (local.get $w) (i32.shl (local.get $b) (i32.const 7))))`);
    for (let g = 0; g < G; g++) {
      L.push(
        `    (local.set $dw (v128.load offset=${16 * g} (i32.add (local.get $sp) (i32.mul (local.get $b) (local.get $ss)))))`,
      );
      for (let i = 0; i < X; i++) {
        L.push(
          `    (local.set $xb (i32.add (i32.add (local.get $xq) (i32.mul (local.get $xqs) (i32.const ${i}))) (i32.shl (local.get $b) (i32.const 6))))`,
        );
        for (let v = 0; v < 4; v++) L.push(`    (local.set $x${v} (v128.load offset=${16 * v} (local.get $xb)))`);
        for (let k = 0; k < 4; k++) {
          const wAddr = `(i32.add (local.get $wb) (i32.mul (local.get $rb) (i32.const ${4 * g})))`;
          L.push(`    (local.set $w0 (v128.load offset=${32 * k} ${wAddr}))`);
          L.push(`    (local.set $w1 (v128.load offset=${32 * k + 16} ${wAddr}))`);
          if (this.simd === 'relaxed') {
            // x's sign moved onto w: a = (w ^ s) − s (s = 0 or −1 per byte), T = dot(a, |x|) (|x| in x0, x1; s in x2, x3)
            L.push(`    (local.set $i${k} (i32x4.relaxed_dot_i8x16_i7x16_add_s (i8x16.sub (v128.xor (local.get $w1) (local.get $x3)) (local.get $x3)) (local.get $x1)
      (i32x4.relaxed_dot_i8x16_i7x16_add_s (i8x16.sub (v128.xor (local.get $w0) (local.get $x2)) (local.get $x2)) (local.get $x0) (local.get $zero))))`);
          } else {
            // x as i16 (x0..x3: columns 0-7, 8-15, 16-23, 24-31), the weights widened
            L.push(`    (local.set $i${k} (i32x4.add
      (i32x4.add (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_s (local.get $w0)) (local.get $x0)) (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_s (local.get $w0)) (local.get $x1)))
      (i32x4.add (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_s (local.get $w1)) (local.get $x2)) (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_s (local.get $w1)) (local.get $x3)))))`);
          }
        }
        const f = `$f${g}_${i}`;
        const dx = `(f32x4.splat (f32.load (i32.add (i32.add (local.get $xd) (i32.mul (local.get $xds) (i32.const ${i}))) (i32.shl (local.get $b) (i32.const 2)))))`;
        L.push(
          `    (local.set ${f} (f32x4.add (local.get ${f}) (f32x4.mul (f32x4.convert_i32x4_s ${reduce4('$i0', '$i1', '$i2', '$i3')}) (f32x4.mul (local.get $dw) ${dx}))))`,
        );
      }
    }
    L.push(`    (local.set $b (i32.add (local.get $b) (i32.const 1)))`);
    L.push(`    (br $blk)))`);
    for (let g = 0; g < G; g++)
      for (let i = 0; i < X; i++) {
        L.push(
          `  (v128.store offset=${16 * g} (i32.add (local.get $o) (i32.mul (local.get $os) (i32.const ${i}))) (local.get $f${g}_${i}))`,
        );
      }
    L.push(')');
    return L.join('\n');
  }

  /**
   * mm_q8x8 (a: w, rb, s, ss, xq, xqs, xd, xds, N, nb, out, os, chunk): as mm_K, on q8 weights and
   * x quantized by quant_x8.
   */
  q8Matmul(): string {
    const callTile = (X: number, R: number) => `(call $tile_q8_${X}_${R}
            (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))) (local.get $rb)
            (i32.add (local.get $sc) (i32.shl (local.get $r) (i32.const 2))) (local.get $ss)
            (i32.add (local.get $xq) (i32.mul (local.get $n) (local.get $xqs))) (local.get $xqs)
            (i32.add (local.get $xd) (i32.mul (local.get $n) (local.get $xds))) (local.get $xds) (local.get $nb)
            (i32.add (i32.add (local.get $out) (i32.mul (local.get $n) (local.get $os))) (i32.shl (local.get $r) (i32.const 2))) (local.get $os))`;
    const Xmax = Math.max(...Object.keys(Q8_TILES).map(Number));
    const R = Q8_TILES[Xmax];
    const rest: string[] = [];
    for (let x = Xmax - 1; x >= 1; x--)
      rest.push(
        `(if (i32.eq (i32.sub (local.get $n1) (local.get $n)) (i32.const ${x})) (then ${callTile(x, Q8_TILES[x])}))`,
      );
    return `(func (export "mm_q8x8") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $w i32) (local $rb i32) (local $sc i32) (local $ss i32) (local $xq i32) (local $xqs i32) (local $xd i32) (local $xds i32)
    (local $N i32) (local $nb i32) (local $out i32) (local $os i32) (local $chunk i32)
    (local $n0 i32) (local $n1 i32) (local $n i32) (local $r i32)
    (local.set $w ${arg(0)}) (local.set $rb ${arg(1)}) (local.set $sc ${arg(2)}) (local.set $ss ${arg(3)})
    (local.set $xq ${arg(4)}) (local.set $xqs ${arg(5)}) (local.set $xd ${arg(6)}) (local.set $xds ${arg(7)})
    (local.set $N ${arg(8)}) (local.set $nb ${arg(9)}) (local.set $out ${arg(10)}) (local.set $os ${arg(11)}) (local.set $chunk ${arg(12)})
    ${rowsThenChunks(
      R,
      `(block $dn (loop $ln
          (br_if $dn (i32.gt_u (i32.add (local.get $n) (i32.const ${Xmax})) (local.get $n1)))
          ${callTile(Xmax, R)}
          (local.set $n (i32.add (local.get $n) (i32.const ${Xmax})))
          (br $ln)))
        ${rest.join('\n        ')}`,
    )}
  )`;
  }

  /**
   * quant_x8 (a: x, xs, N, nb, xq, xqs, xd, xds) and quant_x16 (the same, 16-bit): x rows [s, e)
   * quantized per block of 32 columns: m = max|x|, d = m / 127 (x16: m / 32767), q = x / d rounded
   * half away from zero (floor(|v| + 0.5) with v's sign; d = 0 gives q = 0), all f32 IEEE
   * operations. xd [N][nb] gets d. quant_x8 stores per block, relaxed: |q| then the sign mask
   * (q < 0: −1, else 0; 32 bytes each); simd128: q as 32 i16. quant_x16 stores q as 32 i16.
   * A NaN or infinity in a block makes its d NaN or infinite, and every output it reaches NaN.
   */
  quantize(bits: 8 | 16): string {
    const v = (j: number) => `(v128.load offset=${16 * j} (local.get $xb))`;
    const absMax = (lo: number, hi: number): string =>
      hi - lo === 1 ? `(f32x4.abs ${v(lo)})` : `(f32x4.max ${absMax(lo, (lo + hi) / 2)} ${absMax((lo + hi) / 2, hi)})`;
    const rounded = (
      j: number,
    ) => `(i32x4.trunc_sat_f32x4_s (v128.or (f32x4.floor (f32x4.add (f32x4.abs (local.tee $tv (f32x4.div ${v(j)} (local.get $vd))))
              (v128.const f32x4 0.5 0.5 0.5 0.5))) (v128.and (local.get $tv) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000))))`;
    const q16 = (k: number) => `(i16x8.narrow_i32x4_s ${rounded(2 * k)} ${rounded(2 * k + 1)})`;
    let store: string;
    if (bits === 16 || this.simd === 'simd128') {
      store = [0, 1, 2, 3].map((k) => `(v128.store offset=${16 * k} (local.get $qb) ${q16(k)})`).join('\n            ');
    } else {
      store = [0, 1]
        .map(
          (k) => `(local.set $q${k} (i8x16.narrow_i16x8_s ${q16(2 * k)} ${q16(2 * k + 1)}))
            (v128.store offset=${16 * k} (local.get $qb) (i8x16.abs (local.get $q${k})))
            (v128.store offset=${16 * k + 32} (local.get $qb) (i8x16.lt_s (local.get $q${k}) (local.get $zero)))`,
        )
        .join('\n            ');
    }
    return `(func (export "quant_x${bits}") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $x i32) (local $xs i32) (local $nb i32) (local $xq i32) (local $xqs i32) (local $xd i32) (local $xds i32)
    (local $n i32) (local $b i32) (local $xb i32) (local $qb i32) (local $m f32) (local $d f32)
    (local $vm v128) (local $vd v128) (local $tv v128) (local $q0 v128) (local $q1 v128) (local $zero v128)
    (local.set $x ${arg(0)}) (local.set $xs ${arg(1)}) (local.set $nb ${arg(3)})
    (local.set $xq ${arg(4)}) (local.set $xqs ${arg(5)}) (local.set $xd ${arg(6)}) (local.set $xds ${arg(7)})
    (local.set $n (local.get $s))
    (block $dn (loop $ln
      (br_if $dn (i32.ge_u (local.get $n) (local.get $e)))
      (local.set $b (i32.const 0))
      (block $db (loop $lb
        (br_if $db (i32.ge_u (local.get $b) (local.get $nb)))
        (local.set $xb (i32.add (i32.add (local.get $x) (i32.mul (local.get $n) (local.get $xs))) (i32.shl (local.get $b) (i32.const 7))))
        (local.set $qb (i32.add (i32.add (local.get $xq) (i32.mul (local.get $n) (local.get $xqs))) (i32.shl (local.get $b) (i32.const 6))))
        (local.set $vm ${absMax(0, 8)})
        (local.set $m (f32.max (f32.max (f32x4.extract_lane 0 (local.get $vm)) (f32x4.extract_lane 1 (local.get $vm)))
          (f32.max (f32x4.extract_lane 2 (local.get $vm)) (f32x4.extract_lane 3 (local.get $vm)))))
        (local.set $d (f32.div (local.get $m) (f32.const ${bits === 8 ? 127 : 32767})))
        (f32.store (i32.add (i32.add (local.get $xd) (i32.mul (local.get $n) (local.get $xds))) (i32.shl (local.get $b) (i32.const 2))) (local.get $d))
        (local.set $vd (f32x4.splat (local.get $d)))
        (if (f32.eq (local.get $d) (f32.const 0))
          (then ${[0, 1, 2, 3].map((k) => `(v128.store offset=${16 * k} (local.get $qb) (local.get $zero))`).join(' ')})
          (else
            ${store}))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $lb)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $ln)))
  )`;
  }

  /**
   * mm_q8x16 (a: w, rb, s, ss, xq, xqs, xd, xds, N, nb, out, os): packed-wat.ts's matmul_q8x16 on
   * whole blocks, lane for lane: per weight row, acc += f32(Σ lanes of four 16-bit dots) ·
   * splat(d_w · d_x) per block, then (l0 + l1) + (l2 + l3), plus 0 (its empty tail). 4 weight rows
   * share each x block; weight rows [s, e).
   */
  q8x16Matmul(): string {
    const rows = [0, 1, 2, 3];
    const dot = (k: number, off: number, xa: string, xb: string) =>
      `(i32x4.add (i32x4.dot_i16x8_s (v128.load8x8_s offset=${off} (local.get $wp${k})) (local.get ${xa}))
                 (i32x4.dot_i16x8_s (v128.load8x8_s offset=${off + 8} (local.get $wp${k})) (local.get ${xb})))`;
    return `(func (export "mm_q8x16") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $w i32) (local $rb i32) (local $sc i32) (local $ss i32) (local $xq i32) (local $xqs i32) (local $xd i32) (local $xds i32)
    (local $N i32) (local $nb i32) (local $out i32) (local $os i32)
    (local $n i32) (local $r i32) (local $b i32) (local $xp i32) (local $dx f32) (local $sum v128)
    (local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128)
    ${rows.map((k) => `(local $wp${k} i32) (local $acc${k} v128)`).join(' ')}
    (local.set $w ${arg(0)}) (local.set $rb ${arg(1)}) (local.set $sc ${arg(2)}) (local.set $ss ${arg(3)})
    (local.set $xq ${arg(4)}) (local.set $xqs ${arg(5)}) (local.set $xd ${arg(6)}) (local.set $xds ${arg(7)})
    (local.set $N ${arg(8)}) (local.set $nb ${arg(9)}) (local.set $out ${arg(10)}) (local.set $os ${arg(11)})
    (block $dn (loop $ln
      (br_if $dn (i32.ge_u (local.get $n) (local.get $N)))
      (local.set $r (local.get $s))
      (block $dr (loop $lr
        (br_if $dr (i32.ge_u (local.get $r) (local.get $e)))
        ${rows
          .map(
            (
              k,
            ) => `(local.set $wp${k} (i32.add (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))) (i32.const ${32 * k})))
        (local.set $acc${k} (v128.const i32x4 0 0 0 0))`,
          )
          .join('\n        ')}
        (local.set $xp (i32.add (local.get $xq) (i32.mul (local.get $n) (local.get $xqs))))
        (local.set $b (i32.const 0))
        (block $db (loop $lb
          (br_if $db (i32.ge_u (local.get $b) (local.get $nb)))
          (local.set $dx (f32.load (i32.add (i32.add (local.get $xd) (i32.mul (local.get $n) (local.get $xds))) (i32.shl (local.get $b) (i32.const 2)))))
          (local.set $x0 (v128.load (local.get $xp)))
          (local.set $x1 (v128.load offset=16 (local.get $xp)))
          (local.set $x2 (v128.load offset=32 (local.get $xp)))
          (local.set $x3 (v128.load offset=48 (local.get $xp)))
          ${rows
            .map(
              (k) => `(local.set $sum (i32x4.add ${dot(k, 0, '$x0', '$x1')} ${dot(k, 16, '$x2', '$x3')}))
          (local.set $acc${k} (f32x4.add (local.get $acc${k}) (f32x4.mul (f32x4.convert_i32x4_s (local.get $sum))
            (f32x4.splat (f32.mul (f32.load offset=${4 * k} (i32.add (i32.add (local.get $sc) (i32.shl (local.get $r) (i32.const 2))) (i32.mul (local.get $b) (local.get $ss)))) (local.get $dx))))))
          (local.set $wp${k} (i32.add (local.get $wp${k}) (i32.const 128)))`,
            )
            .join('\n          ')}
          (local.set $xp (i32.add (local.get $xp) (i32.const 64)))
          (local.set $b (i32.add (local.get $b) (i32.const 1)))
          (br $lb)))
        ${rows
          .map(
            (
              k,
            ) => `(f32.store offset=${4 * k} (i32.add (i32.add (local.get $out) (i32.mul (local.get $n) (local.get $os))) (i32.shl (local.get $r) (i32.const 2)))
          (f32.add ${hsum(`$acc${k}`)} (f32.const 0)))`,
          )
          .join('\n        ')}
        (local.set $r (i32.add (local.get $r) (i32.const 4)))
        (br $lr)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $ln)))
  )`;
  }

  // ---- rows: gather and MoI mixing ----

  /**
   * WAT: the 4 f32 of columns 4p..4p+3 (p = 0..7) of a 32-column block of one row of kind K, the
   * row's value of the block's first column at byte address `row` (q8: times the scale in local
   * $dq). f32 / bf16 / f16 panels hold a column's 8 rows together, so a row's consecutive columns
   * are 32 (f32) or 16 (16-bit) bytes apart and are read one by one; q8's 32 bytes are contiguous.
   */
  widen4(kind: MatKind, row: string, p: number): string {
    if (kind === 'q8')
      return `(f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s (i16x8.extend_low_i8x16_s (v128.load32_zero offset=${4 * p} ${row})))) (local.get $dq))`;
    const step = kind === 'f32' ? 128 : 64; // one column of a 32-row unit
    const at = (j: number) => (4 * p + j) * step;
    if (kind === 'f32') {
      let v = `(f32x4.splat (f32.load offset=${at(0)} ${row}))`;
      for (let j = 1; j < 4; j++) v = `(f32x4.replace_lane ${j} ${v} (f32.load offset=${at(j)} ${row}))`;
      return v;
    }
    // 16-bit: each word into the top half of its lane (bf16 is then its f32)
    const word = (j: number) => `(i32.shl (i32.load16_u offset=${at(j)} ${row}) (i32.const 16))`;
    let v = `(i32x4.splat ${word(0)})`;
    for (let j = 1; j < 4; j++) v = `(i32x4.replace_lane ${j} ${v} ${word(j)})`;
    return kind === 'bf16' ? v : f16FromTop(v);
  }

  /**
   * Byte address of row $id's value in the first column of 32-column block $c, for kind K.
   * f32 / bf16 / f16: its unit (id & ~31)·rb, block c (32 columns of 32 rows: 4096 bytes f32,
   * 2048 16-bit), its panel in the column ((id >> 3) & 3: 32 or 16 bytes apart), then the row in
   * the panel (f32: 4 bytes apart; 16-bit: word 2j for rows j < 4, 2(j − 4) + 1 for the rest). q8: its panel (id & ~3)·rb, block c (4 rows' worth, 128 bytes),
   * the row within the panel (32 bytes apart).
   */
  private rowBlock(kind: MatKind): string {
    if (kind === 'q8')
      return `(i32.add (i32.add (local.get $tab) (i32.mul (i32.and (local.get $id) (i32.const -4)) (local.get $rb)))
          (i32.add (i32.shl (local.get $c) (i32.const 7)) (i32.shl (i32.and (local.get $id) (i32.const 3)) (i32.const 5))))`;
    const j = '(i32.and (local.get $id) (i32.const 7))';
    const panel = `(i32.and (i32.shr_u (local.get $id) (i32.const 3)) (i32.const 3))`;
    const lane =
      kind === 'f32'
        ? `(i32.add (i32.shl ${panel} (i32.const 5)) (i32.shl ${j} (i32.const 2)))`
        : `(i32.add (i32.shl ${panel} (i32.const 4)) (i32.shl (i32.or (i32.shl (i32.and (local.get $id) (i32.const 3)) (i32.const 1)) (i32.shr_u ${j} (i32.const 2))) (i32.const 1)))`;
    return `(i32.add (i32.add (local.get $tab) (i32.mul (i32.and (local.get $id) (i32.const -32)) (local.get $rb)))
          (i32.add (i32.mul (local.get $c) (i32.const ${kind === 'f32' ? 4096 : 2048})) ${lane}))`;
  }

  /** WAT: local $dq = splat of the q8 scale of row $id, block $c (scales [blocks][rows] at $sc, $ss apart). */
  private q8Scale(): string {
    return `(local.set $dq (f32x4.splat (f32.load (i32.add (i32.add (local.get $sc) (i32.mul (local.get $c) (local.get $ss))) (i32.shl (local.get $id) (i32.const 2))))))`;
  }

  /**
   * gather_K (a: tab, rb, sc, ss, ids, out, os, nb): out row i = row ids[i] widened (f32 exactly
   * as stored; bf16/f16 exact; q8 f32(q)·d, one rounding), for ids [s, e). Ids are checked by the
   * caller.
   */
  gather(kind: MatKind): string {
    return `(func (export "gather_${kind}") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $tab i32) (local $rb i32) (local $sc i32) (local $ss i32) (local $ids i32) (local $out i32) (local $os i32) (local $nb i32)
    (local $i i32) (local $id i32) (local $c i32) (local $row i32) (local $dst i32) (local $dq v128) (local $h v128)
    (local.set $tab ${arg(0)}) (local.set $rb ${arg(1)}) (local.set $sc ${arg(2)}) (local.set $ss ${arg(3)})
    (local.set $ids ${arg(4)}) (local.set $out ${arg(5)}) (local.set $os ${arg(6)}) (local.set $nb ${arg(7)})
    (local.set $i (local.get $s))
    (block $di (loop $li
      (br_if $di (i32.ge_u (local.get $i) (local.get $e)))
      (local.set $id (i32.load (i32.add (local.get $ids) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $c (i32.const 0))
      (block $dc (loop $lc
        (br_if $dc (i32.ge_u (local.get $c) (local.get $nb)))
        (local.set $row ${this.rowBlock(kind)})
        (local.set $dst (i32.add (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $os))) (i32.shl (local.get $c) (i32.const 7))))
        ${kind === 'q8' ? this.q8Scale() : ''}
        ${[0, 1, 2, 3, 4, 5, 6, 7].map((p) => `(v128.store offset=${16 * p} (local.get $dst) ${this.widen4(kind, '(local.get $row)', p)})`).join('\n        ')}
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $lc)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $li)))
  )`;
  }

  /**
   * mix_K (a: tab, rb, sc, ss, ids, wts, K, M, out, os): out row m = Σ_k wts[m, k] · row ids[m, k]
   * (widened as gather_K), k in order, multiply then add on both paths (acc starts at 0), over
   * the 32-column blocks [s, e) of every out row.
   */
  mix(kind: MatKind): string {
    return `(func (export "mix_${kind}") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $tab i32) (local $rb i32) (local $sc i32) (local $ss i32) (local $ids i32) (local $wts i32) (local $K i32) (local $M i32) (local $out i32) (local $os i32)
    (local $mi i32) (local $k i32) (local $id i32) (local $c i32) (local $row i32) (local $dst i32) (local $wv v128) (local $dq v128) (local $h v128)
    ${[0, 1, 2, 3, 4, 5, 6, 7].map((p) => `(local $y${p} v128)`).join(' ')}
    (local.set $tab ${arg(0)}) (local.set $rb ${arg(1)}) (local.set $sc ${arg(2)}) (local.set $ss ${arg(3)})
    (local.set $ids ${arg(4)}) (local.set $wts ${arg(5)}) (local.set $K ${arg(6)}) (local.set $M ${arg(7)}) (local.set $out ${arg(8)}) (local.set $os ${arg(9)})
    (block $dm (loop $lm
      (br_if $dm (i32.ge_u (local.get $mi) (local.get $M)))
      (local.set $c (local.get $s))
      (block $dc (loop $lc
        (br_if $dc (i32.ge_u (local.get $c) (local.get $e)))
        ${[0, 1, 2, 3, 4, 5, 6, 7].map((p) => `(local.set $y${p} (v128.const i32x4 0 0 0 0))`).join(' ')}
        (local.set $k (i32.const 0))
        (block $dk (loop $lk
          (br_if $dk (i32.ge_u (local.get $k) (local.get $K)))
          (local.set $id (i32.load (i32.add (local.get $ids) (i32.shl (i32.add (i32.mul (local.get $mi) (local.get $K)) (local.get $k)) (i32.const 2)))))
          (local.set $wv (v128.load32_splat (i32.add (local.get $wts) (i32.shl (i32.add (i32.mul (local.get $mi) (local.get $K)) (local.get $k)) (i32.const 2)))))
          (local.set $row ${this.rowBlock(kind)})
          ${kind === 'q8' ? this.q8Scale() : ''}
          ${[0, 1, 2, 3, 4, 5, 6, 7].map((p) => `(local.set $y${p} (f32x4.add (local.get $y${p}) (f32x4.mul (local.get $wv) ${this.widen4(kind, '(local.get $row)', p)})))`).join('\n          ')}
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $lk)))
        (local.set $dst (i32.add (i32.add (local.get $out) (i32.mul (local.get $mi) (local.get $os))) (i32.shl (local.get $c) (i32.const 7))))
        ${[0, 1, 2, 3, 4, 5, 6, 7].map((p) => `(v128.store offset=${16 * p} (local.get $dst) (local.get $y${p}))`).join(' ')}
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $lc)))
      (local.set $mi (i32.add (local.get $mi) (i32.const 1)))
      (br $lm)))
  )`;
  }

  /**
   * prefill_attn (a: q, k, v, qs, ks, vs, keys, valsT, tables, out, scratch, scratchStride, B, T,
   * nH, nKV, D, S, window, —, cap (f64 at word 20)): kernels.wat's prefill_attention (see
   * kernelsPrefillAttention) for one (row b, query head hq) a unit, u = b·nH + hq: row b's q head
   * hq, its kv head hq / (nH / nKV) of k and v (row strides qs, ks, vs floats), the unit's own
   * table row (tables + u·(S + 2)·4: cache row·nKV + kv head, start, slot positions), out [B][nH][T][D],
   * this thread's scratch (4·(S + T) + D + 72 f32).
   */
  prefillAttn(): string {
    return `(func (export "prefill_attn") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $u i32) (local $b i32) (local $hq i32) (local $kvh i32) (local $T i32) (local $nH i32) (local $G i32) (local $D i32) (local $S i32) (local $bt i32)
    (local.set $T ${arg(13)}) (local.set $nH ${arg(14)}) (local.set $D ${arg(16)}) (local.set $S ${arg(17)})
    (local.set $G (i32.div_u (local.get $nH) ${arg(15)}))
    (local.set $u (local.get $s))
    (block $du (loop $lu
      (br_if $du (i32.ge_u (local.get $u) (local.get $e)))
      (local.set $b (i32.div_u (local.get $u) (local.get $nH)))
      (local.set $hq (i32.rem_u (local.get $u) (local.get $nH)))
      (local.set $kvh (i32.div_u (local.get $hq) (local.get $G)))
      (local.set $bt (i32.mul (local.get $b) (local.get $T)))
      (call $k_prefill_attention
        (i32.add ${arg(0)} (i32.shl (i32.add (i32.mul (local.get $bt) ${arg(3)}) (i32.mul (local.get $hq) (local.get $D))) (i32.const 2)))
        (i32.add ${arg(1)} (i32.shl (i32.add (i32.mul (local.get $bt) ${arg(4)}) (i32.mul (local.get $kvh) (local.get $D))) (i32.const 2)))
        (i32.add ${arg(2)} (i32.shl (i32.add (i32.mul (local.get $bt) ${arg(5)}) (i32.mul (local.get $kvh) (local.get $D))) (i32.const 2)))
        ${arg(3)} ${arg(4)} ${arg(5)} ${arg(6)} ${arg(7)}
        (i32.add ${arg(8)} (i32.shl (i32.mul (local.get $u) (i32.add (local.get $S) (i32.const 2))) (i32.const 2)))
        (i32.add ${arg(9)} (i32.shl (i32.mul (i32.mul (local.get $u) (local.get $T)) (local.get $D)) (i32.const 2)))
        (i32.add ${arg(10)} (i32.mul (local.get $t) ${arg(11)}))
        (i32.const 1) (local.get $T) (i32.const 1) (i32.const 1) (local.get $D) (local.get $S) ${arg(18)}
        (f64.load offset=80 (local.get $a)))
      (local.set $u (i32.add (local.get $u) (i32.const 1)))
      (br $lu)))
  )`;
  }

  // ---- attention ----

  /**
   * $exp(x) in f64: n = nearest(x·log2 e), r = (x − n·ln2_hi) − n·ln2_lo, a degree-11 Taylor
   * polynomial in r (Horner, 1/k! constants), times 2^n from its exponent bits. x < −708 (and
   * −inf) gives 0, NaN stays NaN. Only x ≤ 0 occurs here.
   */
  expF64(): string {
    const c = [];
    let f = 1;
    for (let k = 0; k <= 11; k++) {
      if (k > 0) f *= k;
      c.push(1 / f);
    }
    const horner = c
      .slice(0, 11)
      .reverse()
      .map((v) => `(local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const ${v})))`)
      .join('\n    ');
    return `(func $exp (param $x f64) (result f64) (local $n f64) (local $r f64) (local $p f64)
    (if (f64.lt (local.get $x) (f64.const -708)) (then (return (f64.const 0))))
    (if (f64.ne (local.get $x) (local.get $x)) (then (return (local.get $x))))
    (local.set $n (f64.nearest (f64.mul (local.get $x) (f64.const 1.4426950408889634))))
    (local.set $r (f64.sub (f64.sub (local.get $x) (f64.mul (local.get $n) (f64.const 0.6931471803691238)))
      (f64.mul (local.get $n) (f64.const 1.9082149292705877e-10))))
    (local.set $p (f64.const ${c[11]}))
    ${horner}
    (f64.mul (local.get $p) (f64.reinterpret_i64 (i64.shl (i64.add (i64.trunc_f64_s (local.get $n)) (i64.const 1023)) (i64.const 52)))))`;
  }

  /**
   * $dot(a, b, n): Σ a[i]·b[i] over n f32 (n a multiple of 4): one f32x4 accumulator, fma per
   * 4 values in order, then (l0 + l1) + (l2 + l3).
   */
  dotF32(): string {
    return `(func $dot (param $a i32) (param $b i32) (param $n i32) (result f32) (local $acc v128) (local $i i32)
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $acc ${this.fma('(v128.load (local.get $a))', '(v128.load (local.get $b))', '(local.get $acc)')})
      (local.set $a (i32.add (local.get $a) (i32.const 16)))
      (local.set $b (i32.add (local.get $b) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l)))
    ${hsum('$acc')})`;
  }

  /**
   * attention (a: q, keys, valsT, slotPos, qinfo, out, nH, nKV, S, D, window, cap(f32), scratch,
   * scratchStride): per unit u = i·nH + h in [s, e): query row i (cache row crow = qinfo[2i],
   * position qpos = qinfo[2i + 1]), head h (kv head h / (nH / nKV)); q and out [rows][nH][D],
   * keys [Bc][nKV][S][D], valsT [Bc][nKV][D][S], slotPos [Bc][S] (the position each slot holds,
   * −1 empty). S and D multiples of 4.
   *
   * Slot j is seen when 0 ≤ pos_j ≤ qpos and (window = 0 or qpos − pos_j < window). Scores
   * s_j = $dot(q, k_j) (the scale folded into q), softcapped if cap > 0 (cap·tanh(s/cap), in f64,
   * rounded to f32); m = max; e_j = f32($exp(f64(s_j − m))) (f32 subtraction), unseen 0; sum =
   * Σ f64(e_j) in slot order; p_j = f32(e_j / sum); out[d] = $dot(p, valsT[d]). A query seeing no
   * slot gets zeros. Scores go to this thread's scratch (scratch + t·scratchStride, S f32).
   */
  attention(): string {
    return `(func (export "attention") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $q i32) (local $keys i32) (local $vals i32) (local $slots i32) (local $qinfo i32) (local $out i32)
    (local $nH i32) (local $nKV i32) (local $S i32) (local $D i32) (local $win i32) (local $cap f32) (local $sc i32)
    (local $u i32) (local $i i32) (local $h i32) (local $crow i32) (local $qpos i32) (local $kb i32) (local $vb i32) (local $sp i32)
    (local $qp i32) (local $op i32) (local $j i32) (local $pos i32) (local $v f32) (local $mx f32) (local $any i32) (local $sum f64) (local $ev f64) (local $d i32) (local $y f64)
    (local.set $q ${arg(0)}) (local.set $keys ${arg(1)}) (local.set $vals ${arg(2)}) (local.set $slots ${arg(3)}) (local.set $qinfo ${arg(4)})
    (local.set $out ${arg(5)}) (local.set $nH ${arg(6)}) (local.set $nKV ${arg(7)}) (local.set $S ${arg(8)}) (local.set $D ${arg(9)})
    (local.set $win ${arg(10)}) (local.set $cap ${argf(11)})
    (local.set $sc (i32.add ${arg(12)} (i32.mul (local.get $t) ${arg(13)})))
    (local.set $u (local.get $s))
    (block $du (loop $lu
      (br_if $du (i32.ge_u (local.get $u) (local.get $e)))
      (local.set $i (i32.div_u (local.get $u) (local.get $nH)))
      (local.set $h (i32.rem_u (local.get $u) (local.get $nH)))
      (local.set $crow (i32.load (i32.add (local.get $qinfo) (i32.shl (local.get $i) (i32.const 3)))))
      (local.set $qpos (i32.load offset=4 (i32.add (local.get $qinfo) (i32.shl (local.get $i) (i32.const 3)))))
      ;; kv head h / G, G = nH / nKV
      (local.set $kb (i32.add (i32.mul (local.get $crow) (local.get $nKV)) (i32.div_u (local.get $h) (i32.div_u (local.get $nH) (local.get $nKV)))))
      (local.set $vb (i32.add (local.get $vals) (i32.shl (i32.mul (i32.mul (local.get $kb) (local.get $D)) (local.get $S)) (i32.const 2))))
      (local.set $kb (i32.add (local.get $keys) (i32.shl (i32.mul (i32.mul (local.get $kb) (local.get $S)) (local.get $D)) (i32.const 2))))
      (local.set $sp (i32.add (local.get $slots) (i32.shl (i32.mul (local.get $crow) (local.get $S)) (i32.const 2))))
      (local.set $qp (i32.add (local.get $q) (i32.shl (i32.mul (local.get $u) (local.get $D)) (i32.const 2))))
      (local.set $op (i32.add (local.get $out) (i32.shl (i32.mul (local.get $u) (local.get $D)) (i32.const 2))))
      ;; pass 1: scores, the max
      (local.set $mx (f32.const -inf))
      (local.set $any (i32.const 0))
      (local.set $j (i32.const 0))
      (block $d1 (loop $l1
        (br_if $d1 (i32.ge_u (local.get $j) (local.get $S)))
        (local.set $pos (i32.load (i32.add (local.get $sp) (i32.shl (local.get $j) (i32.const 2)))))
        (if (i32.and (i32.and (i32.ge_s (local.get $pos) (i32.const 0)) (i32.le_s (local.get $pos) (local.get $qpos)))
              (i32.or (i32.eqz (local.get $win)) (i32.lt_s (i32.sub (local.get $qpos) (local.get $pos)) (local.get $win))))
          (then
            (local.set $v (call $dot (local.get $qp) (i32.add (local.get $kb) (i32.shl (i32.mul (local.get $j) (local.get $D)) (i32.const 2))) (local.get $D)))
            (if (f32.gt (local.get $cap) (f32.const 0)) (then
              (local.set $y (f64.div (f64.promote_f32 (local.get $v)) (f64.promote_f32 (local.get $cap))))
              (local.set $v (f32.demote_f64 (f64.mul (f64.promote_f32 (local.get $cap)) (call $tanh (local.get $y)))))))
            (if (f32.gt (local.get $v) (local.get $mx)) (then (local.set $mx (local.get $v))))
            (local.set $any (i32.const 1)))
          (else (local.set $v (f32.const -inf))))
        (f32.store (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2))) (local.get $v))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $l1)))
      (if (i32.eqz (local.get $any))
        (then
          (local.set $d (i32.const 0))
          (block $dz (loop $lz
            (br_if $dz (i32.ge_u (local.get $d) (local.get $D)))
            (f32.store (i32.add (local.get $op) (i32.shl (local.get $d) (i32.const 2))) (f32.const 0))
            (local.set $d (i32.add (local.get $d) (i32.const 1)))
            (br $lz))))
        (else
          ;; pass 2: e_j and their sum; pass 3: p_j
          (local.set $sum (f64.const 0))
          (local.set $j (i32.const 0))
          (block $d2 (loop $l2
            (br_if $d2 (i32.ge_u (local.get $j) (local.get $S)))
            (local.set $v (f32.load (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2)))))
            (local.set $v (if (result f32) (f32.eq (local.get $v) (f32.const -inf)) (then (f32.const 0))
              (else (f32.demote_f64 (call $exp (f64.promote_f32 (f32.sub (local.get $v) (local.get $mx))))))))
            (f32.store (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2))) (local.get $v))
            (local.set $sum (f64.add (local.get $sum) (f64.promote_f32 (local.get $v))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $l2)))
          (local.set $j (i32.const 0))
          (block $d3 (loop $l3
            (br_if $d3 (i32.ge_u (local.get $j) (local.get $S)))
            (local.set $ev (f64.promote_f32 (f32.load (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2))))))
            (f32.store (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2))) (f32.demote_f64 (f64.div (local.get $ev) (local.get $sum))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $l3)))
          ;; pass 4: out[d] = p · valsT[d]
          (local.set $d (i32.const 0))
          (block $d4 (loop $l4
            (br_if $d4 (i32.ge_u (local.get $d) (local.get $D)))
            (f32.store (i32.add (local.get $op) (i32.shl (local.get $d) (i32.const 2)))
              (call $dot (local.get $sc) (i32.add (local.get $vb) (i32.shl (i32.mul (local.get $d) (local.get $S)) (i32.const 2))) (local.get $S)))
            (local.set $d (i32.add (local.get $d) (i32.const 1)))
            (br $l4)))))
      (local.set $u (i32.add (local.get $u) (i32.const 1)))
      (br $lu)))
  )
  ;; tanh(y) = sign(y)·(1 − e)/(1 + e), e = $exp(−2|y|)
  (func $tanh (param $y f64) (result f64) (local $e f64)
    (local.set $e (call $exp (f64.mul (f64.const -2) (f64.abs (local.get $y)))))
    (f64.copysign (f64.div (f64.sub (f64.const 1) (local.get $e)) (f64.add (f64.const 1) (local.get $e))) (local.get $y)))`;
  }

  /**
   * split_heads (a: qkv, qkvs, nH, nKV, D, qOut, keys, valsT, S, rowInfo, cos, sin, qNorm, kNorm,
   * eps(f32)): per unit u = n·(nH + nKV) + h in [s, e), n a row of the fused projection qkv (row
   * n at qkv + n·qkvs: nH q heads, nKV k heads, nKV v heads of D f32). h < nH: q head h →
   * qOut [n][nH][D]; else kv head g = h − nH: k → keys[crow][g][slot], v → valsT[crow][g][·][slot]
   * (rowInfo [n] = crow, slot). q and k heads are RMS-normed first if qNorm / kNorm (f32 [D], 0 =
   * none): ss = Σ x² (f32x4 lanes, multiply then add, (l0 + l1) + (l2 + l3)), r = 1/sqrt(ss/D + eps),
   * x·r·w; then rotated if cos (0 = none; cos, sin [n][D]): rotate-half, out[i] = x[i]·cos[i] −
   * x[i+D/2]·sin[i], out[i+D/2] = x[i+D/2]·cos[i+D/2] + x[i]·sin[i+D/2] (multiply, multiply, then
   * subtract or add; D a multiple of 8).
   */
  splitHeads(): string {
    return `(func (export "split_heads") (param $a i32) (param $s i32) (param $e i32) (param $t i32)
    (local $qkv i32) (local $qkvs i32) (local $nH i32) (local $nKV i32) (local $D i32) (local $qo i32) (local $keys i32) (local $vals i32) (local $S i32)
    (local $ri i32) (local $cos i32) (local $sin i32) (local $qn i32) (local $kn i32) (local $eps f32)
    (local $u i32) (local $n i32) (local $h i32) (local $src i32) (local $dst i32) (local $nw i32) (local $crow i32) (local $slot i32)
    (local $i i32) (local $half i32) (local $acc v128) (local $r f32) (local $x v128) (local $y v128) (local $cp i32) (local $sp i32) (local $vd i32) (local $g i32)
    (local.set $qkv ${arg(0)}) (local.set $qkvs ${arg(1)}) (local.set $nH ${arg(2)}) (local.set $nKV ${arg(3)}) (local.set $D ${arg(4)})
    (local.set $qo ${arg(5)}) (local.set $keys ${arg(6)}) (local.set $vals ${arg(7)}) (local.set $S ${arg(8)}) (local.set $ri ${arg(9)})
    (local.set $cos ${arg(10)}) (local.set $sin ${arg(11)}) (local.set $qn ${arg(12)}) (local.set $kn ${arg(13)}) (local.set $eps ${argf(14)})
    (local.set $half (i32.shr_u (local.get $D) (i32.const 1)))
    (local.set $u (local.get $s))
    (block $du (loop $lu
      (br_if $du (i32.ge_u (local.get $u) (local.get $e)))
      (local.set $n (i32.div_u (local.get $u) (i32.add (local.get $nH) (local.get $nKV))))
      (local.set $h (i32.rem_u (local.get $u) (i32.add (local.get $nH) (local.get $nKV))))
      (local.set $crow (i32.load (i32.add (local.get $ri) (i32.shl (local.get $n) (i32.const 3)))))
      (local.set $slot (i32.load offset=4 (i32.add (local.get $ri) (i32.shl (local.get $n) (i32.const 3)))))
      (local.set $src (i32.add (i32.add (local.get $qkv) (i32.mul (local.get $n) (local.get $qkvs))) (i32.shl (i32.mul (local.get $h) (local.get $D)) (i32.const 2))))
      (if (i32.lt_u (local.get $h) (local.get $nH))
        (then
          (local.set $dst (i32.add (local.get $qo) (i32.shl (i32.mul (i32.add (i32.mul (local.get $n) (local.get $nH)) (local.get $h)) (local.get $D)) (i32.const 2))))
          (local.set $nw (local.get $qn)))
        (else
          (local.set $g (i32.sub (local.get $h) (local.get $nH)))
          (local.set $dst (i32.add (local.get $keys) (i32.shl (i32.mul (i32.add (i32.mul (i32.add (i32.mul (local.get $crow) (local.get $nKV)) (local.get $g)) (local.get $S)) (local.get $slot)) (local.get $D)) (i32.const 2))))
          (local.set $nw (local.get $kn))
          ;; v: head nH + nKV + g of the row, to valsT[crow][g][d][slot]
          (local.set $vd (i32.add (local.get $vals) (i32.shl (i32.add (i32.mul (i32.mul (i32.add (i32.mul (local.get $crow) (local.get $nKV)) (local.get $g)) (local.get $D)) (local.get $S)) (local.get $slot)) (i32.const 2))))
          (local.set $i (i32.const 0))
          (block $dv (loop $lv
            (br_if $dv (i32.ge_u (local.get $i) (local.get $D)))
            (f32.store (i32.add (local.get $vd) (i32.shl (i32.mul (local.get $i) (local.get $S)) (i32.const 2)))
              (f32.load (i32.add (i32.add (local.get $src) (i32.shl (i32.mul (local.get $nKV) (local.get $D)) (i32.const 2))) (i32.shl (local.get $i) (i32.const 2)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $lv)))))
      ;; the head (q or k) to dst: copied, normed, rotated in place there
      (local.set $i (i32.const 0))
      (block $dcp (loop $lcp
        (br_if $dcp (i32.ge_u (local.get $i) (local.get $D)))
        (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2))) (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $lcp)))
      (if (local.get $nw) (then
        (local.set $acc (v128.const i32x4 0 0 0 0))
        (local.set $i (i32.const 0))
        (block $dss (loop $lss
          (br_if $dss (i32.ge_u (local.get $i) (local.get $D)))
          (local.set $x (v128.load (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))))
          (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (local.get $x) (local.get $x))))
          (local.set $i (i32.add (local.get $i) (i32.const 4)))
          (br $lss)))
        (local.set $r (f32.div (f32.const 1) (f32.sqrt (f32.add (f32.div ${hsum('$acc')} (f32.convert_i32_u (local.get $D))) (local.get $eps)))))
        (local.set $i (i32.const 0))
        (block $dnm (loop $lnm
          (br_if $dnm (i32.ge_u (local.get $i) (local.get $D)))
          (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
            (f32x4.mul (f32x4.mul (v128.load (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))) (f32x4.splat (local.get $r)))
              (v128.load (i32.add (local.get $nw) (i32.shl (local.get $i) (i32.const 2))))))
          (local.set $i (i32.add (local.get $i) (i32.const 4)))
          (br $lnm)))))
      (if (local.get $cos) (then
        (local.set $cp (i32.add (local.get $cos) (i32.shl (i32.mul (local.get $n) (local.get $D)) (i32.const 2))))
        (local.set $sp (i32.add (local.get $sin) (i32.shl (i32.mul (local.get $n) (local.get $D)) (i32.const 2))))
        (local.set $i (i32.const 0))
        (block $dro (loop $lro
          (br_if $dro (i32.ge_u (local.get $i) (local.get $half)))
          (local.set $x (v128.load (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))))
          (local.set $y (v128.load (i32.add (local.get $dst) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2)))))
          (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
            (f32x4.sub (f32x4.mul (local.get $x) (v128.load (i32.add (local.get $cp) (i32.shl (local.get $i) (i32.const 2)))))
              (f32x4.mul (local.get $y) (v128.load (i32.add (local.get $sp) (i32.shl (local.get $i) (i32.const 2)))))))
          (v128.store (i32.add (local.get $dst) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2)))
            (f32x4.add (f32x4.mul (local.get $y) (v128.load (i32.add (local.get $cp) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2)))))
              (f32x4.mul (local.get $x) (v128.load (i32.add (local.get $sp) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 4)))
          (br $lro)))))
      (local.set $u (i32.add (local.get $u) (i32.const 1)))
      (br $lu)))
  )`;
  }

  // ---- self-tests and the empty job ----

  selfTests(): string {
    return `(func (export "selftest_dot") (param $a i32) (param $b i32) (param $c i32) (result i32) (local $da v128) (local $db v128) (local $dl v128) (local $dh v128)
    (i32x4.extract_lane 0 ${this.dot8('(i8x16.splat (local.get $a))', '(i8x16.splat (local.get $b))', '(i32x4.splat (local.get $c))')}))
  (func (export "selftest_dot_mem") (param $p i32) (param $q i32) (param $r i32) (result i32) (local $v v128) (local $da v128) (local $db v128) (local $dl v128) (local $dh v128)
    (local.set $v ${this.dot8('(v128.load (local.get $p))', '(v128.load (local.get $q))', '(v128.load (local.get $r))')})
    (i32.add (i32.add (i32x4.extract_lane 0 (local.get $v)) (i32x4.extract_lane 1 (local.get $v)))
      (i32.add (i32x4.extract_lane 2 (local.get $v)) (i32x4.extract_lane 3 (local.get $v)))))
  (func (export "selftest_madd") (param $a f32) (param $b f32) (param $c f32) (result f32)
    (f32x4.extract_lane 0 ${this.fma('(f32x4.splat (local.get $a))', '(f32x4.splat (local.get $b))', '(f32x4.splat (local.get $c))')}))
  (func (export "noop") (param $a i32) (param $s i32) (param $e i32) (param $t i32))
  ;; The job's claim word at addr (i64): generation (high 32 bits), chunk count (bits 16-31), next
  ;; chunk (bits 0-15). claim takes the next chunk of job gen, or returns -1 if the word is another
  ;; job's or every chunk is taken (compare-and-swap: a thread that slept through jobs cannot take a
  ;; chunk of a later one).
  (func (export "claim") (param $addr i32) (param $gen i32) (result i32) (local $old i64)
    (loop $retry
      (local.set $old (i64.atomic.load (local.get $addr)))
      (if (i32.ne (i32.wrap_i64 (i64.shr_u (local.get $old) (i64.const 32))) (local.get $gen)) (then (return (i32.const -1))))
      (if (i64.ge_u (i64.and (local.get $old) (i64.const 0xffff)) (i64.and (i64.shr_u (local.get $old) (i64.const 16)) (i64.const 0xffff)))
        (then (return (i32.const -1))))
      (br_if $retry (i64.ne (i64.atomic.rmw.cmpxchg (local.get $addr) (local.get $old) (i64.add (local.get $old) (i64.const 1))) (local.get $old))))
    (i32.wrap_i64 (i64.and (local.get $old) (i64.const 0xffff))))
  (func (export "claim_init") (param $addr i32) (param $gen i32) (param $n i32)
    (i64.atomic.store (local.get $addr) (i64.or (i64.shl (i64.extend_i32_u (local.get $gen)) (i64.const 32)) (i64.shl (i64.extend_i32_u (local.get $n)) (i64.const 16)))))`;
  }
}

/** The job kernels every module variant exports (pool.ts dispatches by index into this list). */
export const JOB_KERNELS = [
  'noop',
  'mm_f32',
  'mm_bf16',
  'mm_f16',
  'mm_q8x8',
  'mm_q8x16',
  'quant_x8',
  'quant_x16',
  'gather_f32',
  'gather_bf16',
  'gather_f16',
  'gather_q8',
  'mix_f32',
  'mix_bf16',
  'mix_f16',
  'mix_q8',
  'attention',
  'split_heads',
  'prefill_attn',
] as const;
export type JobKernel = (typeof JOB_KERNELS)[number];

/** A module with the self-tests only (tests compile it both ways to show the Liftoff trap). */
export function selfTestWat(simd: SimdPath): string {
  return `(module\n  (import "env" "memory" (memory 1 65536 shared))\n${new Gen(simd).selfTests()}\n)`;
}

/** The whole module's text for one SIMD path. */
export function threadsWat(simd: SimdPath): string {
  const g = new Gen(simd);
  const parts = [
    `;; moi thread-pool kernels, ${simd} path (generated by wat.ts; see its header)`,
    '(module',
    '  (import "env" "memory" (memory 1 65536 shared))',
  ];
  for (const kind of ['f32', 'bf16', 'f16'] as const) {
    for (const [X, R] of Object.entries(FLOAT_TILES)) parts.push(g.floatTile(kind, Number(X), R / FLOAT_PANEL));
    parts.push(g.floatMatmul(kind));
  }
  for (const [X, R] of Object.entries(Q8_TILES)) parts.push(g.q8Tile(Number(X), R));
  parts.push(g.q8Matmul(), g.q8x16Matmul(), g.quantize(8), g.quantize(16));
  for (const kind of MAT_KINDS) parts.push(g.gather(kind), g.mix(kind));
  parts.push(g.expF64(), g.dotF32(), g.attention(), g.splitHeads(), g.selfTests());
  parts.push(kernelsPrefillAttention(kernelsSource()), g.prefillAttn());
  parts.push(')');
  return parts.join('\n');
}

// ---- prefill attention: the single-thread kernel's own text, run per (row, query head) ----

/** kernels.wat's functions the prefill attention needs (itself included), renamed with a k_ prefix here. */
const KERNEL_FUNCS = ['exp', 'exp2', 'tanh', 'expSum', 'scale', 'dot4', 'axpy4'];

/**
 * The float GEMM tile `$tile_K_X_P` (X x rows × 8·P weight rows) as the pool's module has it, for
 * any shape (bench/fma-ceiling.ts measures shapes the pool does not use).
 */
export function floatTileText(simd: SimdPath, kind: Exclude<MatKind, 'q8'>, X: number, P: number): string {
  return new Gen(simd).floatTile(kind, X, P);
}

/** The text of the `(func …)` starting at `head` in WebAssembly text, parentheses balanced (`;;` comments skipped). */
function funcText(src: string, head: string): string {
  const start = src.indexOf(head);
  if (start < 0) throw new Error(`kernels.wat: no ${head}`);
  let depth = 0;
  for (let i = start; i < src.length; i++) {
    const ch = src[i];
    if (ch === ';' && src[i + 1] === ';') {
      i = src.indexOf('\n', i);
      if (i < 0) break;
    } else if (ch === '(') depth++;
    else if (ch === ')' && --depth === 0) return src.slice(start, i + 1);
  }
  throw new Error(`kernels.wat: ${head} is not closed`);
}

/**
 * kernels.wat's prefill_attention (the tfjs-side single-thread kernel, prefill-attention.ts) and
 * its helpers, as internal functions of this module: the same text, so the same instructions and
 * the same bits; its names prefixed k_ beside this module's own $exp / $tanh.
 */
export function kernelsPrefillAttention(src: string): string {
  const funcs = [
    ...KERNEL_FUNCS.map((f) => funcText(src, `(func $${f} `)),
    funcText(src, '(func (export "prefill_attention")').replace(
      '(func (export "prefill_attention")',
      '(func $k_prefill_attention',
    ),
  ];
  let text = funcs.join('\n');
  for (const f of KERNEL_FUNCS) text = text.replace(new RegExp(`\\$${f}(?![A-Za-z0-9_])`, 'g'), `$k_${f}`);
  return text;
}
