/**
 * The packed-weight kernels (bf16, f16, q8) as WebAssembly text, generated here rather than written
 * out by hand: every kind × tile shape is the same loop with a different widening step, so the
 * text is produced from one template per routine. module.ts assembles it (cached by the hash of
 * this text, like kernels.wat) and instantiates it over the wasm backend's heap.
 *
 * Routines (pointers are byte offsets into the backend heap; every kind `K` in bf16, f16, q8):
 *
 * - `matmul_K(w, s, x, out, N, rows, cols)` (bf16, f16; s unused): out [N, rows] = x [N, cols] · Wᵀ,
 *   W [rows, cols] packed, for few x rows (decode). Passes over 2 weight rows; each pass is read
 *   from memory once and dotted with every x row (see TILES); each weight vector is widened in
 *   registers once per tile. x comes de-interleaved by `deinterleave(x, dst, N, cols)` (see wideVec).
 * - `matmul_q8x16` and `quantize_x16`: q8's decode, integer dot products against x rounded to 16
 *   bits per block of 32 (see q8x16()).
 * - `gemm_K(w, s, x, out, N, rows, cols, panel)`: out = x · Wᵀ for many x rows (prefill; s: q8
 *   scales [rows, ceil(cols/32)], else unused; q8's x comes rounded by quantize_x16): 8 weight
 *   rows at a time widened into an f32 panel, then a broadcast-form 4×8 micro-kernel (see gemm()).
 * - `epilogue(out, N, rows, outScale, bias)`: out[n, j] = out[n, j] · outScale[j] + bias[j]
 *   (either pointer 0 = none), in the composite's order.
 * - `matmul_t_K(w, s, x, out, N, rows, cols, scratch)`: out [N, cols] = x [N, rows] · W
 *   (packedMatMulT), rows with all-zero x skipped, the others widened once and added (axpy).
 * - `widen_K(w, s, dst, cols)`: one row to f32 (packedRows).
 * - `axpy(y, a, src, cols)`: y += a · src.
 *
 * Arithmetic: f32 multiply then add (no fused multiply-add), as the composite's f32 matmul, up to
 * summation order (q8 decode: exact integer block sums times d_w · d_x). Widening is exact (equal to dtype.ts / dequantizeQ8 bit for bit):
 * - bf16: each 16-bit word in the top half of a 32-bit lane (a byte swizzle, or shl/and on
 *   de-interleaved x in the decode tiles) is the f32 bits.
 * - f16: the word in the top half, arithmetic shift right by 3 and mask (sign kept at bit 31,
 *   exponent and mantissa moved to f32's places) gives h's bits with f32's field positions but
 *   f16's exponent bias; times 2^112 rebiases normals and normalizes subnormals exactly. Words
 *   with exponent 31 come out as ±65536·(1 + m/1024); those (|f| ≥ 65536, above f16's largest
 *   finite 65504) get all exponent bits set: inf, or NaN with its payload.
 * - q8: a byte swizzle puts each int8 in the top byte of a lane; converted, that is q·2^24, and
 *   times the block's d·2^-24 gives q·d rounded once to f32, as dequantizeQ8 computes it (d·2^-24
 *   is exact unless d < 2^-102, far below any weight block's scale); the GEMM panel shifts the
 *   byte down (q exactly) and multiplies by d.
 */
import { f16FromTop, hsum } from './wat-text.ts';

export type WatKind = 'bf16' | 'f16' | 'q8';
export const PACKED_KINDS: readonly WatKind[] = ['bf16', 'f16', 'q8'];
/** The kinds whose decode tiles widen to f32 (q8 decodes through matmul_q8x16 instead). */
type WideKind = Exclude<WatKind, 'q8'>;

/**
 * A tile: X x rows × R weight rows, A accumulators per (weight row, x row), 32 columns a step.
 * Measured: more rows or x rows per tile make TurboFan schedule all of a step's loads first and
 * spill; many x rows go to gemm_K instead.
 */
interface Tile {
  X: number;
  R: number;
  A: number;
}
/** Weight rows per pass of matmul_K (each tile's R divides it). */
const PASS = 2;
const TILES: Record<WideKind, readonly Tile[]> = {
  // x de-interleaved (see wideVec); matmul_K runs for N < GEMM_MIN_ROWS (packed.ts) only
  bf16: [{ X: 1, R: 1, A: 2 }],
  f16: [{ X: 1, R: 1, A: 2 }],
};

/** Columns per step of the main loop: one q8 block, 8 f32x4 vectors per weight row. */
const STEP = 32; // = Q8_BLOCK (not imported: packed.ts imports this module's users)
const VECS = STEP / 4;

function bytesPerCol(kind: WatKind): number {
  return kind === 'q8' ? 1 : 2;
}

/** The i8x16.swizzle lane list that moves vector `part` of a 16-byte load into lane tops (255 = zero). */
function swizzleMask(kind: WatKind, part: number): string {
  const lanes: number[] = [];
  for (let k = 0; k < 4; k++) {
    if (kind === 'q8') lanes.push(255, 255, 255, 4 * part + k);
    else lanes.push(255, 255, 8 * part + 2 * k, 8 * part + 2 * k + 1);
  }
  return `(v128.const i8x16 ${lanes.map((b) => (b > 127 ? b - 256 : b)).join(' ')})`;
}

/** WAT expression: the 4 f32 of vector `part` of the 16-byte value `raw` (q8: times `ds` = d·2^-24 splat). */
function widenVec(kind: WatKind, raw: string, part: number, ds: string | null, mask = swizzleMask(kind, part)): string {
  const top = `(i8x16.swizzle ${raw} ${mask})`;
  if (kind === 'bf16') return top;
  if (kind === 'q8') return ds ? `(f32x4.mul (f32x4.convert_i32x4_s ${top}) ${ds})` : `(f32x4.convert_i32x4_s ${top})`;
  return f16FromTop(top);
}

/**
 * WAT expression: vector `part` of a wide tile's 16-byte load `raw`, by shifts and masks (each one
 * instruction that any of several ports runs; a swizzle competes with the multiplies for one), so
 * x comes de-interleaved (see deinterleave): the words in even columns are `raw << 16`, those in
 * odd columns `raw & 0xffff0000` ($m0): part 0 of load j is columns 8j + 0, 2, 4, 6, part 1
 * columns 8j + 1, 3, 5, 7.
 */
