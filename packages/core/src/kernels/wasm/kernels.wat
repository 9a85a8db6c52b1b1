;; moi's own WebAssembly SIMD kernels for the tfjs wasm backend.
;;
;; The module imports the backend's own memory (emscripten's heap) and works on tensors in place:
;; every pointer argument is a byte offset into that heap, taken from a tensor's memoryOffset.
;; It has no allocator, stack, globals or data segment of its own; scratch space is a tfjs tensor
;; the caller allocates. Assembled from this text by the `wabt` npm package (see module.ts).

(module
  (import "env" "memory" (memory 0))

  ;; ------------------------------------------------------------------------------------------
  ;; helpers

  ;; dot product of n f32 at byte addresses a and b: four f32x4 accumulators (64 bytes a turn),
  ;; then f32x4 steps, then a scalar tail (n need not be a multiple of 4)
  (func $dot (param $a i32) (param $b i32) (param $n i32) (result f32)
    (local $acc0 v128) (local $acc1 v128) (local $acc2 v128) (local $acc3 v128)
    (local $i i32) (local $end16 i32) (local $end4 i32) (local $s f32)
    (local.set $end16 (i32.and (local.get $n) (i32.const -16)))
    (local.set $end4 (i32.and (local.get $n) (i32.const -4)))
    (block $d16
      (loop $l16
        (br_if $d16 (i32.ge_u (local.get $i) (local.get $end16)))
        (local.set $acc0 (f32x4.add (local.get $acc0)
          (f32x4.mul (v128.load (local.get $a)) (v128.load (local.get $b)))))
        (local.set $acc1 (f32x4.add (local.get $acc1)
          (f32x4.mul (v128.load offset=16 (local.get $a)) (v128.load offset=16 (local.get $b)))))
        (local.set $acc2 (f32x4.add (local.get $acc2)
          (f32x4.mul (v128.load offset=32 (local.get $a)) (v128.load offset=32 (local.get $b)))))
        (local.set $acc3 (f32x4.add (local.get $acc3)
          (f32x4.mul (v128.load offset=48 (local.get $a)) (v128.load offset=48 (local.get $b)))))
        (local.set $a (i32.add (local.get $a) (i32.const 64)))
        (local.set $b (i32.add (local.get $b) (i32.const 64)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $l16)))
    (block $d4
      (loop $l4
        (br_if $d4 (i32.ge_u (local.get $i) (local.get $end4)))
        (local.set $acc0 (f32x4.add (local.get $acc0)
          (f32x4.mul (v128.load (local.get $a)) (v128.load (local.get $b)))))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (local.set $b (i32.add (local.get $b) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $l4)))
    (local.set $acc0 (f32x4.add (f32x4.add (local.get $acc0) (local.get $acc1))
                                (f32x4.add (local.get $acc2) (local.get $acc3))))
    (local.set $s (f32.add
      (f32.add (f32x4.extract_lane 0 (local.get $acc0)) (f32x4.extract_lane 1 (local.get $acc0)))
      (f32.add (f32x4.extract_lane 2 (local.get $acc0)) (f32x4.extract_lane 3 (local.get $acc0)))))
    (block $d1
      (loop $l1
        (br_if $d1 (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $s (f32.add (local.get $s)
          (f32.mul (f32.load (local.get $a)) (f32.load (local.get $b)))))
        (local.set $a (i32.add (local.get $a) (i32.const 4)))
        (local.set $b (i32.add (local.get $b) (i32.const 4)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l1)))
    (local.get $s))

  ;; e^x in f64: x = n·ln2 + r, |r| <= ln2/2, a degree-10 Taylor polynomial in r (error < 1e-13
  ;; relative), times 2^n built from its exponent bits. NaN stays NaN; below -708 gives 0.
  (func $exp (param $x f64) (result f64)
    (local $n f64) (local $r f64) (local $p f64)
    (if (f64.ne (local.get $x) (local.get $x)) (then (return (local.get $x))))
    (if (f64.lt (local.get $x) (f64.const -708)) (then (return (f64.const 0))))
    (if (f64.gt (local.get $x) (f64.const 709)) (then (return (f64.const inf))))
    (local.set $n (f64.nearest (f64.mul (local.get $x) (f64.const 1.4426950408889634))))
    (local.set $r (f64.sub (local.get $x) (f64.mul (local.get $n) (f64.const 0.6931471805599453))))
    (local.set $p (f64.const 2.755731922398589e-7))                          ;; 1/10!
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 2.7557319223985893e-6)))  ;; 1/9!
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 2.48015873015873e-5)))    ;; 1/8!
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 1.984126984126984e-4)))   ;; 1/7!
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 1.388888888888889e-3)))   ;; 1/6!
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 8.333333333333333e-3)))   ;; 1/5!
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 4.1666666666666664e-2)))  ;; 1/4!
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 0.16666666666666666)))    ;; 1/3!
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 0.5)))
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 1)))
    (local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const 1)))
    (f64.mul (local.get $p)
      (f64.reinterpret_i64 (i64.shl (i64.add (i64.trunc_f64_s (local.get $n)) (i64.const 1023)) (i64.const 52)))))

  ;; $exp on two lanes (f64x2): the same operations lane by lane, so each lane equals $exp's bits
  (func $exp2 (param $x v128) (result v128)
    (local $n v128) (local $r v128) (local $p v128)
    (local.set $n (f64x2.nearest (f64x2.mul (local.get $x) (v128.const f64x2 1.4426950408889634 1.4426950408889634))))
    (local.set $r (f64x2.sub (local.get $x) (f64x2.mul (local.get $n) (v128.const f64x2 0.6931471805599453 0.6931471805599453))))
    (local.set $p (v128.const f64x2 2.755731922398589e-7 2.755731922398589e-7))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 2.7557319223985893e-6 2.7557319223985893e-6)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 2.48015873015873e-5 2.48015873015873e-5)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 1.984126984126984e-4 1.984126984126984e-4)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 1.388888888888889e-3 1.388888888888889e-3)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 8.333333333333333e-3 8.333333333333333e-3)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 4.1666666666666664e-2 4.1666666666666664e-2)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 0.16666666666666666 0.16666666666666666)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 0.5 0.5)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 1 1)))
    (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $r)) (v128.const f64x2 1 1)))
    (local.set $p (f64x2.mul (local.get $p) (i64x2.shl (i64x2.add
      (i64x2.extend_low_i32x4_s (i32x4.trunc_sat_f64x2_s_zero (local.get $n))) (v128.const i64x2 1023 1023)) (i32.const 52))))
    (local.set $p (v128.bitselect (v128.const i64x2 0 0) (local.get $p) (f64x2.lt (local.get $x) (v128.const f64x2 -708 -708))))
    (local.set $p (v128.bitselect (v128.const f64x2 inf inf) (local.get $p) (f64x2.gt (local.get $x) (v128.const f64x2 709 709))))
    (v128.bitselect (local.get $x) (local.get $p) (f64x2.ne (local.get $x) (local.get $x))))

  ;; tanh in f64 from exp(-2|y|) (relative error ~1e-16/|y|, far below f32's for |y| > 1e-8)
  (func $tanh (param $y f64) (result f64)
    (local $e f64) (local $t f64)
    (local.set $e (call $exp (f64.mul (f64.const -2) (f64.abs (local.get $y)))))
    (local.set $t (f64.div (f64.sub (f64.const 1) (local.get $e)) (f64.add (f64.const 1) (local.get $e))))
    (f64.copysign (local.get $t) (local.get $y)))

  ;; e^x on four f32 lanes for x <= 0 (Cephes expf: x = n·ln2 + r, a degree-7 polynomial in r,
  ;; times 2^n from its exponent bits); x below -87.3 (a result below 2^-126) gives 0, NaN stays NaN
  (func $expF4 (param $x v128) (result v128)
    (local $n v128) (local $r v128) (local $p v128) (local $r2 v128)
    (local.set $n (f32x4.nearest (f32x4.mul (local.get $x) (v128.const f32x4 1.44269504 1.44269504 1.44269504 1.44269504))))
    (local.set $r (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $n) (v128.const f32x4 0.693359375 0.693359375 0.693359375 0.693359375)))
      (f32x4.mul (local.get $n) (v128.const f32x4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4))))
    (local.set $r2 (f32x4.mul (local.get $r) (local.get $r)))
    (local.set $p (v128.const f32x4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1)))
    (local.set $p (f32x4.add (f32x4.add (f32x4.mul (local.get $p) (local.get $r2)) (local.get $r)) (v128.const f32x4 1 1 1 1)))
    (local.set $p (f32x4.mul (local.get $p) (i32x4.shl (i32x4.add (i32x4.trunc_sat_f32x4_s (local.get $n)) (v128.const i32x4 127 127 127 127)) (i32.const 23))))
    (v128.bitselect (v128.const i32x4 0 0 0 0) (local.get $p) (f32x4.lt (local.get $x) (v128.const f32x4 -87.3 -87.3 -87.3 -87.3))))

  ;; $expSum's work with $expF4, four values at a time: sc[i] = e^(sc[i] − m), −inf giving 0;
  ;; returns sum0 plus their sum: each of the four lanes added up in f64 in slot order, then
  ;; (lane 0 + lane 2) + (lane 1 + lane 3), then the tail one value at a time
  (func $expSumF4 (param $sc i32) (param $cnt i32) (param $m f32) (param $sum f64) (result f64)
    (local $i i32) (local $s f32) (local $v v128) (local $x v128) (local $mv v128) (local $p v128) (local $lo v128) (local $hi v128)
    (local.set $mv (f32x4.splat (local.get $m)))
    (block $d4 (loop $l4
      (br_if $d4 (i32.gt_u (i32.add (local.get $i) (i32.const 4)) (local.get $cnt)))
      (local.set $v (v128.load (local.get $sc)))
      (local.set $x (f32x4.sub (local.get $v) (local.get $mv)))
      (local.set $p (call $expF4 (local.get $x)))
      ;; masked slots (-inf) give 0
      (local.set $p (v128.andnot (local.get $p) (f32x4.eq (local.get $v) (v128.const f32x4 -inf -inf -inf -inf))))
      (local.set $lo (f64x2.add (local.get $lo) (f64x2.promote_low_f32x4 (local.get $p))))
      (local.set $hi (f64x2.add (local.get $hi) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $p) (local.get $p)))))
      (v128.store (local.get $sc) (local.get $p))
      (local.set $sc (i32.add (local.get $sc) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l4)))
    (local.set $lo (f64x2.add (local.get $lo) (local.get $hi)))
    (local.set $sum (f64.add (local.get $sum) (f64.add (f64x2.extract_lane 0 (local.get $lo)) (f64x2.extract_lane 1 (local.get $lo)))))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $cnt)))
      (local.set $s (f32.load (local.get $sc)))
      (local.set $s (if (result f32) (f32.eq (local.get $s) (f32.const -inf)) (then (f32.const 0))
        (else (f32x4.extract_lane 0 (call $expF4 (f32x4.splat (f32.sub (local.get $s) (local.get $m))))))))
      (local.set $sum (f64.add (local.get $sum) (f64.promote_f32 (local.get $s))))
      (f32.store (local.get $sc) (local.get $s))
      (local.set $sc (i32.add (local.get $sc) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $sum))

  ;; the largest of n f32 at sc (−inf when n = 0; a NaN among them gives NaN): four lanes at a
  ;; time, then the lanes, then the tail
  (func $max (param $sc i32) (param $n i32) (result f32)
    (local $i i32) (local $mv v128) (local $m f32)
    (local.set $mv (v128.const f32x4 -inf -inf -inf -inf))
    (block $d4 (loop $l4
      (br_if $d4 (i32.gt_u (i32.add (local.get $i) (i32.const 4)) (local.get $n)))
      (local.set $mv (f32x4.max (local.get $mv) (v128.load (local.get $sc))))
      (local.set $sc (i32.add (local.get $sc) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l4)))
    (local.set $m (f32.max (f32.max (f32x4.extract_lane 0 (local.get $mv)) (f32x4.extract_lane 1 (local.get $mv)))
      (f32.max (f32x4.extract_lane 2 (local.get $mv)) (f32x4.extract_lane 3 (local.get $mv)))))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $m (f32.max (local.get $m) (f32.load (local.get $sc))))
      (local.set $sc (i32.add (local.get $sc) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $m))

  ;; ------------------------------------------------------------------------------------------
  ;; decode attention over the KV cache, in place
  ;;
  ;; q      [B, nH, D]        f32, the attention scale already folded in
  ;; keys   [Bc, nKV, S, D]   f32, the cache's whole buffer
  ;; valsT  [Bc, nKV, D, S]   f32, values stored transposed
  ;; slots  [B, S + 2]        i32 per row: cache row, query position, then the position each slot
  ;;                          holds (-1 empty)
  ;; out    [B, nH, D]        f32
  ;; sc     [S]               f32 scratch (a tfjs tensor)
  ;; window 0 = none; cap 0 = no softcap (score = cap·tanh(score / cap))
  ;;
  ;; Slot j is seen when 0 <= pos_j <= qpos and (no window or qpos - pos_j < window). Softmax is
  ;; two-pass: scores into sc, then e^(s - max) / sum into sc, then out[d] = sc · valsT[d], which
  ;; reads both the keys and the transposed values contiguously, in order (a batch's cache comes
  ;; from memory, not cache, and the prefetcher keeps up with one stream: reading four keys or
  ;; four rows of valsT at a time measured 5–45% slower there, though faster on data in cache).
  ;; Only the slots a row sees get a dot product (a short row beside a long one pays for its own
  ;; slots); the max is taken four lanes at a time ($max) and the exp on four lanes ($expSumF4: f32
  ;; arithmetic, within 1 ulp of e^x over [−87.3, 0], checked at 2^20 points, its sum in f64).
  ;; One (row, head) at a time, so a row's result is the same alone or in any batch. Measured
  ;; against the form before (one slot at a time, its exp in f64), each layer's own cache (30
  ;; layers' worth, cycled): SmolLM2's shape 16 rows, 160 slots 587–594 → 501–502 µs, one row
  ;; 35 → 29; Qwen3-0.6B's 16 rows 1,678 → 1,480–1,495, one row 103–105 → 89–92; Qwen2.5-0.5B's
  ;; 842–848 → 721–727 and 50 → 42; gemma-3-270m's 742–755 → 699–730 and 36 → 33 (a form that
  ;; masked four slots at a time after taking every slot's dot; this one gives the same bits, ran
  ;; within 3% of it with every row long, and 33% faster with 15 rows of 16 tokens beside one of
  ;; 152, 26% with a 40-slot window).
  (func (export "decode_attention")
    (param $q i32) (param $keys i32) (param $valsT i32) (param $slots i32) (param $out i32) (param $sc i32)
    (param $B i32) (param $nH i32) (param $nKV i32) (param $S i32) (param $D i32)
    (param $window i32) (param $cap f64)
    (local $G i32) (local $b i32) (local $h i32) (local $g i32) (local $j i32) (local $d i32)
    (local $meta i32) (local $crow i32) (local $qpos i32) (local $pos i32)
    (local $kb i32) (local $vb i32) (local $qp i32) (local $op i32)
    (local $s f32) (local $m f32) (local $inv f32) (local $any i32)
    (local.set $G (i32.div_u (local.get $nH) (local.get $nKV)))
    (local.set $b (i32.const 0))
    (block $db (loop $lb
      (br_if $db (i32.ge_u (local.get $b) (local.get $B)))
      (local.set $meta (i32.add (local.get $slots)
        (i32.shl (i32.mul (local.get $b) (i32.add (local.get $S) (i32.const 2))) (i32.const 2))))
      (local.set $crow (i32.load (local.get $meta)))
      (local.set $qpos (i32.load offset=4 (local.get $meta)))
      (local.set $meta (i32.add (local.get $meta) (i32.const 8)))
      (local.set $h (i32.const 0))
      (block $dh (loop $lh
        (br_if $dh (i32.ge_u (local.get $h) (local.get $nKV)))
        ;; this kv head's keys and values: ((crow·nKV + h)·S·D) floats in
        (local.set $kb (i32.add (local.get $keys) (i32.shl
          (i32.mul (i32.mul (i32.add (i32.mul (local.get $crow) (local.get $nKV)) (local.get $h)) (local.get $S)) (local.get $D))
          (i32.const 2))))
        (local.set $vb (i32.add (local.get $valsT) (i32.sub (local.get $kb) (local.get $keys))))
        (local.set $g (i32.const 0))
        (block $dg (loop $lg
          (br_if $dg (i32.ge_u (local.get $g) (local.get $G)))
          ;; query head h·G + g of row b
          (local.set $qp (i32.shl (i32.mul
            (i32.add (i32.mul (local.get $b) (local.get $nH)) (i32.add (i32.mul (local.get $h) (local.get $G)) (local.get $g)))
            (local.get $D)) (i32.const 2)))
          (local.set $op (i32.add (local.get $out) (local.get $qp)))
          (local.set $qp (i32.add (local.get $q) (local.get $qp)))
          ;; pass 1: the scores of the slots this row may see, one slot after the other (the keys
          ;; read in order), -inf for the others; then their max four at a time
          (local.set $any (i32.const 0))
          (local.set $j (i32.const 0))
          (block $dj (loop $lj
            (br_if $dj (i32.ge_u (local.get $j) (local.get $S)))
            (local.set $pos (i32.load (i32.add (local.get $meta) (i32.shl (local.get $j) (i32.const 2)))))
            (if (i32.and
                  (i32.and (i32.ge_s (local.get $pos) (i32.const 0)) (i32.le_s (local.get $pos) (local.get $qpos)))
                  (i32.or (i32.eqz (local.get $window))
                          (i32.lt_s (i32.sub (local.get $qpos) (local.get $pos)) (local.get $window))))
              (then
                (local.set $s (call $dot (local.get $qp)
                  (i32.add (local.get $kb) (i32.shl (i32.mul (local.get $j) (local.get $D)) (i32.const 2)))
                  (local.get $D)))
                (if (f64.gt (local.get $cap) (f64.const 0))
                  (then (local.set $s (f32.demote_f64 (f64.mul (local.get $cap)
                    (call $tanh (f64.div (f64.promote_f32 (local.get $s)) (local.get $cap))))))))
                (local.set $any (i32.const 1))
                (f32.store (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2))) (local.get $s)))
              (else
                (f32.store (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2))) (f32.const -inf))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $lj)))
          (local.set $m (call $max (local.get $sc) (local.get $S)))
          ;; passes 2 and 3: e^(s - max) with their sum (masked slots give exactly 0; $expSumF4),
          ;; then the probabilities e / sum (as softmax gives them); a row that sees no slot gets
          ;; zeros
          (local.set $inv (select (f32.demote_f64 (f64.div (f64.const 1) (call $expSumF4 (local.get $sc) (local.get $S) (local.get $m) (f64.const 0))))
            (f32.const 0) (local.get $any)))
          (call $scale (local.get $sc) (local.get $S) (local.get $inv))
          ;; pass 4: out[d] = p · valsT[d]
          (local.set $d (i32.const 0))
          (block $dd (loop $ld
            (br_if $dd (i32.ge_u (local.get $d) (local.get $D)))
            (f32.store (i32.add (local.get $op) (i32.shl (local.get $d) (i32.const 2)))
              (call $dot (local.get $sc) (i32.add (local.get $vb) (i32.shl (i32.mul (local.get $d) (local.get $S)) (i32.const 2))) (local.get $S)))
            (local.set $d (i32.add (local.get $d) (i32.const 1)))
            (br $ld)))
          (local.set $g (i32.add (local.get $g) (i32.const 1)))
          (br $lg)))
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $lh)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $lb)))
  )

  ;; ------------------------------------------------------------------------------------------
  ;; RMSNorm, optionally after a residual add, optionally times a weight
  ;;
  ;; x, res  [N, H] f32 (res = 0: no residual); with res, sum = x + res is written to sumOut
  ;; w       [L] f32 (w = 0: none), L a multiple of H; row n uses w[(n·H) mod L ..][0, H)
  ;; out     [N, H] = (src · 1/sqrt(mean(src²) + eps)) · w, src = x + res or x
  (func (export "rms_norm")
    (param $x i32) (param $res i32) (param $w i32) (param $out i32) (param $sumOut i32)
    (param $N i32) (param $H i32) (param $L i32) (param $eps f32)
    (local $n i32) (local $i i32) (local $end4 i32) (local $src i32) (local $wr i32)
    (local $acc v128) (local $v v128) (local $ss f32) (local $e f32) (local $inv f32) (local $vinv v128)
    (local.set $end4 (i32.and (local.get $H) (i32.const -4)))
    (block $dn (loop $ln
      (br_if $dn (i32.ge_u (local.get $n) (local.get $N)))
      (local.set $src (i32.add (local.get $x) (i32.shl (i32.mul (local.get $n) (local.get $H)) (i32.const 2))))
      ;; pass 1: the residual sum (if any) and the sum of squares
      (if (local.get $res) (then
        (local.set $i (i32.const 0))
        (block $da (loop $la
          (br_if $da (i32.ge_u (local.get $i) (local.get $H)))
          (f32.store
            (i32.add (local.get $sumOut) (i32.shl (i32.add (i32.mul (local.get $n) (local.get $H)) (local.get $i)) (i32.const 2)))
            (f32.add
              (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))
              (f32.load (i32.add (local.get $res) (i32.shl (i32.add (i32.mul (local.get $n) (local.get $H)) (local.get $i)) (i32.const 2))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $la)))
        (local.set $src (i32.add (local.get $sumOut) (i32.shl (i32.mul (local.get $n) (local.get $H)) (i32.const 2))))))
      (local.set $acc (v128.const i32x4 0 0 0 0))
      (local.set $i (i32.const 0))
      (block $d4 (loop $l4
        (br_if $d4 (i32.ge_u (local.get $i) (local.get $end4)))
        (local.set $v (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (local.get $v) (local.get $v))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $l4)))
      (local.set $ss (f32.add
        (f32.add (f32x4.extract_lane 0 (local.get $acc)) (f32x4.extract_lane 1 (local.get $acc)))
        (f32.add (f32x4.extract_lane 2 (local.get $acc)) (f32x4.extract_lane 3 (local.get $acc)))))
      (block $d1 (loop $l1
        (br_if $d1 (i32.ge_u (local.get $i) (local.get $H)))
        (local.set $e (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $ss (f32.add (local.get $ss) (f32.mul (local.get $e) (local.get $e))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l1)))
      (local.set $inv (f32.div (f32.const 1)
        (f32.sqrt (f32.add (f32.div (local.get $ss) (f32.convert_i32_u (local.get $H))) (local.get $eps)))))
      ;; pass 2: scale (and weight)
      (local.set $wr (i32.add (local.get $w)
        (i32.shl (i32.rem_u (i32.mul (local.get $n) (local.get $H)) (select (local.get $L) (i32.const 1) (local.get $w))) (i32.const 2))))
      (local.set $i (i32.const 0))
      (block $dw (loop $lw
        (br_if $dw (i32.ge_u (local.get $i) (local.get $H)))
        (local.set $e (f32.mul (local.get $inv) (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))))
        (if (local.get $w) (then
          (local.set $e (f32.mul (local.get $e) (f32.load (i32.add (local.get $wr) (i32.shl (local.get $i) (i32.const 2))))))))
        (f32.store (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $n) (local.get $H)) (local.get $i)) (i32.const 2)))
          (local.get $e))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $lw)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $ln)))
  )

  ;; ------------------------------------------------------------------------------------------
  ;; RoPE (rotate-half convention) on a decode step's heads
  ;;
  ;; x [B, heads, D], cos and sin [B, D] (the row's position), out [B, heads, D]:
  ;;   out[i] = x[i]·cos[i] − x[i + D/2]·sin[i]          for i < D/2
  ;;   out[i] = x[i]·cos[i] + x[i − D/2]·sin[i]          for i >= D/2
  ;; (exactly the composite x·cos + rotate_half(x)·sin, rounding included)
  (func (export "rope")
    (param $x i32) (param $cos i32) (param $sin i32) (param $out i32) (param $B i32) (param $heads i32) (param $D i32)
    (local $b i32) (local $h i32) (local $i i32) (local $half i32) (local $xr i32) (local $or i32) (local $cr i32) (local $sr i32)
    (local $a f32) (local $c f32)
    (local.set $half (i32.shr_u (local.get $D) (i32.const 1)))
    (block $db (loop $lb
      (br_if $db (i32.ge_u (local.get $b) (local.get $B)))
      (local.set $cr (i32.add (local.get $cos) (i32.shl (i32.mul (local.get $b) (local.get $D)) (i32.const 2))))
      (local.set $sr (i32.add (local.get $sin) (i32.shl (i32.mul (local.get $b) (local.get $D)) (i32.const 2))))
      (local.set $h (i32.const 0))
      (block $dh (loop $lh
        (br_if $dh (i32.ge_u (local.get $h) (local.get $heads)))
        (local.set $xr (i32.shl (i32.mul (i32.add (i32.mul (local.get $b) (local.get $heads)) (local.get $h)) (local.get $D)) (i32.const 2)))
        (local.set $or (i32.add (local.get $out) (local.get $xr)))
        (local.set $xr (i32.add (local.get $x) (local.get $xr)))
        (local.set $i (i32.const 0))
        (block $di (loop $li
          (br_if $di (i32.ge_u (local.get $i) (local.get $half)))
          ;; i < half: x[i]·cos[i] − x[i+half]·sin[i]
          (local.set $a (f32.mul (f32.load (i32.add (local.get $xr) (i32.shl (local.get $i) (i32.const 2))))
                                 (f32.load (i32.add (local.get $cr) (i32.shl (local.get $i) (i32.const 2))))))
          (local.set $c (f32.mul (f32.load (i32.add (local.get $xr) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2))))
                                 (f32.load (i32.add (local.get $sr) (i32.shl (local.get $i) (i32.const 2))))))
          (f32.store (i32.add (local.get $or) (i32.shl (local.get $i) (i32.const 2))) (f32.sub (local.get $a) (local.get $c)))
          ;; i + half: x[i+half]·cos[i+half] + x[i]·sin[i+half]
          (local.set $a (f32.mul (f32.load (i32.add (local.get $xr) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2))))
                                 (f32.load (i32.add (local.get $cr) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2))))))
          (local.set $c (f32.mul (f32.load (i32.add (local.get $xr) (i32.shl (local.get $i) (i32.const 2))))
                                 (f32.load (i32.add (local.get $sr) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2))))))
          (f32.store (i32.add (local.get $or) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2))) (f32.add (local.get $a) (local.get $c)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $li)))
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $lh)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $lb)))
  )
