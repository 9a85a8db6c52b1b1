/**
 * WAT text helpers shared by the single-thread kernels (packed-wat.ts) and the thread pool's
 * generated kernels (threads/wat.ts): expressions both write the same way.
 */

/** WAT expression: f16 → f32 for 4 words held in the top halves of the lanes of `top` (uses local $h). */
export function f16FromTop(top: string): string {
  return `(v128.or (local.tee $h (f32x4.mul
      (v128.and (i32x4.shr_s ${top} (i32.const 3)) (v128.const i32x4 0x8fffe000 0x8fffe000 0x8fffe000 0x8fffe000))
      (v128.const f32x4 0x1p112 0x1p112 0x1p112 0x1p112)))
    (v128.and (f32x4.ge (f32x4.abs (local.get $h)) (v128.const f32x4 65536 65536 65536 65536))
      (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000)))`;
}

/** Sum of the 4 lanes of an f32x4 held in local `v`: (l0 + l1) + (l2 + l3). */
export function hsum(v: string): string {
  return `(f32.add (f32.add (f32x4.extract_lane 0 (local.get ${v})) (f32x4.extract_lane 1 (local.get ${v})))
      (f32.add (f32x4.extract_lane 2 (local.get ${v})) (f32x4.extract_lane 3 (local.get ${v}))))`;
}