function wideVec(kind: WideKind, raw: string, part: number): string {
  const top = part % 2 === 0 ? `(i32x4.shl ${raw} (i32.const 16))` : `(v128.and ${raw} (local.get $m0))`;
  return kind === 'bf16' ? top : f16FromTop(top);
}

/** WAT expression: the f32 of the weight at byte address `addr` (q8: times the scalar `d`). */
function widenScalar(kind: WatKind, addr: string, d: string): string {
  if (kind === 'bf16') return `(f32.reinterpret_i32 (i32.shl (i32.load16_u ${addr}) (i32.const 16)))`;
  if (kind === 'f16') return `(call $f16 (i32.load16_u ${addr}))`;
  return `(f32.mul (f32.convert_i32_s (i32.load8_s ${addr})) ${d})`;
}

/**
 * WAT expression: 4 weights at byte address `addr` widened to an f32x4 (one 8-byte load for the
 * 16-bit kinds, 4 bytes for q8: q exactly, times the block's d at `scaleAddr`: q·d rounded once).
 */
function widen4(kind: WatKind, addr: string, mask: string, scaleAddr: string): string {
  const raw = kind === 'q8' ? `(v128.load32_zero ${addr})` : `(v128.load64_zero ${addr})`;
  const top = `(i8x16.swizzle ${raw} ${mask})`;
  if (kind === 'bf16') return top;
  if (kind === 'f16') return widenVec('f16', raw, 0, null, mask);
  return `(f32x4.mul (f32x4.convert_i32x4_s (i32x4.shr_s ${top} (i32.const 24))) (v128.load32_splat ${scaleAddr}))`;
}

/**
 * tile_K_X_R(w, rb, nr, x, xs, cols, o, os, zero): R weight rows from byte address w, rb bytes
 * apart (nr of them real; a short tile repeats its last), dotted with X x rows starting at x, xs
 * bytes apart; result (x row i, weight row r) goes to o + i·os + 4r. Main loop: 32 columns a
 * step; then a scalar tail for cols mod 32.
 */
function tile(kind: WideKind, { X, R, A }: Tile): string {
  const bpc = bytesPerCol(kind);
  const loads = (STEP * bpc) / 16; // 16-byte loads per weight row per step
  const parts = VECS / loads; // f32x4 vectors per load
  const L: string[] = [];
  const acc = (r: number, i: number, a: number) => `$a${r}_${i}_${a}`;
  const locals: string[] = ['(local $c i32) (local $end i32) (local $xv v128) (local $xq f32) (local $h v128)'];
  locals.push('(local $m0 v128)');
  for (let r = 0; r < R; r++)
    locals.push(`(local $raw${r} v128) (local $f${r} v128) (local $wp${r} i32) (local $g${r} f32)`);
  for (let i = 0; i < X; i++) locals.push(`(local $xp${i} i32)`);
  for (let r = 0; r < R; r++)
    for (let i = 0; i < X; i++) {
      locals.push(`(local $t${r}_${i} f32)`);
      for (let a = 0; a < A; a++) locals.push(`(local ${acc(r, i, a)} v128)`);
    }
  for (let r = 0; r < R; r++) locals.push(`(local $rr${r} i32)`);
  L.push(`(func $tile_${kind}_${X}_${R} (param $w i32) (param $rb i32) (param $nr i32)`);
  L.push(`  (param $x i32) (param $xs i32) (param $cols i32) (param $o i32) (param $os i32) (param $zero i32)`);
  L.push(`  ${locals.join(' ')}`);
  // weight row r of the tile is min(r, nr − 1): a short last tile repeats its last row
  for (let r = 0; r < R; r++) {
    L.push(
      `  (local.set $rr${r} (select (i32.const ${r}) (i32.sub (local.get $nr) (i32.const 1)) (i32.lt_u (i32.const ${r}) (local.get $nr))))`,
    );
    L.push(`  (local.set $wp${r} (i32.add (local.get $w) (i32.mul (local.get $rr${r}) (local.get $rb))))`);
  }
  for (let i = 0; i < X; i++)
    L.push(`  (local.set $xp${i} (i32.add (local.get $x) (i32.mul (local.get $xs) (i32.const ${i}))))`);
  L.push(`  (local.set $end (i32.and (local.get $cols) (i32.const ${-STEP})))`);
  // the lane-top mask (wideVec), xor a splat of the caller's 0: not a constant to TurboFan, so it
  // stays in a register instead of being rebuilt in every step
  L.push(
    `  (local.set $m0 (v128.xor (v128.const i32x4 0xffff0000 0xffff0000 0xffff0000 0xffff0000) (i8x16.splat (local.get $zero))))`,
  );
  // main loop: 32 columns a step
  L.push(`  (block $done (loop $step`);
  L.push(`    (br_if $done (i32.ge_u (local.get $c) (local.get $end)))`);
  for (let j = 0; j < loads; j++) {
    for (let r = 0; r < R; r++) L.push(`    (local.set $raw${r} (v128.load offset=${16 * j} (local.get $wp${r})))`);
    for (let p = 0; p < parts; p++) {
      const v = j * parts + p;
      for (let r = 0; r < R; r++) L.push(`    (local.set $f${r} ${wideVec(kind, `(local.get $raw${r})`, p)})`);
      for (let i = 0; i < X; i++) {
        L.push(`    (local.set $xv (v128.load offset=${16 * v} (local.get $xp${i})))`);
        for (let r = 0; r < R; r++) {
          const a = acc(r, i, v % A);
          L.push(`    (local.set ${a} (f32x4.add (local.get ${a}) (f32x4.mul (local.get $f${r}) (local.get $xv))))`);
        }
      }
    }
  }
  for (let r = 0; r < R; r++) {
    L.push(`    (local.set $wp${r} (i32.add (local.get $wp${r}) (i32.const ${STEP * bpc})))`);
  }
  for (let i = 0; i < X; i++) L.push(`    (local.set $xp${i} (i32.add (local.get $xp${i}) (i32.const ${STEP * 4})))`);
  L.push(`    (local.set $c (i32.add (local.get $c) (i32.const ${STEP})))`);
  L.push(`    (br $step)))`);
  // scalar tail: the last cols mod 32 columns
  L.push(`  (block $tdone (loop $tail`);
  L.push(`    (br_if $tdone (i32.ge_u (local.get $c) (local.get $cols)))`);
  for (let r = 0; r < R; r++) L.push(`    (local.set $g${r} ${widenScalar(kind, `(local.get $wp${r})`, '')})`);
  for (let i = 0; i < X; i++) {
    L.push(`    (local.set $xq (f32.load (local.get $xp${i})))`);
    for (let r = 0; r < R; r++) {
      L.push(
        `    (local.set $t${r}_${i} (f32.add (local.get $t${r}_${i}) (f32.mul (local.get $g${r}) (local.get $xq))))`,
      );
    }
  }
  for (let r = 0; r < R; r++) L.push(`    (local.set $wp${r} (i32.add (local.get $wp${r}) (i32.const ${bpc})))`);
  for (let i = 0; i < X; i++) L.push(`    (local.set $xp${i} (i32.add (local.get $xp${i}) (i32.const 4)))`);
  L.push(`    (local.set $c (i32.add (local.get $c) (i32.const 1)))`);
  L.push(`    (br $tail)))`);
  // reduce and store: (x row i, weight row r) → o + i·os + r·dr
  for (let i = 0; i < X; i++) {
    for (let r = 0; r < R; r++) {
      const a0 = acc(r, i, 0);
      for (let a = 1; a < A; a += 1)
        L.push(`  (local.set ${a0} (f32x4.add (local.get ${a0}) (local.get ${acc(r, i, a)})))`);
      const addr = `(i32.add (i32.add (local.get $o) (i32.mul (local.get $os) (i32.const ${i}))) (i32.shl (local.get $rr${r}) (i32.const 2)))`;
      L.push(`  (f32.store ${addr} (f32.add ${hsum(a0)} (local.get $t${r}_${i})))`);
    }
  }
  L.push(`)`);
  return L.join('\n');
}

