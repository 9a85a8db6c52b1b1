import wabtInit from 'wabt';
import { enableRelaxedSimd, compileOptimized } from './simd.ts';
enableRelaxedSimd();
const wabt = await wabtInit();
function tile(name: string, X: number, R: number, fused: boolean, unroll = 4) {
  const acc = (r: number, i: number) => `$a${r}_${i}`;
  const L: string[] = [];
  for (let u = 0; u < unroll; u++) {
    for (let r = 0; r < R; r++) L.push(`(local.set $w${r} (v128.load offset=${16 * u + 4096 * r} (local.get $p)))`);
    for (let i = 0; i < X; i++) {
      L.push(`(local.set $x (v128.load offset=${16 * u + 4096 * (R + i)} (local.get $p)))`);
      for (let r = 0; r < R; r++) L.push(`(local.set ${acc(r, i)} ${fused ? `(f32x4.relaxed_madd (local.get $w${r}) (local.get $x) (local.get ${acc(r, i)}))` : `(f32x4.add (local.get ${acc(r, i)}) (f32x4.mul (local.get $w${r}) (local.get $x)))`})`);
    }
  }
  const locals = [];
  for (let r = 0; r < R; r++) { locals.push(`(local $w${r} v128)`); for (let i = 0; i < X; i++) locals.push(`(local ${acc(r, i)} v128)`); }
  let sum = '(local.get $a0_0)';
  for (let r = 0; r < R; r++) for (let i = 0; i < X; i++) if (r + i) sum = `(f32x4.add ${sum} (local.get ${acc(r, i)}))`;
  return `(func (export "${name}") (param $n i32) (result f32) (local $i i32) (local $p i32) (local $x v128) ${locals.join(' ')}
  (loop $l
    (local.set $p (i32.and (i32.shl (local.get $i) (i32.const ${Math.log2(16 * unroll)})) (i32.const 2047)))
    ${L.join('\n')}
    (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
  (f32x4.extract_lane 0 ${sum}))`;
}
const variants: [string, number, number, boolean][] = [['x4r2f', 4, 2, true], ['x4r2m', 4, 2, false], ['x2r4f', 2, 4, true], ['x1r8f', 1, 8, true], ['x3r4f', 3, 4, true], ['x4r3f', 4, 3, true], ['x2r6f', 2, 6, true], ['x6r2f', 6, 2, true]];
const wat = `(module (memory 1) ${variants.map(([n, X, R, f]) => tile(n, X, R, f)).join('\n')})`;
const f = { simd: true, relaxed_simd: true };
const m = wabt.parseWat('m.wat', wat, f); m.resolveNames(); (m as any).validate(f);
const ex = new WebAssembly.Instance(compileOptimized(new Uint8Array(m.toBinary({}).buffer)), {}).exports as any;
for (const [k, X, R] of variants) {
  ex[k](1000);
  const best = [];
  for (let r = 0; r < 5; r++) { const c0 = process.cpuUsage(); ex[k](5e6); const u = process.cpuUsage(c0); best.push((u.user + u.system) * 1000 / 5e6 / 4 / (X * R)); }
  best.sort((a, b) => a - b);
  console.log(k, 'ns per fma', best[0].toFixed(3), best[2].toFixed(3), 'GFLOP/s', (8 / best[0]).toFixed(1));
}
