/**
 * The packed-weight kernels (bf16, f16, q8) as WebAssembly text, generated here rather than written
 * out by hand: every kind × tile shape is the same loop with a different widening step, so the
 * text is produced from one template per routine. module.ts assembles it (cached by the hash of
 * this text, like kernels.wat) and instantiates it over the wasm backend's heap.
 *
 * Routines (pointers are byte offsets into the backend heap; every kind `K` in bf16, f16, q8):
 *
 * - `matmul_K(w, s, x, out, N, rows, cols)`: out [N, rows] = x [N, cols] · Wᵀ, W [rows, cols]
 *   packed (s: q8 scales [rows, ceil(cols/32)], else unused). The outer loop walks pairs of
 *   weight rows; each pair is read from memory once and dotted with every x row, in tiles of 4, 2
 *   or 1 x rows (tile_K_X: 2 weight rows × X x rows, 8 accumulators in all). Each weight vector is
 *   widened once per tile in registers. f32 multiply then add (no fused multiply-add), so each
 *   product and sum rounds as the composite's f32 matmul does, up to summation order.
 * - `epilogue(out, N, rows, outScale, bias)`: out[n, j] = out[n, j] · outScale[j] + bias[j]
 *   (either pointer 0 = none), in the composite's order.
 * - `widen_K(w, s, dst, cols)`: one row to f32 (packedRows; packedMatMulT's row scratch).
 * - `axpy(y, a, src, cols)`: y += a · src (packedMatMulT).
 *
 * Widening, exactly (each equals dtype.ts / dequantizeQ8 bit for bit):
 * - bf16: a byte swizzle puts each 16-bit word in the top half of a 32-bit lane: the f32 bits.
 * - f16: the word in the top half, arithmetic shift right by 3 and mask (sign kept at bit 31,
 *   exponent and mantissa moved to f32's places) gives h's bits with f32's field positions but
 *   f16's exponent bias; times 2^112 rebiases normals and normalizes subnormals exactly. Words
 *   with exponent 31 come out as ±65536·(1 + m/1024); those (|f| ≥ 65536, above f16's largest
 *   finite 65504) get all exponent bits set: inf, or NaN with its payload.
 * - q8: a byte swizzle puts each int8 in the top byte of a lane; converted, that is q·2^24, and
 *   times the block's d·2^-24 gives q·d rounded once to f32, as dequantizeQ8 computes it (d·2^-24
 *   is exact unless d < 2^-102, far below any weight block's scale).
 */

export type WatKind = 'bf16' | 'f16' | 'q8';
export const PACKED_KINDS: readonly WatKind[] = ['bf16', 'f16', 'q8'];

/** Weight rows per tile (the pair), and the x-row tile heights with their accumulators per (row, x row). */
let R = 2;
let TILES: readonly { X: number; A: number }[] = [{ X: 4, A: 1 }, { X: 2, A: 2 }, { X: 1, A: 4 }];
let EXP_SHIFT = false;
const exp = process.env.MOI_PACKED_EXP;
if (exp) {
  const o = JSON.parse(exp);
  R = o.R ?? R; TILES = o.TILES ?? TILES; EXP_SHIFT = !!o.shift;
}
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
function widenVec(kind: WatKind, raw: string, part: number, ds: string): string {
  const top = `(i8x16.swizzle ${raw} ${swizzleMask(kind, part)})`;
  if (kind === 'bf16' && EXP_SHIFT) return part % 2 ? `(v128.and ${raw} (v128.const i32x4 0xffff0000 0xffff0000 0xffff0000 0xffff0000))` : `(i32x4.shl ${raw} (i32.const 16))`;
  if (kind === 'bf16') return top;
  if (kind === 'q8') return `(f32x4.mul (f32x4.convert_i32x4_s ${top}) ${ds})`;
  return `(v128.or (local.tee $h (f32x4.mul
      (v128.and (i32x4.shr_s ${top} (i32.const 3)) (v128.const i32x4 0x8fffe000 0x8fffe000 0x8fffe000 0x8fffe000))
      (v128.const f32x4 0x1p112 0x1p112 0x1p112 0x1p112)))
    (v128.and (f32x4.ge (f32x4.abs (local.get $h)) (v128.const f32x4 65536 65536 65536 65536))
      (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000)))`;
}

/** WAT expression: the f32 of the weight at byte address `addr` (q8: times the scalar `d`). */
function widenScalar(kind: WatKind, addr: string, d: string): string {
  if (kind === 'bf16') return `(f32.reinterpret_i32 (i32.shl (i32.load16_u ${addr}) (i32.const 16)))`;
  if (kind === 'f16') return `(call $f16 (i32.load16_u ${addr}))`;
  return `(f32.mul (f32.convert_i32_s (i32.load8_s ${addr})) ${d})`;
}