/** matmul_K: passes over 2 weight rows (the last may have 1); in each, x rows in tiles of 4, 2, 1. */
function matmul(kind: WideKind): string {
  const bpc = bytesPerCol(kind);
  const call = ({ X, R }: Tile, sub: number) => `(call $tile_${kind}_${X}_${R}
          (i32.add (local.get $wr) (i32.mul (local.get $rb) (i32.const ${sub}))) (local.get $rb)
          ${R === PASS ? '(local.get $nr)' : `(i32.const ${R})`}
          (i32.add (local.get $x) (i32.mul (local.get $n) (local.get $xs))) (local.get $xs) (local.get $cols)
          (i32.add (i32.add (local.get $op) (i32.mul (local.get $n) (local.get $os))) (i32.const ${4 * sub})) (local.get $os) (i32.const 0))`;
  const tiles = [...TILES[kind]]
    .sort((p, q) => q.X - p.X)
    .map((t) => {
      const calls = [];
      for (let sub = 0; sub < PASS; sub += t.R)
        calls.push(
          sub === 0 ? call(t, 0) : `(if (i32.gt_u (local.get $nr) (i32.const ${sub})) (then ${call(t, sub)}))`,
        );
      return `
      (block $d${t.X} (loop $l${t.X}
        (br_if $d${t.X} (i32.gt_u (i32.add (local.get $n) (i32.const ${t.X})) (local.get $N)))
        ${calls.join('\n        ')}
        (local.set $n (i32.add (local.get $n) (i32.const ${t.X})))
        (br $l${t.X})))`;
    })
    .join('');
  return `(func (export "matmul_${kind}") (param $w i32) (param $s i32) (param $x i32) (param $out i32)
    (param $N i32) (param $rows i32) (param $cols i32)
    (local $r i32) (local $nr i32) (local $n i32) (local $wr i32)
    (local $xs i32) (local $os i32) (local $op i32) (local $rb i32)
    (local.set $xs (i32.shl (local.get $cols) (i32.const 2)))
    (local.set $os (i32.shl (local.get $rows) (i32.const 2)))
    (local.set $rb (i32.mul (local.get $cols) (i32.const ${bpc})))
    (block $rdone (loop $rloop
      (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $nr (i32.sub (local.get $rows) (local.get $r)))
      (if (i32.gt_u (local.get $nr) (i32.const ${PASS})) (then (local.set $nr (i32.const ${PASS}))))
      (local.set $wr (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))))
      (local.set $op (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 2))))
      (local.set $n (i32.const 0))${tiles}
      (local.set $r (i32.add (local.get $r) (i32.const ${PASS})))
      (br $rloop)))
  )`;
}

/** widen_K(w, s, dst, cols): one row to f32, 32 columns a step then a scalar tail. */
function widenRow(kind: WatKind): string {
  const bpc = bytesPerCol(kind);
  const loads = (STEP * bpc) / 16;
  const parts = VECS / loads;
  const body: string[] = [];
  for (let j = 0; j < loads; j++) {
    body.push(`(local.set $raw (v128.load offset=${16 * j} (local.get $w)))`);
    for (let p = 0; p < parts; p++) {
      body.push(
        `(v128.store offset=${16 * (j * parts + p)} (local.get $dst) ${widenVec(kind, '(local.get $raw)', p, '(local.get $ds)')})`,
      );
    }
  }
  return `(func $widen_${kind} (export "widen_${kind}") (param $w i32) (param $s i32) (param $dst i32) (param $cols i32)
    (local $c i32) (local $end i32) (local $raw v128) (local $ds v128) (local $d f32) (local $h v128)
    (local.set $end (i32.and (local.get $cols) (i32.const ${-STEP})))
    (block $done (loop $step
      (br_if $done (i32.ge_u (local.get $c) (local.get $end)))
      ${kind === 'q8' ? '(local.set $ds (f32x4.splat (f32.mul (f32.load (local.get $s)) (f32.const 0x1p-24))))' : ''}
      ${body.join('\n      ')}
      (local.set $w (i32.add (local.get $w) (i32.const ${STEP * bpc})))
      ${kind === 'q8' ? '(local.set $s (i32.add (local.get $s) (i32.const 4)))' : ''}
      (local.set $dst (i32.add (local.get $dst) (i32.const ${STEP * 4})))
      (local.set $c (i32.add (local.get $c) (i32.const ${STEP})))
      (br $step)))
    ${kind === 'q8' ? '(if (i32.lt_u (local.get $c) (local.get $cols)) (then (local.set $d (f32.load (local.get $s)))))' : ''}
    (block $tdone (loop $tail
      (br_if $tdone (i32.ge_u (local.get $c) (local.get $cols)))
      (f32.store (local.get $dst) ${widenScalar(kind, '(local.get $w)', '(local.get $d)')})
      (local.set $w (i32.add (local.get $w) (i32.const ${bpc})))
      (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
      (local.set $c (i32.add (local.get $c) (i32.const 1)))
      (br $tail)))
  )`;
}