;; ---- embedding rows by id (issue 14: MoI's K+1 rows, the tied lookup) ----

  ;; out[i, 0..H) = the row of ids[i] in a [V, H] table (cols = 0), or its column in an [H, V]
  ;; table (cols = 1: a tied head laid out [in, out], read with stride V). Returns 0, or i + 1 for
  ;; the first id outside [0, V) (nothing is read for it; the caller throws).
  (func (export "gather_rows")
    (param $table i32) (param $ids i32) (param $out i32) (param $n i32) (param $H i32) (param $V i32) (param $cols i32)
    (result i32)
    (local $i i32) (local $id i32) (local $h i32) (local $src i32) (local $dst i32) (local $end i32) (local $end16 i32) (local $stride i32)
    (local.set $stride (i32.shl (local.get $V) (i32.const 2)))
    (block $di
      (loop $li
        (br_if $di (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $id (i32.load (i32.add (local.get $ids) (i32.shl (local.get $i) (i32.const 2)))))
        (if (i32.ge_u (local.get $id) (local.get $V)) (then (return (i32.add (local.get $i) (i32.const 1)))))
        (local.set $dst (i32.add (local.get $out) (i32.shl (i32.mul (local.get $i) (local.get $H)) (i32.const 2))))
        (if (local.get $cols)
          (then
            ;; column id of [H, V]: H loads with stride V
            (local.set $src (i32.add (local.get $table) (i32.shl (local.get $id) (i32.const 2))))
            (local.set $h (i32.const 0))
            (block $dh
              (loop $lh
                (br_if $dh (i32.ge_u (local.get $h) (local.get $H)))
                (f32.store (local.get $dst) (f32.load (local.get $src)))
                (local.set $src (i32.add (local.get $src) (local.get $stride)))
                (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
                (local.set $h (i32.add (local.get $h) (i32.const 1)))
                (br $lh))))
          (else
            ;; row id of [V, H]: H contiguous values, 16 bytes a turn, then the tail
            (local.set $src (i32.add (local.get $table) (i32.shl (i32.mul (local.get $id) (local.get $H)) (i32.const 2))))
            (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $H) (i32.const 2))))
            (local.set $end16 (i32.add (local.get $dst) (i32.shl (i32.and (local.get $H) (i32.const -4)) (i32.const 2))))
            (block $d4
              (loop $l4
                (br_if $d4 (i32.ge_u (local.get $dst) (local.get $end16)))
                (v128.store (local.get $dst) (v128.load (local.get $src)))
                (local.set $src (i32.add (local.get $src) (i32.const 16)))
                (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
                (br $l4)))
            (block $d1
              (loop $l1
                (br_if $d1 (i32.ge_u (local.get $dst) (local.get $end)))
                (f32.store (local.get $dst) (f32.load (local.get $src)))
                (local.set $src (i32.add (local.get $src) (i32.const 4)))
                (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
                (br $l1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $li)))
    (i32.const 0)
  )

  ;; ---- the MoI step's top-K (mix-weights.ts) ----
  ;; the first i in [0, n) with x[i] > t, or n: 16 floats a turn (a NaN is never above), then one
  ;; at a time from the turn that holds it
  (func (export "first_above") (param $x i32) (param $n i32) (param $t f32) (result i32)
    (local $i i32) (local $n16 i32) (local $tv v128) (local $p i32)
    (local.set $tv (f32x4.splat (local.get $t)))
    (local.set $n16 (i32.and (local.get $n) (i32.const -16)))
    (block $d16
      (loop $l16
        (br_if $d16 (i32.ge_u (local.get $i) (local.get $n16)))
        (local.set $p (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2))))
        (br_if $d16
          (v128.any_true
            (v128.or
              (v128.or
                (f32x4.gt (v128.load (local.get $p)) (local.get $tv))
                (f32x4.gt (v128.load offset=16 (local.get $p)) (local.get $tv)))
              (v128.or
                (f32x4.gt (v128.load offset=32 (local.get $p)) (local.get $tv))
                (f32x4.gt (v128.load offset=48 (local.get $p)) (local.get $tv))))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $l16)))
    (block $d1
      (loop $l1
        (br_if $d1 (i32.ge_u (local.get $i) (local.get $n)))
        (br_if $d1 (f32.gt (f32.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2)))) (local.get $t)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l1)))
    (local.get $i)
  )

  ;; ---- prefill attention (issue 14) ----
  ;; Prefill (T > 1 tokens per row): attention over the cache's prefix plus the new tokens, read in
  ;; place in the [N, heads·D] layout the fused qkv projection makes (no transposes), and the q/k
  ;; norms with RoPE on those rows.

  ;; sc[i] = e^(sc[i] − m) for i in [0, n), −inf giving exactly 0; returns sum0 plus their sum
  ;; (f64, added in order, so the cache's part then the new tokens' adds up as one pass would)
  (func $expSum (param $sc i32) (param $n i32) (param $m f32) (param $sum f64) (result f64)
    (local $i i32) (local $s f32) (local $v v128) (local $e v128)
    ;; two at a time ($exp2, lane for lane $exp), the sum still added one value after the other
    (block $d2 (loop $l2
      (br_if $d2 (i32.gt_u (i32.add (local.get $i) (i32.const 2)) (local.get $n)))
      (local.set $v (v128.load64_zero (local.get $sc)))
      (local.set $e (f32x4.demote_f64x2_zero (call $exp2 (f64x2.sub (f64x2.promote_low_f32x4 (local.get $v))
        (f64x2.splat (f64.promote_f32 (local.get $m)))))))
      (local.set $e (v128.bitselect (v128.const i32x4 0 0 0 0) (local.get $e) (f32x4.eq (local.get $v) (v128.const f32x4 -inf -inf -inf -inf))))
      (local.set $sum (f64.add (local.get $sum) (f64.promote_f32 (f32x4.extract_lane 0 (local.get $e)))))
      (local.set $sum (f64.add (local.get $sum) (f64.promote_f32 (f32x4.extract_lane 1 (local.get $e)))))
      (v128.store64_lane 0 (local.get $sc) (local.get $e))
      (local.set $sc (i32.add (local.get $sc) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $l2)))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $s (f32.load (local.get $sc)))
      (if (f32.eq (local.get $s) (f32.const -inf))
        (then (local.set $s (f32.const 0)))
        (else (local.set $s (f32.demote_f64 (call $exp
          (f64.sub (f64.promote_f32 (local.get $s)) (f64.promote_f32 (local.get $m))))))))
      (local.set $sum (f64.add (local.get $sum) (f64.promote_f32 (local.get $s))))
      (f32.store (local.get $sc) (local.get $s))
      (local.set $sc (i32.add (local.get $sc) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $sum))

  ;; sc[i] ·= a for i in [0, n): four at a time, then one at a time (the same products)
  (func $scale (param $sc i32) (param $n i32) (param $a f32)
    (local $i i32) (local $av v128)
    (local.set $av (f32x4.splat (local.get $a)))
    (block $d4 (loop $l4
      (br_if $d4 (i32.gt_u (i32.add (local.get $i) (i32.const 4)) (local.get $n)))
      (v128.store (local.get $sc) (f32x4.mul (local.get $av) (v128.load (local.get $sc))))
      (local.set $sc (i32.add (local.get $sc) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l4)))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (f32.store (local.get $sc) (f32.mul (local.get $a) (f32.load (local.get $sc))))
      (local.set $sc (i32.add (local.get $sc) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))

  ;; Four dot products sharing one operand: dst + i·stride = q_i · k over n f32 (f32x4 steps
  ;; with one accumulator per query, lanes added pairwise, then a scalar tail)
  (func $dot4 (param $q0 i32) (param $q1 i32) (param $q2 i32) (param $q3 i32) (param $k i32) (param $n i32)
    (param $dst i32) (param $stride i32)
    (local $i i32) (local $o i32) (local $end4 i32) (local $kv v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $s0 f32) (local $s1 f32) (local $s2 f32) (local $s3 f32) (local $kf f32)
    (local.set $end4 (i32.and (local.get $n) (i32.const -4)))
    (block $d4 (loop $l4
      (br_if $d4 (i32.ge_u (local.get $i) (local.get $end4)))
      (local.set $kv (v128.load (i32.add (local.get $k) (local.get $o))))
      (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load (i32.add (local.get $q0) (local.get $o))) (local.get $kv))))
      (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (v128.load (i32.add (local.get $q1) (local.get $o))) (local.get $kv))))
      (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (v128.load (i32.add (local.get $q2) (local.get $o))) (local.get $kv))))
      (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (v128.load (i32.add (local.get $q3) (local.get $o))) (local.get $kv))))
      (local.set $o (i32.add (local.get $o) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l4)))
    (local.set $s0 (f32.add (f32.add (f32x4.extract_lane 0 (local.get $a0)) (f32x4.extract_lane 1 (local.get $a0)))
                            (f32.add (f32x4.extract_lane 2 (local.get $a0)) (f32x4.extract_lane 3 (local.get $a0)))))
    (local.set $s1 (f32.add (f32.add (f32x4.extract_lane 0 (local.get $a1)) (f32x4.extract_lane 1 (local.get $a1)))
                            (f32.add (f32x4.extract_lane 2 (local.get $a1)) (f32x4.extract_lane 3 (local.get $a1)))))
    (local.set $s2 (f32.add (f32.add (f32x4.extract_lane 0 (local.get $a2)) (f32x4.extract_lane 1 (local.get $a2)))
                            (f32.add (f32x4.extract_lane 2 (local.get $a2)) (f32x4.extract_lane 3 (local.get $a2)))))
    (local.set $s3 (f32.add (f32.add (f32x4.extract_lane 0 (local.get $a3)) (f32x4.extract_lane 1 (local.get $a3)))
                            (f32.add (f32x4.extract_lane 2 (local.get $a3)) (f32x4.extract_lane 3 (local.get $a3)))))
    (block $d1 (loop $l1
      (br_if $d1 (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $kf (f32.load (i32.add (local.get $k) (local.get $o))))
      (local.set $s0 (f32.add (local.get $s0) (f32.mul (f32.load (i32.add (local.get $q0) (local.get $o))) (local.get $kf))))
      (local.set $s1 (f32.add (local.get $s1) (f32.mul (f32.load (i32.add (local.get $q1) (local.get $o))) (local.get $kf))))
      (local.set $s2 (f32.add (local.get $s2) (f32.mul (f32.load (i32.add (local.get $q2) (local.get $o))) (local.get $kf))))
      (local.set $s3 (f32.add (local.get $s3) (f32.mul (f32.load (i32.add (local.get $q3) (local.get $o))) (local.get $kf))))
      (local.set $o (i32.add (local.get $o) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l1)))
    (f32.store (local.get $dst) (local.get $s0))
    (f32.store (i32.add (local.get $dst) (local.get $stride)) (local.get $s1))
    (f32.store (i32.add (local.get $dst) (i32.shl (local.get $stride) (i32.const 1))) (local.get $s2))
    (f32.store (i32.add (local.get $dst) (i32.mul (local.get $stride) (i32.const 3))) (local.get $s3)))

  ;; Four axpys sharing x: y_i[0, n) += a_i · x[0, n)
  (func $axpy4 (param $y0 i32) (param $y1 i32) (param $y2 i32) (param $y3 i32) (param $x i32)
    (param $a0 f32) (param $a1 f32) (param $a2 f32) (param $a3 f32) (param $n i32)
    (local $i i32) (local $o i32) (local $end4 i32) (local $xv v128) (local $xf f32)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128)
    (local.set $v0 (f32x4.splat (local.get $a0)))
    (local.set $v1 (f32x4.splat (local.get $a1)))
    (local.set $v2 (f32x4.splat (local.get $a2)))
    (local.set $v3 (f32x4.splat (local.get $a3)))
    (local.set $end4 (i32.and (local.get $n) (i32.const -4)))
    (block $d4 (loop $l4
      (br_if $d4 (i32.ge_u (local.get $i) (local.get $end4)))
      (local.set $xv (v128.load (i32.add (local.get $x) (local.get $o))))
      (v128.store (i32.add (local.get $y0) (local.get $o))
        (f32x4.add (v128.load (i32.add (local.get $y0) (local.get $o))) (f32x4.mul (local.get $v0) (local.get $xv))))
      (v128.store (i32.add (local.get $y1) (local.get $o))
        (f32x4.add (v128.load (i32.add (local.get $y1) (local.get $o))) (f32x4.mul (local.get $v1) (local.get $xv))))
      (v128.store (i32.add (local.get $y2) (local.get $o))
        (f32x4.add (v128.load (i32.add (local.get $y2) (local.get $o))) (f32x4.mul (local.get $v2) (local.get $xv))))
      (v128.store (i32.add (local.get $y3) (local.get $o))
        (f32x4.add (v128.load (i32.add (local.get $y3) (local.get $o))) (f32x4.mul (local.get $v3) (local.get $xv))))
      (local.set $o (i32.add (local.get $o) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l4)))
    (block $d1 (loop $l1
      (br_if $d1 (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $xf (f32.load (i32.add (local.get $x) (local.get $o))))
      (f32.store (i32.add (local.get $y0) (local.get $o)) (f32.add (f32.load (i32.add (local.get $y0) (local.get $o))) (f32.mul (local.get $a0) (local.get $xf))))
      (f32.store (i32.add (local.get $y1) (local.get $o)) (f32.add (f32.load (i32.add (local.get $y1) (local.get $o))) (f32.mul (local.get $a1) (local.get $xf))))
      (f32.store (i32.add (local.get $y2) (local.get $o)) (f32.add (f32.load (i32.add (local.get $y2) (local.get $o))) (f32.mul (local.get $a2) (local.get $xf))))
      (f32.store (i32.add (local.get $y3) (local.get $o)) (f32.add (f32.load (i32.add (local.get $y3) (local.get $o))) (f32.mul (local.get $a3) (local.get $xf))))
      (local.set $o (i32.add (local.get $o) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l1))))

  ;; Causal attention of B rows of T new tokens each (N = B·T):
  ;;
  ;; q      row n, head hq at q + (n·qs + hq·D)·4        (attention scale folded in)
  ;; k, v   row n, kv head h at k + (n·ks + h·D)·4, v + (n·vs + h·D)·4
  ;;        (qs, ks, vs: row strides in floats; q, k, v may be column ranges of one tensor)
  ;; keys   [Bc, nKV, S, D], valsT [Bc, nKV, D, S]   the cache's prefix (S = 0: none)
  ;; table  [B, S + 2] i32 per row: cache row, position of its first new token, then the position
  ;;        each cache slot holds (−1 empty)
  ;; out    [N, nH·D]
  ;; sc     [4·(S + T) + D + 8 + 64] f32 scratch: four score rows, a dummy output row, 8 pointers,
  ;;        16 splat vectors
  ;;
  ;; Query t of row b sits at position start + t and sees the cache slots with 0 <= pos <= its
  ;; position and the new tokens u <= t, within the window if any (qpos − pos < window).
  ;; Queries go four consecutive tokens at a time (one query head): each key and value row, of the
  ;; cache or new, is loaded once for the four (dot4, axpy4, 4×4 blocks of valsT), keys a query
  ;; may not see get −inf. Per query an exact softmax in passes over its score row (max,
  ;; e^(s − max) with their sum, the probabilities), then out = Σ p_j·v_j over the cache slots and
  ;; the new tokens, one slot after another in each output lane.
  ;; A block past the last token repeats that token's query into the dummy row.
  (func (export "prefill_attention")
    (param $q i32) (param $k i32) (param $v i32) (param $qs i32) (param $ks i32) (param $vs i32)
    (param $keys i32) (param $valsT i32) (param $table i32) (param $out i32) (param $sc i32)
    (param $B i32) (param $T i32) (param $nH i32) (param $nKV i32) (param $D i32) (param $S i32)
    (param $window i32) (param $cap f64)
    (local $G i32) (local $R i32) (local $b i32) (local $h i32) (local $t0 i32) (local $nq i32) (local $g i32) (local $i i32)
    (local $j i32) (local $u i32) (local $d i32) (local $ti i32) (local $hq i32)
    (local $meta i32) (local $crow i32) (local $start i32) (local $qpos i32) (local $pos i32) (local $ustart i32) (local $uend i32)
    (local $kb i32) (local $vb i32) (local $oi i32) (local $sci i32) (local $at i32) (local $dummy i32) (local $pt i32)
    (local $s f32) (local $m f32) (local $inv f32)
    (local $S4 i32) (local $D4 i32) (local $spl i32) (local $vp i32) (local $op i32)
    (local $p0 v128) (local $p1 v128) (local $p2 v128) (local $p3 v128)
    (local $r0 v128) (local $r1 v128) (local $r2 v128) (local $r3 v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local.set $G (i32.div_u (local.get $nH) (local.get $nKV)))
    (local.set $R (i32.add (local.get $S) (local.get $T)))
    (local.set $S4 (i32.and (local.get $S) (i32.const -4)))
    (local.set $D4 (i32.and (local.get $D) (i32.const -4)))
    (local.set $dummy (i32.add (local.get $sc) (i32.shl (i32.shl (local.get $R) (i32.const 2)) (i32.const 2))))
    (local.set $pt (i32.add (local.get $dummy) (i32.shl (local.get $D) (i32.const 2))))
    (local.set $spl (i32.add (local.get $pt) (i32.const 32)))
    (block $db (loop $lb
      (br_if $db (i32.ge_u (local.get $b) (local.get $B)))
      (local.set $meta (i32.add (local.get $table)
        (i32.shl (i32.mul (local.get $b) (i32.add (local.get $S) (i32.const 2))) (i32.const 2))))
      (local.set $crow (i32.load (local.get $meta)))
      (local.set $start (i32.load offset=4 (local.get $meta)))
      (local.set $meta (i32.add (local.get $meta) (i32.const 8)))
      (local.set $h (i32.const 0))
      (block $dh (loop $lh
        (br_if $dh (i32.ge_u (local.get $h) (local.get $nKV)))
        ;; this kv head's cache prefix: ((crow·nKV + h)·S·D) floats in
        (local.set $kb (i32.add (local.get $keys) (i32.shl
          (i32.mul (i32.mul (i32.add (i32.mul (local.get $crow) (local.get $nKV)) (local.get $h)) (local.get $S)) (local.get $D))
          (i32.const 2))))
        (local.set $vb (i32.add (local.get $valsT) (i32.sub (local.get $kb) (local.get $keys))))
        (local.set $t0 (i32.const 0))
        (block $dt (loop $lt
          (br_if $dt (i32.ge_u (local.get $t0) (local.get $T)))
          (local.set $nq (select (i32.const 4) (i32.sub (local.get $T) (local.get $t0))
            (i32.ge_u (i32.sub (local.get $T) (local.get $t0)) (i32.const 4))))
          ;; the new tokens the block may see: [ustart, uend]
          (local.set $uend (i32.add (local.get $t0) (i32.sub (local.get $nq) (i32.const 1))))
          (local.set $ustart (i32.const 0))
          (if (i32.and (i32.ne (local.get $window) (i32.const 0))
                       (i32.gt_s (i32.sub (local.get $t0) (local.get $window)) (i32.const -1)))
            (then (local.set $ustart (i32.add (i32.sub (local.get $t0) (local.get $window)) (i32.const 1)))))
          (local.set $g (i32.const 0))
          (block $dg (loop $lg
            (br_if $dg (i32.ge_u (local.get $g) (local.get $G)))
            (local.set $hq (i32.add (i32.mul (local.get $h) (local.get $G)) (local.get $g)))
            ;; the block's query and output pointers (past the last token: the last query, the dummy row)
            (local.set $i (i32.const 0))
            (block $dp (loop $lp
              (br_if $dp (i32.ge_u (local.get $i) (i32.const 4)))
              (local.set $ti (i32.add (i32.mul (local.get $b) (local.get $T)) (i32.add (local.get $t0)
                (select (local.get $i) (i32.sub (local.get $nq) (i32.const 1)) (i32.lt_u (local.get $i) (local.get $nq))))))
              (i32.store (i32.add (local.get $pt) (i32.shl (local.get $i) (i32.const 2)))
                (i32.add (local.get $q) (i32.shl (i32.add (i32.mul (local.get $ti) (local.get $qs)) (i32.mul (local.get $hq) (local.get $D))) (i32.const 2))))
              (i32.store offset=16 (i32.add (local.get $pt) (i32.shl (local.get $i) (i32.const 2)))
                (select
                  (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $ti) (i32.mul (local.get $nH) (local.get $D))) (i32.mul (local.get $hq) (local.get $D))) (i32.const 2)))
                  (local.get $dummy)
                  (i32.lt_u (local.get $i) (local.get $nq))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $lp)))
            ;; pass 0: raw scores of the cache slots, four queries per key row (row i at sc + i·R)
            (local.set $j (i32.const 0))
            (block $dk (loop $lk
              (br_if $dk (i32.ge_u (local.get $j) (local.get $S)))
              (call $dot4
                (i32.load (local.get $pt)) (i32.load offset=4 (local.get $pt)) (i32.load offset=8 (local.get $pt)) (i32.load offset=12 (local.get $pt))
                (i32.add (local.get $kb) (i32.shl (i32.mul (local.get $j) (local.get $D)) (i32.const 2)))
                (local.get $D)
                (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2)))
                (i32.shl (local.get $R) (i32.const 2)))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br $lk)))
            ;; pass 1: raw scores of the new tokens, the same way
            (local.set $u (local.get $ustart))
            (block $du (loop $lu
              (br_if $du (i32.gt_s (local.get $u) (local.get $uend)))
              (call $dot4
                (i32.load (local.get $pt)) (i32.load offset=4 (local.get $pt)) (i32.load offset=8 (local.get $pt)) (i32.load offset=12 (local.get $pt))
                (i32.add (local.get $k) (i32.shl (i32.add
                  (i32.mul (i32.add (i32.mul (local.get $b) (local.get $T)) (local.get $u)) (local.get $ks))
                  (i32.mul (local.get $h) (local.get $D))) (i32.const 2)))
                (local.get $D)
                (i32.add (local.get $sc) (i32.shl (i32.add (local.get $S) (local.get $u)) (i32.const 2)))
                (i32.shl (local.get $R) (i32.const 2)))
              (local.set $u (i32.add (local.get $u) (i32.const 1)))
              (br $lu)))
            ;; per query of the block
            (local.set $i (i32.const 0))
            (block $di (loop $li
              (br_if $di (i32.ge_u (local.get $i) (i32.const 4)))
              (local.set $ti (i32.add (local.get $t0) (local.get $i)))
              (local.set $qpos (i32.add (local.get $start) (local.get $ti)))
              (local.set $sci (i32.add (local.get $sc) (i32.shl (i32.mul (local.get $i) (local.get $R)) (i32.const 2))))
              (local.set $oi (i32.load offset=16 (i32.add (local.get $pt) (i32.shl (local.get $i) (i32.const 2)))))
              (local.set $m (f32.const -inf))
              ;; the cache slots it may see (−inf where it may not)
              (local.set $j (i32.const 0))
              (block $dj (loop $lj
                (br_if $dj (i32.ge_u (local.get $j) (local.get $S)))
                (local.set $pos (i32.load (i32.add (local.get $meta) (i32.shl (local.get $j) (i32.const 2)))))
                (if (i32.and
                      (i32.and (i32.ge_s (local.get $pos) (i32.const 0)) (i32.le_s (local.get $pos) (local.get $qpos)))
                      (i32.or (i32.eqz (local.get $window))
                              (i32.lt_s (i32.sub (local.get $qpos) (local.get $pos)) (local.get $window))))
                  (then
                    (local.set $s (f32.load (i32.add (local.get $sci) (i32.shl (local.get $j) (i32.const 2)))))
                    (if (f64.gt (local.get $cap) (f64.const 0))
                      (then (local.set $s (f32.demote_f64 (f64.mul (local.get $cap)
                        (call $tanh (f64.div (f64.promote_f32 (local.get $s)) (local.get $cap))))))))
                    (local.set $m (f32.max (local.get $m) (local.get $s))))
                  (else (local.set $s (f32.const -inf))))
                (f32.store (i32.add (local.get $sci) (i32.shl (local.get $j) (i32.const 2))) (local.get $s))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br $lj)))
              ;; the new tokens: −inf past it or outside the window, else softcapped
              (local.set $u (local.get $ustart))
              (block $dm (loop $lm
                (br_if $dm (i32.gt_s (local.get $u) (local.get $uend)))
                (local.set $at (i32.add (local.get $sci) (i32.shl (i32.add (local.get $S) (local.get $u)) (i32.const 2))))
                (if (i32.or (i32.gt_s (local.get $u) (local.get $ti))
                      (i32.and (i32.ne (local.get $window) (i32.const 0))
                               (i32.ge_s (i32.sub (local.get $ti) (local.get $u)) (local.get $window))))
                  (then (f32.store (local.get $at) (f32.const -inf)))
                  (else
                    (local.set $s (f32.load (local.get $at)))
                    (if (f64.gt (local.get $cap) (f64.const 0))
                      (then
                        (local.set $s (f32.demote_f64 (f64.mul (local.get $cap)
                          (call $tanh (f64.div (f64.promote_f32 (local.get $s)) (local.get $cap))))))
                        (f32.store (local.get $at) (local.get $s))))
                    (local.set $m (f32.max (local.get $m) (local.get $s)))))
                (local.set $u (i32.add (local.get $u) (i32.const 1)))
                (br $lm)))
              ;; e^(s − max), the sum, then the probabilities e / sum (its own token is always seen)
              (local.set $at (i32.add (local.get $sci) (i32.shl (i32.add (local.get $S) (local.get $ustart)) (i32.const 2))))
              (local.set $inv (f32.demote_f64 (f64.div (f64.const 1)
                (call $expSum (local.get $at) (i32.add (i32.sub (local.get $uend) (local.get $ustart)) (i32.const 1)) (local.get $m)
                  (call $expSum (local.get $sci) (local.get $S) (local.get $m) (f64.const 0))))))
              (call $scale (local.get $sci) (local.get $S) (local.get $inv))
              (call $scale (local.get $at) (i32.add (i32.sub (local.get $uend) (local.get $ustart)) (i32.const 1)) (local.get $inv))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $li)))
            ;; out_i = Σ p_i[j]·v_j over the cache slots, in slot order in every output lane (as the new
            ;; tokens' are added after them, so a chunked prefill adds the same terms in the same order
            ;; as one prefill). 4 slots × 4 lanes of valsT at a time, transposed in registers, for the
            ;; four queries; a block whose 16 probabilities are all 0 is skipped (adding p = 0 terms
            ;; changes no sum: the cache holds finite values, zeros where never written). Lanes past
            ;; D mod 4 and slots past S mod 4 one at a time (slots with p = 0 skipped).
            (local.set $i (i32.const 0))
            (block $dz (loop $lz
              (br_if $dz (i32.ge_u (local.get $i) (i32.const 4)))
              (local.set $oi (i32.load offset=16 (i32.add (local.get $pt) (i32.shl (local.get $i) (i32.const 2)))))
              (local.set $d (i32.const 0))
              (block $dz2 (loop $lz2
                (br_if $dz2 (i32.ge_u (local.get $d) (local.get $D)))
                (f32.store (i32.add (local.get $oi) (i32.shl (local.get $d) (i32.const 2))) (f32.const 0))
                (local.set $d (i32.add (local.get $d) (i32.const 1)))
                (br $lz2)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $lz)))
            (local.set $j (i32.const 0))
            (block $dc (loop $lc
              (br_if $dc (i32.ge_u (local.get $j) (local.get $S4)))
              (local.set $at (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2))))
              (local.set $p0 (v128.load (local.get $at)))
              (local.set $p1 (v128.load (i32.add (local.get $at) (i32.shl (local.get $R) (i32.const 2)))))
              (local.set $p2 (v128.load (i32.add (local.get $at) (i32.shl (local.get $R) (i32.const 3)))))
              (local.set $p3 (v128.load (i32.add (local.get $at) (i32.mul (local.get $R) (i32.const 12)))))
              (if (v128.any_true (v128.or (v128.or (local.get $p0) (local.get $p1)) (v128.or (local.get $p2) (local.get $p3))))
                (then
                  (v128.store offset=0 (local.get $spl) (f32x4.splat (f32x4.extract_lane 0 (local.get $p0))))
                  (v128.store offset=16 (local.get $spl) (f32x4.splat (f32x4.extract_lane 1 (local.get $p0))))
                  (v128.store offset=32 (local.get $spl) (f32x4.splat (f32x4.extract_lane 2 (local.get $p0))))
                  (v128.store offset=48 (local.get $spl) (f32x4.splat (f32x4.extract_lane 3 (local.get $p0))))
                  (v128.store offset=64 (local.get $spl) (f32x4.splat (f32x4.extract_lane 0 (local.get $p1))))
                  (v128.store offset=80 (local.get $spl) (f32x4.splat (f32x4.extract_lane 1 (local.get $p1))))
                  (v128.store offset=96 (local.get $spl) (f32x4.splat (f32x4.extract_lane 2 (local.get $p1))))
                  (v128.store offset=112 (local.get $spl) (f32x4.splat (f32x4.extract_lane 3 (local.get $p1))))
                  (v128.store offset=128 (local.get $spl) (f32x4.splat (f32x4.extract_lane 0 (local.get $p2))))
                  (v128.store offset=144 (local.get $spl) (f32x4.splat (f32x4.extract_lane 1 (local.get $p2))))
                  (v128.store offset=160 (local.get $spl) (f32x4.splat (f32x4.extract_lane 2 (local.get $p2))))
                  (v128.store offset=176 (local.get $spl) (f32x4.splat (f32x4.extract_lane 3 (local.get $p2))))
                  (v128.store offset=192 (local.get $spl) (f32x4.splat (f32x4.extract_lane 0 (local.get $p3))))
                  (v128.store offset=208 (local.get $spl) (f32x4.splat (f32x4.extract_lane 1 (local.get $p3))))
                  (v128.store offset=224 (local.get $spl) (f32x4.splat (f32x4.extract_lane 2 (local.get $p3))))
                  (v128.store offset=240 (local.get $spl) (f32x4.splat (f32x4.extract_lane 3 (local.get $p3))))
                  (local.set $d (i32.const 0))
                  (block $dd (loop $ld
                    (br_if $dd (i32.ge_u (local.get $d) (local.get $D4)))
                    (local.set $vp (i32.add (local.get $vb) (i32.shl (i32.add (i32.mul (local.get $d) (local.get $S)) (local.get $j)) (i32.const 2))))
                    (local.set $r0 (v128.load (local.get $vp)))
                    (local.set $vp (i32.add (local.get $vp) (i32.shl (local.get $S) (i32.const 2))))
                    (local.set $r1 (v128.load (local.get $vp)))
                    (local.set $vp (i32.add (local.get $vp) (i32.shl (local.get $S) (i32.const 2))))
                    (local.set $r2 (v128.load (local.get $vp)))
                    (local.set $vp (i32.add (local.get $vp) (i32.shl (local.get $S) (i32.const 2))))
                    (local.set $r3 (v128.load (local.get $vp)))
                    (local.set $c0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $r0) (local.get $r1)))
                    (local.set $c1 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $r0) (local.get $r1)))
                    (local.set $c2 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $r2) (local.get $r3)))
                    (local.set $c3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $r2) (local.get $r3)))
                    (local.set $r0 (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $c0) (local.get $c2)))
                    (local.set $r1 (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $c0) (local.get $c2)))
                    (local.set $r2 (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $c1) (local.get $c3)))
                    (local.set $r3 (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $c1) (local.get $c3)))
                    (local.set $c0 (local.get $r0)) (local.set $c1 (local.get $r1)) (local.set $c2 (local.get $r2)) (local.set $c3 (local.get $r3))
                    (local.set $op (i32.add (i32.load offset=16 (local.get $pt)) (i32.shl (local.get $d) (i32.const 2))))
                    (v128.store (local.get $op) (f32x4.add (f32x4.add (f32x4.add (f32x4.add (v128.load (local.get $op))
                      (f32x4.mul (v128.load offset=0 (local.get $spl)) (local.get $c0)))
                      (f32x4.mul (v128.load offset=16 (local.get $spl)) (local.get $c1)))
                      (f32x4.mul (v128.load offset=32 (local.get $spl)) (local.get $c2)))
                      (f32x4.mul (v128.load offset=48 (local.get $spl)) (local.get $c3))))
                    (local.set $op (i32.add (i32.load offset=20 (local.get $pt)) (i32.shl (local.get $d) (i32.const 2))))
                    (v128.store (local.get $op) (f32x4.add (f32x4.add (f32x4.add (f32x4.add (v128.load (local.get $op))
                      (f32x4.mul (v128.load offset=64 (local.get $spl)) (local.get $c0)))
                      (f32x4.mul (v128.load offset=80 (local.get $spl)) (local.get $c1)))
                      (f32x4.mul (v128.load offset=96 (local.get $spl)) (local.get $c2)))
                      (f32x4.mul (v128.load offset=112 (local.get $spl)) (local.get $c3))))
                    (local.set $op (i32.add (i32.load offset=24 (local.get $pt)) (i32.shl (local.get $d) (i32.const 2))))
                    (v128.store (local.get $op) (f32x4.add (f32x4.add (f32x4.add (f32x4.add (v128.load (local.get $op))
                      (f32x4.mul (v128.load offset=128 (local.get $spl)) (local.get $c0)))
                      (f32x4.mul (v128.load offset=144 (local.get $spl)) (local.get $c1)))
                      (f32x4.mul (v128.load offset=160 (local.get $spl)) (local.get $c2)))
                      (f32x4.mul (v128.load offset=176 (local.get $spl)) (local.get $c3))))
                    (local.set $op (i32.add (i32.load offset=28 (local.get $pt)) (i32.shl (local.get $d) (i32.const 2))))
                    (v128.store (local.get $op) (f32x4.add (f32x4.add (f32x4.add (f32x4.add (v128.load (local.get $op))
                      (f32x4.mul (v128.load offset=192 (local.get $spl)) (local.get $c0)))
                      (f32x4.mul (v128.load offset=208 (local.get $spl)) (local.get $c1)))
                      (f32x4.mul (v128.load offset=224 (local.get $spl)) (local.get $c2)))
                      (f32x4.mul (v128.load offset=240 (local.get $spl)) (local.get $c3))))
                    (local.set $d (i32.add (local.get $d) (i32.const 4)))
                    (br $ld)))
                  ;; lanes past D mod 4: each slot of the block in order, each query
                  (block $dd1 (loop $ld1
                    (br_if $dd1 (i32.ge_u (local.get $d) (local.get $D)))
                    (local.set $u (i32.const 0))
                    (block $du1 (loop $lu1
                      (br_if $du1 (i32.ge_u (local.get $u) (i32.const 4)))
                      (local.set $c0 (f32x4.splat (f32.load (i32.add (local.get $vb) (i32.shl (i32.add (i32.mul (local.get $d) (local.get $S)) (i32.add (local.get $j) (local.get $u))) (i32.const 2))))))
                      (local.set $p0 (v128.load32_splat (i32.add (local.get $at) (i32.shl (local.get $u) (i32.const 2)))))
                      (local.set $p1 (v128.load32_splat (i32.add (i32.add (local.get $at) (i32.shl (local.get $u) (i32.const 2))) (i32.shl (local.get $R) (i32.const 2)))))
                      (local.set $p2 (v128.load32_splat (i32.add (i32.add (local.get $at) (i32.shl (local.get $u) (i32.const 2))) (i32.shl (local.get $R) (i32.const 3)))))
                      (local.set $p3 (v128.load32_splat (i32.add (i32.add (local.get $at) (i32.shl (local.get $u) (i32.const 2))) (i32.mul (local.get $R) (i32.const 12)))))
                      (local.set $op (i32.add (i32.load offset=16 (local.get $pt)) (i32.shl (local.get $d) (i32.const 2))))
                      (f32.store (local.get $op) (f32.add (f32.load (local.get $op)) (f32.mul (f32x4.extract_lane 0 (local.get $p0)) (f32x4.extract_lane 0 (local.get $c0)))))
                      (local.set $op (i32.add (i32.load offset=20 (local.get $pt)) (i32.shl (local.get $d) (i32.const 2))))
                      (f32.store (local.get $op) (f32.add (f32.load (local.get $op)) (f32.mul (f32x4.extract_lane 0 (local.get $p1)) (f32x4.extract_lane 0 (local.get $c0)))))
                      (local.set $op (i32.add (i32.load offset=24 (local.get $pt)) (i32.shl (local.get $d) (i32.const 2))))
                      (f32.store (local.get $op) (f32.add (f32.load (local.get $op)) (f32.mul (f32x4.extract_lane 0 (local.get $p2)) (f32x4.extract_lane 0 (local.get $c0)))))
                      (local.set $op (i32.add (i32.load offset=28 (local.get $pt)) (i32.shl (local.get $d) (i32.const 2))))
                      (f32.store (local.get $op) (f32.add (f32.load (local.get $op)) (f32.mul (f32x4.extract_lane 0 (local.get $p3)) (f32x4.extract_lane 0 (local.get $c0)))))
                      (local.set $u (i32.add (local.get $u) (i32.const 1)))
                      (br $lu1)))
                    (local.set $d (i32.add (local.get $d) (i32.const 1)))
                    (br $ld1)))))
              (local.set $j (i32.add (local.get $j) (i32.const 4)))
              (br $lc)))
            ;; slots past S mod 4, each query (p = 0 skipped)
            (block $dt1 (loop $lt1
              (br_if $dt1 (i32.ge_u (local.get $j) (local.get $S)))
              (local.set $i (i32.const 0))
              (block $di1 (loop $li1
                (br_if $di1 (i32.ge_u (local.get $i) (i32.const 4)))
                (local.set $s (f32.load (i32.add (local.get $sc) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $R)) (local.get $j)) (i32.const 2)))))
                (local.set $oi (i32.load offset=16 (i32.add (local.get $pt) (i32.shl (local.get $i) (i32.const 2)))))
                (if (f32.ne (local.get $s) (f32.const 0))
                  (then
                    (local.set $d (i32.const 0))
                    (block $dd2 (loop $ld2
                      (br_if $dd2 (i32.ge_u (local.get $d) (local.get $D)))
                      (local.set $at (i32.add (local.get $oi) (i32.shl (local.get $d) (i32.const 2))))
                      (f32.store (local.get $at) (f32.add (f32.load (local.get $at)) (f32.mul (local.get $s)
                        (f32.load (i32.add (local.get $vb) (i32.shl (i32.add (i32.mul (local.get $d) (local.get $S)) (local.get $j)) (i32.const 2)))))))
                      (local.set $d (i32.add (local.get $d) (i32.const 1)))
                      (br $ld2)))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $li1)))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br $lt1)))
            ;; out_i += p_i[u] · v_u over the new tokens, four outputs per value row
            (local.set $u (local.get $ustart))
            (block $dv (loop $lv
              (br_if $dv (i32.gt_s (local.get $u) (local.get $uend)))
              (local.set $at (i32.add (local.get $sc) (i32.shl (i32.add (local.get $S) (local.get $u)) (i32.const 2))))
              (call $axpy4
                (i32.load offset=16 (local.get $pt)) (i32.load offset=20 (local.get $pt)) (i32.load offset=24 (local.get $pt)) (i32.load offset=28 (local.get $pt))
                (i32.add (local.get $v) (i32.shl (i32.add
                  (i32.mul (i32.add (i32.mul (local.get $b) (local.get $T)) (local.get $u)) (local.get $vs))
                  (i32.mul (local.get $h) (local.get $D))) (i32.const 2)))
                (f32.load (local.get $at))
                (f32.load (i32.add (local.get $at) (i32.shl (local.get $R) (i32.const 2))))
                (f32.load (i32.add (local.get $at) (i32.shl (local.get $R) (i32.const 3))))
                (f32.load (i32.add (local.get $at) (i32.mul (local.get $R) (i32.const 12))))
                (local.get $D))
              (local.set $u (i32.add (local.get $u) (i32.const 1)))
              (br $lv)))
            (local.set $g (i32.add (local.get $g) (i32.const 1)))
            (br $lg)))
          (local.set $t0 (i32.add (local.get $t0) (i32.const 4)))
          (br $lt)))
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $lh)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $lb)))
  )

  ;; q/k heads of prefill rows: optional per-head RMSNorm, then RoPE (rotate-half, full rotary dim)
  ;;
  ;; x    row n, head hd at x + (n·xs + hd·D)·4 (xs: row stride in floats, e.g. the fused qkv's)
  ;; w    [heads, D] norm weights (w = 0: no norm)
  ;; cos, sin [N, D] (row n's position), out [N, heads, D]
  ;; The same arithmetic, in the same order, as rms_norm then rope on [N, heads, D].
  (func (export "prefill_qk")
    (param $x i32) (param $xs i32) (param $w i32) (param $cos i32) (param $sin i32) (param $out i32)
    (param $N i32) (param $heads i32) (param $D i32) (param $eps f32)
    (local $n i32) (local $hd i32) (local $i i32) (local $half i32) (local $end4 i32)
    (local $src i32) (local $dst i32) (local $wr i32) (local $cr i32) (local $sr i32)
    (local $acc v128) (local $vv v128) (local $ss f32) (local $e f32) (local $inv f32) (local $a f32) (local $b f32)
    (local.set $half (i32.shr_u (local.get $D) (i32.const 1)))
    (local.set $end4 (i32.and (local.get $D) (i32.const -4)))
    (block $dn (loop $ln
      (br_if $dn (i32.ge_u (local.get $n) (local.get $N)))
      (local.set $cr (i32.add (local.get $cos) (i32.shl (i32.mul (local.get $n) (local.get $D)) (i32.const 2))))
      (local.set $sr (i32.add (local.get $sin) (i32.shl (i32.mul (local.get $n) (local.get $D)) (i32.const 2))))
      (local.set $hd (i32.const 0))
      (block $dh (loop $lh
        (br_if $dh (i32.ge_u (local.get $hd) (local.get $heads)))
        (local.set $src (i32.add (local.get $x) (i32.shl (i32.add
          (i32.mul (local.get $n) (local.get $xs)) (i32.mul (local.get $hd) (local.get $D))) (i32.const 2))))
        (local.set $dst (i32.add (local.get $out) (i32.shl
          (i32.mul (i32.add (i32.mul (local.get $n) (local.get $heads)) (local.get $hd)) (local.get $D)) (i32.const 2))))
        (if (local.get $w)
          (then
            ;; RMSNorm as rms_norm computes it: f32x4 partial sums of squares, lanes added pairwise,
            ;; a scalar tail, 1/sqrt(mean + eps), then (inv·x)·w
            (local.set $acc (v128.const i32x4 0 0 0 0))
            (local.set $i (i32.const 0))
            (block $d4 (loop $l4
              (br_if $d4 (i32.ge_u (local.get $i) (local.get $end4)))
              (local.set $vv (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
              (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (local.get $vv) (local.get $vv))))
              (local.set $i (i32.add (local.get $i) (i32.const 4)))
              (br $l4)))
            (local.set $ss (f32.add
              (f32.add (f32x4.extract_lane 0 (local.get $acc)) (f32x4.extract_lane 1 (local.get $acc)))
              (f32.add (f32x4.extract_lane 2 (local.get $acc)) (f32x4.extract_lane 3 (local.get $acc)))))
            (block $d1 (loop $l1
              (br_if $d1 (i32.ge_u (local.get $i) (local.get $D)))
              (local.set $e (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
              (local.set $ss (f32.add (local.get $ss) (f32.mul (local.get $e) (local.get $e))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $l1)))
            (local.set $inv (f32.div (f32.const 1)
              (f32.sqrt (f32.add (f32.div (local.get $ss) (f32.convert_i32_u (local.get $D))) (local.get $eps)))))
            (local.set $wr (i32.add (local.get $w) (i32.shl (i32.mul (local.get $hd) (local.get $D)) (i32.const 2))))
            (local.set $i (i32.const 0))
            (block $dw (loop $lw
              (br_if $dw (i32.ge_u (local.get $i) (local.get $D)))
              (f32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
                (f32.mul (f32.mul (local.get $inv) (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
                         (f32.load (i32.add (local.get $wr) (i32.shl (local.get $i) (i32.const 2))))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $lw)))
            (local.set $src (local.get $dst))))
        ;; RoPE from src into dst (in place when normed: each pair is read before it is written)
        (local.set $i (i32.const 0))
        (block $dr (loop $lr
          (br_if $dr (i32.ge_u (local.get $i) (local.get $half)))
          (local.set $a (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
          (local.set $b (f32.load (i32.add (local.get $src) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2)))))
          (f32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
            (f32.sub (f32.mul (local.get $a) (f32.load (i32.add (local.get $cr) (i32.shl (local.get $i) (i32.const 2)))))
                     (f32.mul (local.get $b) (f32.load (i32.add (local.get $sr) (i32.shl (local.get $i) (i32.const 2)))))))
          (f32.store (i32.add (local.get $dst) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2)))
            (f32.add (f32.mul (local.get $b) (f32.load (i32.add (local.get $cr) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2)))))
                     (f32.mul (local.get $a) (f32.load (i32.add (local.get $sr) (i32.shl (i32.add (local.get $i) (local.get $half)) (i32.const 2)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $lr)))
        (local.set $hd (i32.add (local.get $hd) (i32.const 1)))
        (br $lh)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $ln)))
  )
)