/** Sum of the 4 lanes of an f32x4 expression held in local `v`: (l0 + l1) + (l2 + l3). */
function hsum(v: string): string {
  return `(f32.add (f32.add (f32x4.extract_lane 0 (local.get ${v})) (f32x4.extract_lane 1 (local.get ${v})))
                   (f32.add (f32x4.extract_lane 2 (local.get ${v})) (f32x4.extract_lane 3 (local.get ${v}))))`;
}

/**
 * tile_K_X(w0, w1, s0, s1, x, xs, cols, o, os, dr): rows w0 and w1 (byte addresses; q8 scale rows
 * s0, s1) dotted with X x rows starting at x, xs bytes apart; result (x row i, weight row r) goes
 * to o + i·os + r·dr. Main loop: 32 columns a step; then a scalar tail for cols mod 32.
 */
function tile(kind: WatKind, X: number, A: number): string {
  const bpc = bytesPerCol(kind);
  const loads = (STEP * bpc) / 16; // 16-byte loads per weight row per step
  const parts = VECS / loads; // f32x4 vectors per load
  const L: string[] = [];
  const acc = (r: number, i: number, a: number) => `$a${r}_${i}_${a}`;
  const locals: string[] = ['(local $c i32) (local $end i32) (local $xv v128) (local $xq f32) (local $h v128)'];
  for (let r = 0; r < R; r++) locals.push(`(local $raw${r} v128) (local $f${r} v128) (local $wp${r} i32) (local $sp${r} i32) (local $ds${r} v128) (local $d${r} f32) (local $g${r} f32)`);
  for (let i = 0; i < X; i++) locals.push(`(local $xp${i} i32)`);
  for (let r = 0; r < R; r++) for (let i = 0; i < X; i++) {
    locals.push(`(local $t${r}_${i} f32)`);
    for (let a = 0; a < A; a++) locals.push(`(local ${acc(r, i, a)} v128)`);
  }
  for (let r = 0; r < R; r++) locals.push(`(local $rr${r} i32)`);
  L.push(`(func $tile_${kind}_${X} (param $w i32) (param $rb i32) (param $s i32) (param $sb i32) (param $nr i32)`);
  L.push(`  (param $x i32) (param $xs i32) (param $cols i32) (param $o i32) (param $os i32)`);
  L.push(`  ${locals.join(' ')}`);
  // weight row r of the tile is min(r, nr − 1): a short last tile repeats its last row
  for (let r = 0; r < R; r++) {
    L.push(`  (local.set $rr${r} (select (i32.const ${r}) (i32.sub (local.get $nr) (i32.const 1)) (i32.lt_u (i32.const ${r}) (local.get $nr))))`);
    L.push(`  (local.set $wp${r} (i32.add (local.get $w) (i32.mul (local.get $rr${r}) (local.get $rb))))`);
    L.push(`  (local.set $sp${r} (i32.add (local.get $s) (i32.mul (local.get $rr${r}) (local.get $sb))))`);
  }
  for (let i = 0; i < X; i++) L.push(`  (local.set $xp${i} (i32.add (local.get $x) (i32.mul (local.get $xs) (i32.const ${i}))))`);
  L.push(`  (local.set $end (i32.and (local.get $cols) (i32.const ${-STEP})))`);
  // main loop: 32 columns a step
  L.push(`  (block $done (loop $step`);
  L.push(`    (br_if $done (i32.ge_u (local.get $c) (local.get $end)))`);
  if (kind === 'q8') {
    for (let r = 0; r < R; r++) L.push(`    (local.set $ds${r} (f32x4.splat (f32.mul (f32.load (local.get $sp${r})) (f32.const 0x1p-24))))`);
  }
  for (let j = 0; j < loads; j++) {
    for (let r = 0; r < R; r++) L.push(`    (local.set $raw${r} (v128.load offset=${16 * j} (local.get $wp${r})))`);
    for (let p = 0; p < parts; p++) {
      const v = j * parts + p;
      for (let r = 0; r < R; r++) L.push(`    (local.set $f${r} ${widenVec(kind, `(local.get $raw${r})`, p, `(local.get $ds${r})`)})`);
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
    if (kind === 'q8') L.push(`    (local.set $sp${r} (i32.add (local.get $sp${r}) (i32.const 4)))`);
  }
  for (let i = 0; i < X; i++) L.push(`    (local.set $xp${i} (i32.add (local.get $xp${i}) (i32.const ${STEP * 4})))`);
  L.push(`    (local.set $c (i32.add (local.get $c) (i32.const ${STEP})))`);
  L.push(`    (br $step)))`);
  // scalar tail: the last cols mod 32 columns (q8: the last, partial block, scale at sp)
  if (kind === 'q8') for (let r = 0; r < R; r++) L.push(`  (local.set $d${r} (if (result f32) (i32.lt_u (local.get $c) (local.get $cols)) (then (f32.load (local.get $sp${r}))) (else (f32.const 0))))`);
  L.push(`  (block $tdone (loop $tail`);
  L.push(`    (br_if $tdone (i32.ge_u (local.get $c) (local.get $cols)))`);
  for (let r = 0; r < R; r++) L.push(`    (local.set $g${r} ${widenScalar(kind, `(local.get $wp${r})`, `(local.get $d${r})`)})`);
  for (let i = 0; i < X; i++) {
    L.push(`    (local.set $xq (f32.load (local.get $xp${i})))`);
    for (let r = 0; r < R; r++) {
      L.push(`    (local.set $t${r}_${i} (f32.add (local.get $t${r}_${i}) (f32.mul (local.get $g${r}) (local.get $xq))))`);
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
      for (let a = 1; a < A; a += 1) L.push(`  (local.set ${a0} (f32x4.add (local.get ${a0}) (local.get ${acc(r, i, a)})))`);
      const addr = `(i32.add (i32.add (local.get $o) (i32.mul (local.get $os) (i32.const ${i}))) (i32.shl (local.get $rr${r}) (i32.const 2)))`;
      L.push(`  (f32.store ${addr} (f32.add ${hsum(a0)} (local.get $t${r}_${i})))`);
    }
  }
  L.push(`)`);
  return L.join('\n');
}

/** matmul_K: tiles of R weight rows (a short last tile repeats its last row), x rows in tiles of 4, 2, 1. */
function matmul(kind: WatKind): string {
  const bpc = bytesPerCol(kind);
  const call = (X: number) => `(call $tile_${kind}_${X} (local.get $wr) (local.get $rb) (local.get $sr) (local.get $sb) (local.get $nr)
          (i32.add (local.get $x) (i32.mul (local.get $n) (local.get $xs))) (local.get $xs) (local.get $cols)
          (i32.add (local.get $op) (i32.mul (local.get $n) (local.get $os))) (local.get $os))`;
  const tiles = [...TILES].sort((p, q) => q.X - p.X).map(({ X }) => `
      (block $d${X} (loop $l${X}
        (br_if $d${X} (i32.gt_u (i32.add (local.get $n) (i32.const ${X})) (local.get $N)))
        ${call(X)}
        (local.set $n (i32.add (local.get $n) (i32.const ${X})))
        (br $l${X})))`).join('');
  return `(func (export "matmul_${kind}") (param $w i32) (param $s i32) (param $x i32) (param $out i32)
    (param $N i32) (param $rows i32) (param $cols i32)
    (local $r i32) (local $nr i32) (local $n i32) (local $wr i32) (local $sr i32)
    (local $xs i32) (local $os i32) (local $op i32) (local $rb i32) (local $sb i32)
    (local.set $xs (i32.shl (local.get $cols) (i32.const 2)))
    (local.set $os (i32.shl (local.get $rows) (i32.const 2)))
    (local.set $rb (i32.mul (local.get $cols) (i32.const ${bpc})))
    (local.set $sb (i32.shl (i32.shr_u (i32.add (local.get $cols) (i32.const ${STEP - 1})) (i32.const 5)) (i32.const 2)))
    (block $rdone (loop $rloop
      (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $nr (i32.sub (local.get $rows) (local.get $r)))
      (if (i32.gt_u (local.get $nr) (i32.const ${R})) (then (local.set $nr (i32.const ${R}))))
      (local.set $wr (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))))
      (local.set $sr (i32.add (local.get $s) (i32.mul (local.get $r) (local.get $sb))))
      (local.set $op (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 2))))
      (local.set $n (i32.const 0))${tiles}
      (local.set $r (i32.add (local.get $r) (i32.const ${R})))
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
      body.push(`(v128.store offset=${16 * (j * parts + p)} (local.get $dst) ${widenVec(kind, '(local.get $raw)', p, '(local.get $ds)')})`);
    }
  }
  return `(func (export "widen_${kind}") (param $w i32) (param $s i32) (param $dst i32) (param $cols i32)
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

const COMMON = `
  ;; f16 → f32 for 4 words already in the top halves of the lanes (see the header of packed-wat.ts)
  (func $f16x4 (param $v v128) (result v128)
    (local $f v128)
    (local.set $f (f32x4.mul
      (v128.and (i32x4.shr_s (local.get $v) (i32.const 3)) (v128.const i32x4 0x8fffe000 0x8fffe000 0x8fffe000 0x8fffe000))
      (v128.const f32x4 0x1p112 0x1p112 0x1p112 0x1p112)))
    (v128.or (local.get $f)
      (v128.and (f32x4.ge (f32x4.abs (local.get $f)) (v128.const f32x4 65536 65536 65536 65536))
                (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))))

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

  ;; y[0, cols) += a · src[0, cols)
  (func (export "axpy") (param $y i32) (param $a f32) (param $src i32) (param $cols i32)
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

/** The whole packed-kernels module as WebAssembly text. */
export function packedWat(): string {
  const parts = [';; moi packed-weight kernels (generated by packed-wat.ts; see its header)', '(module', '  (import "env" "memory" (memory 0))', COMMON];
  for (const kind of PACKED_KINDS) {
    for (const { X, A } of TILES) parts.push(tile(kind, X, A));
    parts.push(matmul(kind));
    parts.push(widenRow(kind));
  }
  parts.push(')');
  return parts.join('\n');
}