/**
 * gemm_K(w, s, x, out, N, rows, cols, panel): the same product for many x rows (prefill), in the
 * broadcast form of XNNPACK's f32 GEMM: for each block of 8 weight rows, the rows are widened once
 * into `panel` (f32 [cols, 8], column k's 8 values together), then
 * 4 x rows at a time run over it: per column k, the panel's two f32x4 of 8 outputs times x[n, k]
 * splat, into 4 × 2 accumulators (no horizontal sums). Columns go 4 a step, then singly.
 */
function gemm(kind: WatKind): string {
  const bpc = bytesPerCol(kind);
  const micro = (X: number) => {
    const L: string[] = [];
    const accs = (i: number) => [`$c${i}_0`, `$c${i}_1`];
    for (let i = 0; i < X; i++) for (const a of accs(i)) L.push(`(local.set ${a} (v128.const i32x4 0 0 0 0))`);
    for (let i = 0; i < X; i++)
      L.push(`(local.set $xp${i} (i32.add (local.get $xr) (i32.mul (local.get $xs) (i32.const ${i}))))`);
    L.push(`(local.set $pp (local.get $panel)) (local.set $k (i32.const 0))`);
    const body = (unroll: number) => {
      const B: string[] = [];
      for (let u = 0; u < unroll; u++) {
        B.push(`(local.set $p0 (v128.load offset=${32 * u} (local.get $pp)))`);
        B.push(`(local.set $p1 (v128.load offset=${32 * u + 16} (local.get $pp)))`);
        for (let i = 0; i < X; i++) {
          B.push(`(local.set $xv (v128.load32_splat offset=${4 * u} (local.get $xp${i})))`);
          const [a0, a1] = accs(i);
          B.push(`(local.set ${a0} (f32x4.add (local.get ${a0}) (f32x4.mul (local.get $p0) (local.get $xv))))`);
          B.push(`(local.set ${a1} (f32x4.add (local.get ${a1}) (f32x4.mul (local.get $p1) (local.get $xv))))`);
        }
      }
      B.push(`(local.set $pp (i32.add (local.get $pp) (i32.const ${32 * unroll})))`);
      for (let i = 0; i < X; i++) B.push(`(local.set $xp${i} (i32.add (local.get $xp${i}) (i32.const ${4 * unroll})))`);
      B.push(`(local.set $k (i32.add (local.get $k) (i32.const ${unroll})))`);
      return B.join('\n          ');
    };
    L.push(`(block $d4 (loop $l4
          (br_if $d4 (i32.gt_u (i32.add (local.get $k) (i32.const 4)) (local.get $cols)))
          ${body(4)}
          (br $l4)))`);
    L.push(`(block $d1 (loop $l1
          (br_if $d1 (i32.ge_u (local.get $k) (local.get $cols)))
          ${body(1)}
          (br $l1)))`);
    // store: the whole 8 outputs of each x row, or (last block) the lanes that exist
    for (let i = 0; i < X; i++) {
      const [a0, a1] = accs(i);
      const o = `(i32.add (local.get $orow) (i32.mul (local.get $os) (i32.const ${i})))`;
      L.push(`(if (i32.eq (local.get $nb) (i32.const 8))
          (then (v128.store ${o} (local.get ${a0})) (v128.store offset=16 ${o} (local.get ${a1})))
          (else
            ${[0, 1, 2, 3].map((l) => `(if (i32.gt_u (local.get $nb) (i32.const ${l})) (then (f32.store offset=${4 * l} ${o} (f32x4.extract_lane ${l} (local.get ${a0})))))`).join('\n            ')}
            ${[0, 1, 2, 3].map((l) => `(if (i32.gt_u (local.get $nb) (i32.const ${l + 4})) (then (f32.store offset=${4 * (l + 4)} ${o} (f32x4.extract_lane ${l} (local.get ${a1})))))`).join('\n            ')}))`);
    }
    return L.join('\n        ');
  };
  return `(func (export "gemm_${kind}") (param $w i32) (param $s i32) (param $x i32) (param $out i32)
    (param $N i32) (param $rows i32) (param $cols i32) (param $panel i32)
    (local $r i32) (local $k i32) (local $n i32) (local $nb i32) (local $dst i32)
    (local $xs i32) (local $os i32) (local $rb i32) (local $sb i32) (local $xr i32) (local $orow i32) (local $pp i32)
    (local $xp0 i32) (local $xp1 i32) (local $xp2 i32) (local $xp3 i32) (local $p0 v128) (local $p1 v128) (local $xv v128)
    (local $k4 i32) (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128) (local $v4 v128) (local $v5 v128) (local $v6 v128) (local $v7 v128)
    (local $e0 v128) (local $e1 v128) (local $e2 v128) (local $e3 v128) (local $h v128)
    (local $q0 i32) (local $q1 i32) (local $q2 i32) (local $q3 i32) (local $q4 i32) (local $q5 i32) (local $q6 i32) (local $q7 i32)
    (local $u0 i32) (local $u1 i32) (local $u2 i32) (local $u3 i32) (local $u4 i32) (local $u5 i32) (local $u6 i32) (local $u7 i32)
    (local $c0_0 v128) (local $c0_1 v128) (local $c1_0 v128) (local $c1_1 v128) (local $c2_0 v128) (local $c2_1 v128) (local $c3_0 v128) (local $c3_1 v128)
    (local.set $xs (i32.shl (local.get $cols) (i32.const 2)))
    (local.set $os (i32.shl (local.get $rows) (i32.const 2)))
    (local.set $rb (i32.mul (local.get $cols) (i32.const ${bpc})))
    (local.set $sb (i32.shl (i32.shr_u (i32.add (local.get $cols) (i32.const ${STEP - 1})) (i32.const 5)) (i32.const 2)))
    (block $rdone (loop $rloop
      (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $nb (i32.sub (local.get $rows) (local.get $r)))
      (if (i32.gt_u (local.get $nb) (i32.const 8)) (then (local.set $nb (i32.const 8))))
      ;; the panel: f32 [cols, 8], lane j of column k = weight row r + j at k. Rows past the last
      ;; repeat it (their lanes are never stored). 4 columns a step: each row's 4 values widened,
      ;; then two 4×4 transposes; the last cols mod 4 columns one value at a time.
      ${[0, 1, 2, 3, 4, 5, 6, 7]
        .map(
          (
            j,
          ) => `(local.set $q${j} (i32.add (local.get $r) (select (i32.const ${j}) (i32.sub (local.get $nb) (i32.const 1)) (i32.lt_u (i32.const ${j}) (local.get $nb)))))
      (local.set $u${j} (i32.add (local.get $s) (i32.mul (local.get $q${j}) (local.get $sb))))
      (local.set $q${j} (i32.add (local.get $w) (i32.mul (local.get $q${j}) (local.get $rb))))`,
        )
        .join('\n      ')}
      (local.set $k (i32.const 0))
      (local.set $dst (local.get $panel))
      (local.set $k4 (i32.and (local.get $cols) (i32.const -4)))
      (block $dk4 (loop $lk4
        (br_if $dk4 (i32.ge_u (local.get $k) (local.get $k4)))
        ${[0, 1, 2, 3, 4, 5, 6, 7].map((j) => `(local.set $v${j} ${widen4(kind, `(local.get $q${j})`, swizzleMask(kind, 0), `(i32.add (local.get $u${j}) (i32.shl (i32.shr_u (local.get $k) (i32.const 5)) (i32.const 2)))`)})`).join('\n        ')}
        ${[0, 4]
          .map(
            (
              b,
            ) => `(local.set $e0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $v${b}) (local.get $v${b + 1})))
        (local.set $e1 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $v${b}) (local.get $v${b + 1})))
        (local.set $e2 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $v${b + 2}) (local.get $v${b + 3})))
        (local.set $e3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $v${b + 2}) (local.get $v${b + 3})))
        (v128.store offset=${b * 4} (local.get $dst) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $e0) (local.get $e2)))
        (v128.store offset=${b * 4 + 32} (local.get $dst) (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $e0) (local.get $e2)))
        (v128.store offset=${b * 4 + 64} (local.get $dst) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $e1) (local.get $e3)))
        (v128.store offset=${b * 4 + 96} (local.get $dst) (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $e1) (local.get $e3)))`,
          )
          .join('\n        ')}
        ${[0, 1, 2, 3, 4, 5, 6, 7].map((j) => `(local.set $q${j} (i32.add (local.get $q${j}) (i32.const ${4 * bpc})))`).join(' ')}
        (local.set $dst (i32.add (local.get $dst) (i32.const 128)))
        (local.set $k (i32.add (local.get $k) (i32.const 4)))
        (br $lk4)))
      (block $dk1 (loop $lk1
        (br_if $dk1 (i32.ge_u (local.get $k) (local.get $cols)))
        ${[0, 1, 2, 3, 4, 5, 6, 7]
          .map(
            (
              j,
            ) => `(f32.store offset=${4 * j} (local.get $dst) ${widenScalar(kind, `(local.get $q${j})`, `(f32.load (i32.add (local.get $u${j}) (i32.shl (i32.shr_u (local.get $k) (i32.const 5)) (i32.const 2))))`)})
        (local.set $q${j} (i32.add (local.get $q${j}) (i32.const ${bpc})))`,
          )
          .join('\n        ')}
        (local.set $dst (i32.add (local.get $dst) (i32.const 32)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $lk1)))
      ;; x rows 4 at a time, then singly
      (local.set $n (i32.const 0))
      (block $dn4 (loop $ln4
        (br_if $dn4 (i32.gt_u (i32.add (local.get $n) (i32.const 4)) (local.get $N)))
        (local.set $xr (i32.add (local.get $x) (i32.mul (local.get $n) (local.get $xs))))
        (local.set $orow (i32.add (local.get $out) (i32.add (i32.mul (local.get $n) (local.get $os)) (i32.shl (local.get $r) (i32.const 2)))))
        ${micro(4)}
        (local.set $n (i32.add (local.get $n) (i32.const 4)))
        (br $ln4)))
      (block $dn1 (loop $ln1
        (br_if $dn1 (i32.ge_u (local.get $n) (local.get $N)))
        (local.set $xr (i32.add (local.get $x) (i32.mul (local.get $n) (local.get $xs))))
        (local.set $orow (i32.add (local.get $out) (i32.add (i32.mul (local.get $n) (local.get $os)) (i32.shl (local.get $r) (i32.const 2)))))
        ${micro(1)}
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $ln1)))
      (local.set $r (i32.add (local.get $r) (i32.const 8)))
      (br $rloop)))
  )`;
}

/**
 * matmul_t_K(w, s, x, out, N, rows, cols, scratch): out [N, cols] = x [N, rows] · W, as a sum of
 * rows. out starts at zero; a row whose N x values are all 0 is skipped (MoI's sparse weights);
 * otherwise it is widened once into `scratch` (f32 [cols]) and added, times x[n, r], into each
 * out row n with x[n, r] ≠ 0.
 */
function matmulT(kind: WatKind): string {
  const bpc = bytesPerCol(kind);
  const xAt =
    '(f32.load (i32.add (local.get $x) (i32.add (i32.mul (local.get $n) (local.get $rs)) (i32.shl (local.get $r) (i32.const 2)))))';
  return `(func (export "matmul_t_${kind}") (param $w i32) (param $s i32) (param $x i32) (param $out i32)
    (param $N i32) (param $rows i32) (param $cols i32) (param $scratch i32)
    (local $r i32) (local $n i32) (local $i i32) (local $any i32) (local $a f32) (local $rs i32) (local $os i32) (local $sb i32)
    (local.set $rs (i32.shl (local.get $rows) (i32.const 2)))
    (local.set $os (i32.shl (local.get $cols) (i32.const 2)))
    (local.set $sb (i32.shl (i32.shr_u (i32.add (local.get $cols) (i32.const ${STEP - 1})) (i32.const 5)) (i32.const 2)))
    (block $dz (loop $lz
      (br_if $dz (i32.ge_u (local.get $i) (i32.mul (local.get $N) (local.get $cols))))
      (f32.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2))) (f32.const 0))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $lz)))
    (block $dr (loop $lr
      (br_if $dr (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $any (i32.const 0))
      (local.set $n (i32.const 0))
      (block $ds (loop $ls
        (br_if $ds (i32.ge_u (local.get $n) (local.get $N)))
        (if (f32.ne ${xAt} (f32.const 0)) (then (local.set $any (i32.const 1))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $ls)))
      (if (local.get $any) (then
        (call $widen_${kind} (i32.add (local.get $w) (i32.mul (local.get $r) (i32.mul (local.get $cols) (i32.const ${bpc}))))
          (i32.add (local.get $s) (i32.mul (local.get $r) (local.get $sb))) (local.get $scratch) (local.get $cols))
        (local.set $n (i32.const 0))
        (block $dn (loop $ln
          (br_if $dn (i32.ge_u (local.get $n) (local.get $N)))
          (local.set $a ${xAt})
          (if (f32.ne (local.get $a) (f32.const 0)) (then
            (call $axpy (i32.add (local.get $out) (i32.mul (local.get $n) (local.get $os))) (local.get $a) (local.get $scratch) (local.get $cols))))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $ln)))))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $lr)))
  )`;
}

const COMMON = `
  ;; f16 → f32 for one word (the same steps on a scalar)
  (func $f16 (param $h i32) (result f32)
    (local $f f32)
    (local.set $f (f32.mul
      (f32.reinterpret_i32 (i32.and (i32.shr_s (i32.shl (local.get $h) (i32.const 16)) (i32.const 3)) (i32.const 0x8fffe000)))
      (f32.const 0x1p112)))
    (if (result f32) (f32.ge (f32.abs (local.get $f)) (f32.const 65536))
      (then (f32.reinterpret_i32 (i32.or (i32.reinterpret_f32 (local.get $f)) (i32.const 0x7f800000))))
      (else (local.get $f))))

  ;; out[n, j] = out[n, j] · outScale[j] + bias[j] over [N, rows] (outScale or bias 0 = none)
  (func (export "epilogue") (param $out i32) (param $N i32) (param $rows i32) (param $scale i32) (param $bias i32)
    (local $n i32) (local $j i32) (local $p i32) (local $v f32)
    (local.set $p (local.get $out))
    (block $dn (loop $ln
      (br_if $dn (i32.ge_u (local.get $n) (local.get $N)))
      (local.set $j (i32.const 0))
      (block $dj (loop $lj
        (br_if $dj (i32.ge_u (local.get $j) (local.get $rows)))
        (local.set $v (f32.load (local.get $p)))
        (if (local.get $scale) (then (local.set $v (f32.mul (local.get $v)
          (f32.load (i32.add (local.get $scale) (i32.shl (local.get $j) (i32.const 2))))))))
        (if (local.get $bias) (then (local.set $v (f32.add (local.get $v)
          (f32.load (i32.add (local.get $bias) (i32.shl (local.get $j) (i32.const 2))))))))
        (f32.store (local.get $p) (local.get $v))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $lj)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $ln)))
  )

;; x [N, cols] → dst as the wide tiles read it (see wideVec in packed-wat.ts): within each
  ;; whole 32-column block, each group of 8 columns c..c+7 becomes c, c+2, c+4, c+6, c+1, c+3,
  ;; c+5, c+7. The last cols mod 32 columns stay in order (the scalar tail).
  (func (export "deinterleave") (param $x i32) (param $dst i32) (param $N i32) (param $cols i32)
    (local $n i32) (local $c i32) (local $end i32) (local $a v128) (local $b v128)
    (local.set $end (i32.and (local.get $cols) (i32.const -32)))
    (block $dn (loop $ln
      (br_if $dn (i32.ge_u (local.get $n) (local.get $N)))
      (local.set $c (i32.const 0))
      (block $d8 (loop $l8
        (br_if $d8 (i32.ge_u (local.get $c) (local.get $end)))
        (local.set $a (v128.load (local.get $x)))
        (local.set $b (v128.load offset=16 (local.get $x)))
        (v128.store (local.get $dst) (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $a) (local.get $b)))
        (v128.store offset=16 (local.get $dst) (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 (local.get $a) (local.get $b)))
        (local.set $x (i32.add (local.get $x) (i32.const 32)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 32)))
        (local.set $c (i32.add (local.get $c) (i32.const 8)))
        (br $l8)))
      (block $d1 (loop $l1
        (br_if $d1 (i32.ge_u (local.get $c) (local.get $cols)))
        (f32.store (local.get $dst) (f32.load (local.get $x)))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $l1)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $ln)))
  )

  ;; y[0, cols) += a · src[0, cols)
  (func $axpy (export "axpy") (param $y i32) (param $a f32) (param $src i32) (param $cols i32)
    (local $c i32) (local $end i32) (local $va v128)
    (local.set $va (f32x4.splat (local.get $a)))
    (local.set $end (i32.and (local.get $cols) (i32.const -4)))
    (block $d4 (loop $l4
      (br_if $d4 (i32.ge_u (local.get $c) (local.get $end)))
      (v128.store (local.get $y) (f32x4.add (v128.load (local.get $y)) (f32x4.mul (local.get $va) (v128.load (local.get $src)))))
      (local.set $y (i32.add (local.get $y) (i32.const 16)))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (local.set $c (i32.add (local.get $c) (i32.const 4)))
      (br $l4)))
    (block $d1 (loop $l1
      (br_if $d1 (i32.ge_u (local.get $c) (local.get $cols)))
      (f32.store (local.get $y) (f32.add (f32.load (local.get $y)) (f32.mul (local.get $a) (f32.load (local.get $src)))))
      (local.set $y (i32.add (local.get $y) (i32.const 4)))
      (local.set $src (i32.add (local.get $src) (i32.const 4)))
      (local.set $c (i32.add (local.get $c) (i32.const 1)))
      (br $l1)))
  )
`;

/**
 * q8 weights times 16-bit activations (decode): what makes q8 faster than f32 in wasm SIMD128.
 *
 * `quantize_x16(x, xq, xd, fq, N, cols)`: each x row in blocks of 32 columns (the last may be
 * shorter), d = max|x| / 32767 (f32 division) and q = round(x / d) (f32 division, ties away from
 * zero; d = 0 gives q = 0): xq i16 [N, cols] and xd f32 [N, nb]. With fq ≠ 0 it writes the values
 * the integers stand for instead, fq f32 [N, cols] = q · d (what gemm_q8 multiplies for N ≥ 4 and
 * what the composite computes with tfjs ops). A NaN or infinity in a block makes its d NaN or
 * infinite, and every output it reaches NaN.
 *
 * `matmul_q8x16(w, s, xq, xd, out, N, rows, cols)`: out [N, rows] = Σ_blocks (d_w · d_x) · Σ q_w · q_x,
 * the block sums exact in i32 (|q_w| ≤ 127, |q_x| ≤ 32767, 32 terms). Per 16 weights: two
 * sign-extending 8-byte loads (v128.load8x8_s), two i32x4.dot_i16x8_s against x's 16-bit values
 * held in registers, two adds: 8 multiply-adds an instruction, where the f32 tiles above take a
 * widen, a multiply and an add per 4. 4 weight rows a pass share each block of x; a short last
 * pass repeats its last row; the partial last block runs as scalars.
 */
const XR = 4;
function q8x16(): string {
  const rows = Array.from({ length: XR }, (_, k) => k);
  const locals = [
    '(local $n i32) (local $r i32) (local $b i32) (local $c i32) (local $nb i32) (local $nbf i32) (local $sb i32)',
    '(local $xqn i32) (local $xdn i32) (local $on i32) (local $xp i32) (local $dx f32) (local $xv i32) (local $sum v128)',
    '(local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128)',
    ...rows.map(
      (k) =>
        `(local $rr${k} i32) (local $wp${k} i32) (local $sp${k} i32) (local $acc${k} v128) (local $t${k} i32) (local $tail${k} f32)`,
    ),
  ];
  const dot = (k: number, off: number, xa: string, xb: string) =>
    `(i32x4.add (i32x4.dot_i16x8_s (v128.load8x8_s offset=${off} (local.get $wp${k})) (local.get ${xa}))
                 (i32x4.dot_i16x8_s (v128.load8x8_s offset=${off + 8} (local.get $wp${k})) (local.get ${xb})))`;
  return `(func (export "matmul_q8x16") (param $w i32) (param $s i32) (param $xq i32) (param $xd i32) (param $out i32)
    (param $N i32) (param $rows i32) (param $cols i32)
    ${locals.join('\n    ')}
    (local.set $nb (i32.shr_u (i32.add (local.get $cols) (i32.const 31)) (i32.const 5)))
    (local.set $nbf (i32.shr_u (local.get $cols) (i32.const 5)))
    (local.set $sb (i32.shl (local.get $nb) (i32.const 2)))
    (block $dn (loop $ln
      (br_if $dn (i32.ge_u (local.get $n) (local.get $N)))
      (local.set $xqn (i32.add (local.get $xq) (i32.mul (local.get $n) (i32.shl (local.get $cols) (i32.const 1)))))
      (local.set $xdn (i32.add (local.get $xd) (i32.mul (local.get $n) (local.get $sb))))
      (local.set $on (i32.add (local.get $out) (i32.mul (local.get $n) (i32.shl (local.get $rows) (i32.const 2)))))
      (local.set $r (i32.const 0))
      (block $dr (loop $lr
        (br_if $dr (i32.ge_u (local.get $r) (local.get $rows)))
        ${rows
          .map(
            (
              k,
            ) => `(local.set $rr${k} (select (i32.add (local.get $r) (i32.const ${k})) (i32.sub (local.get $rows) (i32.const 1))
          (i32.lt_u (i32.add (local.get $r) (i32.const ${k})) (local.get $rows))))
        (local.set $wp${k} (i32.add (local.get $w) (i32.mul (local.get $rr${k}) (local.get $cols))))
        (local.set $sp${k} (i32.add (local.get $s) (i32.mul (local.get $rr${k}) (local.get $sb))))
        (local.set $acc${k} (v128.const i32x4 0 0 0 0))`,
          )
          .join('\n        ')}
        (local.set $xp (local.get $xqn))
        (local.set $b (i32.const 0))
        (block $db (loop $lb
          (br_if $db (i32.ge_u (local.get $b) (local.get $nbf)))
          (local.set $dx (f32.load (i32.add (local.get $xdn) (i32.shl (local.get $b) (i32.const 2)))))
          (local.set $x0 (v128.load (local.get $xp)))
          (local.set $x1 (v128.load offset=16 (local.get $xp)))
          (local.set $x2 (v128.load offset=32 (local.get $xp)))
          (local.set $x3 (v128.load offset=48 (local.get $xp)))
          ${rows
            .map(
              (k) => `(local.set $sum (i32x4.add ${dot(k, 0, '$x0', '$x1')} ${dot(k, 16, '$x2', '$x3')}))
          (local.set $acc${k} (f32x4.add (local.get $acc${k}) (f32x4.mul (f32x4.convert_i32x4_s (local.get $sum))
            (f32x4.splat (f32.mul (f32.load (local.get $sp${k})) (local.get $dx))))))
          (local.set $wp${k} (i32.add (local.get $wp${k}) (i32.const 32)))
          (local.set $sp${k} (i32.add (local.get $sp${k}) (i32.const 4)))`,
            )
            .join('\n          ')}
          (local.set $xp (i32.add (local.get $xp) (i32.const 64)))
          (local.set $b (i32.add (local.get $b) (i32.const 1)))
          (br $lb)))
        ;; the partial last block (cols mod 32 columns), as scalars
        ${rows.map((k) => `(local.set $t${k} (i32.const 0)) (local.set $tail${k} (f32.const 0))`).join(' ')}
        (if (i32.lt_u (local.get $nbf) (local.get $nb)) (then
          (local.set $c (i32.shl (local.get $nbf) (i32.const 5)))
          (block $dc (loop $lc
            (br_if $dc (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $xv (i32.load16_s (local.get $xp)))
            ${rows
              .map(
                (
                  k,
                ) => `(local.set $t${k} (i32.add (local.get $t${k}) (i32.mul (i32.load8_s (local.get $wp${k})) (local.get $xv))))
            (local.set $wp${k} (i32.add (local.get $wp${k}) (i32.const 1)))`,
              )
              .join('\n            ')}
            (local.set $xp (i32.add (local.get $xp) (i32.const 2)))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $lc)))
          (local.set $dx (f32.load (i32.add (local.get $xdn) (i32.shl (local.get $nbf) (i32.const 2)))))
          ${rows.map((k) => `(local.set $tail${k} (f32.mul (f32.convert_i32_s (local.get $t${k})) (f32.mul (f32.load (local.get $sp${k})) (local.get $dx))))`).join('\n          ')}))
        ${rows.map((k) => `(f32.store (i32.add (local.get $on) (i32.shl (local.get $rr${k}) (i32.const 2))) (f32.add ${hsum(`$acc${k}`)} (local.get $tail${k})))`).join('\n        ')}
        (local.set $r (i32.add (local.get $r) (i32.const ${XR})))
        (br $lr)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $ln)))
  )`;
}

/**
 * quantize_x16 (see q8x16()): whole blocks in SIMD (the same IEEE operations lane by lane: max of
 * |x|, d = m / 32767, x / d, floor(|v| + 0.5) with v's sign), a short last block as scalars.
 */
function quantizeX16(): string {
  const v = (j: number) => `(v128.load offset=${16 * j} (local.get $xb))`;
  const absMax = (lo: number, hi: number): string =>
    hi - lo === 1 ? `(f32x4.abs ${v(lo)})` : `(f32x4.max ${absMax(lo, (lo + hi) / 2)} ${absMax((lo + hi) / 2, hi)})`;
  const rounded = (
    j: number,
  ) => `(v128.or (f32x4.floor (f32x4.add (f32x4.abs (local.tee $t (f32x4.div ${v(j)} (local.get $vd))))
              (v128.const f32x4 0.5 0.5 0.5 0.5))) (v128.and (local.get $t) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000)))`;
  const simd = [0, 1, 2, 3, 4, 5, 6, 7].map((j) => `(local.set $r${j} ${rounded(j)})`).join('\n            ');
  return `
  (func (export "quantize_x16") (param $x i32) (param $xq i32) (param $xd i32) (param $fq i32) (param $N i32) (param $cols i32)
    (local $n i32) (local $c i32) (local $e i32) (local $i i32) (local $m f32) (local $d f32) (local $v f32) (local $q f32)
    (local $xb i32) (local $fb i32) (local $vm v128) (local $vd v128) (local $t v128)
    ${[0, 1, 2, 3, 4, 5, 6, 7].map((j) => `(local $r${j} v128)`).join(' ')}
    (block $dn (loop $ln
      (br_if $dn (i32.ge_u (local.get $n) (local.get $N)))
      (local.set $c (i32.const 0))
      (block $dc (loop $lc
        (br_if $dc (i32.ge_u (local.get $c) (local.get $cols)))
        (local.set $e (i32.add (local.get $c) (i32.const 32)))
        (if (i32.gt_u (local.get $e) (local.get $cols)) (then (local.set $e (local.get $cols))))
        (local.set $xb (i32.add (local.get $x) (i32.shl (local.get $c) (i32.const 2))))
        (local.set $fb (i32.add (local.get $fq) (i32.shl (i32.add (i32.mul (local.get $n) (local.get $cols)) (local.get $c)) (i32.const 2))))
        (if (i32.eq (i32.sub (local.get $e) (local.get $c)) (i32.const 32))
          (then
            (local.set $vm ${absMax(0, 8)})
            (local.set $m (f32.max (f32.max (f32x4.extract_lane 0 (local.get $vm)) (f32x4.extract_lane 1 (local.get $vm)))
              (f32.max (f32x4.extract_lane 2 (local.get $vm)) (f32x4.extract_lane 3 (local.get $vm)))))
            (local.set $d (f32.div (local.get $m) (f32.const 32767)))
            (local.set $vd (f32x4.splat (local.get $d)))
            (if (f32.eq (local.get $d) (f32.const 0))
              (then ${[0, 1, 2, 3, 4, 5, 6, 7].map((j) => `(local.set $r${j} (v128.const i32x4 0 0 0 0))`).join(' ')})
              (else ${simd}))
            (if (local.get $fq)
              (then ${[0, 1, 2, 3, 4, 5, 6, 7].map((j) => `(v128.store offset=${16 * j} (local.get $fb) (f32x4.mul (local.get $r${j}) (local.get $vd)))`).join('\n              ')})
              (else ${[0, 1, 2, 3]
                .map(
                  (j) => `(v128.store offset=${16 * j} (i32.add (local.get $xq) (i32.shl (local.get $c) (i32.const 1)))
                (i16x8.narrow_i32x4_s (i32x4.trunc_sat_f32x4_s (local.get $r${2 * j})) (i32x4.trunc_sat_f32x4_s (local.get $r${2 * j + 1}))))`,
                )
                .join('\n              ')})))
          (else
            (local.set $m (f32.const 0))
            (local.set $i (local.get $c))
            (block $dm (loop $lm
              (br_if $dm (i32.ge_u (local.get $i) (local.get $e)))
              (local.set $m (f32.max (local.get $m) (f32.abs (f32.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2)))))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $lm)))
            (local.set $d (f32.div (local.get $m) (f32.const 32767)))
            (local.set $i (local.get $c))
            (block $dq (loop $lq
              (br_if $dq (i32.ge_u (local.get $i) (local.get $e)))
              (local.set $v (if (result f32) (f32.eq (local.get $d) (f32.const 0)) (then (f32.const 0))
                (else (f32.div (f32.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2)))) (local.get $d)))))
              (local.set $q (f32.copysign (f32.floor (f32.add (f32.abs (local.get $v)) (f32.const 0.5))) (local.get $v)))
              (if (local.get $fq)
                (then (f32.store (i32.add (local.get $fq) (i32.shl (i32.add (i32.mul (local.get $n) (local.get $cols)) (local.get $i)) (i32.const 2)))
                  (f32.mul (local.get $q) (local.get $d))))
                (else (i32.store16 (i32.add (local.get $xq) (i32.shl (local.get $i) (i32.const 1))) (i32.trunc_sat_f32_s (local.get $q)))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $lq)))))
        (if (i32.eqz (local.get $fq)) (then (f32.store (local.get $xd) (local.get $d))
          (local.set $xd (i32.add (local.get $xd) (i32.const 4)))))
        (local.set $c (local.get $e))
        (br $lc)))
      (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
      (local.set $xq (i32.add (local.get $xq) (i32.shl (local.get $cols) (i32.const 1))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $ln)))
  )
`;
}

/** The whole packed-kernels module as WebAssembly text. */
export function packedWat(): string {
  const parts = [
    ';; moi packed-weight kernels (generated by packed-wat.ts; see its header)',
    '(module',
    '  (import "env" "memory" (memory 0))',
    COMMON,
  ];
  for (const kind of PACKED_KINDS) {
    if (kind !== 'q8') {
      for (const t of TILES[kind]) parts.push(tile(kind, t));
      parts.push(matmul(kind));
    }
    parts.push(gemm(kind));
    parts.push(matmulT(kind));
    parts.push(widenRow(kind));
  }
  parts.push(q8x16(), quantizeX16());
  parts.push(')');
  return parts.join('\n');
}
