import wabtInit from 'wabt';
import { enableRelaxedSimd, compileOptimized } from './simd.ts';
enableRelaxedSimd();
const wabt = await wabtInit();
// broadcast form: X x rows (splats) × V vectors of 4 weight rows; per k: V panel loads, X splats, X·V fma
function bcast(name: string, X: number, V: number, fused: boolean, unroll = 4) {
  const acc = (i: number, v: number) => `$a${i}_${v}`;
  const L: string[] = [];
  for (let u = 0; u < unroll; u++) {
    for (let v = 0; v < V; v++) L.push(`(local.set $w${v} (v128.load offset=${16 * V * u + 16 * v} (local.get $p)))`);
    for (let i = 0; i < X; i++) {
      L.push(`(local.set $x (v128.load32_splat offset=${4 * u + 4096 + 512 * i} (local.get $q)))`);
      for (let v = 0; v < V; v++) L.push(`(local.set ${acc(i, v)} ${fused ? `(f32x4.relaxed_madd (local.get $w${v}) (local.get $x) (local.get ${acc(i, v)}))` : `(f32x4.add (local.get ${acc(i, v)}) (f32x4.mul (local.get $w${v}) (local.get $x)))`})`);
    }
  }
  const locals = [];
  for (let v = 0; v < V; v++) { locals.push(`(local $w${v} v128)`); for (let i = 0; i < X; i++) locals.push(`(local ${acc(i, v)} v128)`); }
  let sum = '(local.get $a0_0)';
  for (let i = 0; i < X; i++) for (let v = 0; v < V; v++) if (i + v) sum = `(f32x4.add ${sum} (local.get ${acc(i, v)}))`;
  return `(func (export "${name}") (param $n i32) (result f32) (local $i i32) (local $p i32) (local $q i32) (local $x v128) ${locals.join(' ')}
  (loop $l
    (local.set $p (i32.and (i32.mul (local.get $i) (i32.const ${16 * V * unroll})) (i32.const 2047)))
    (local.set $q (i32.and (i32.mul (local.get $i) (i32.const ${4 * unroll})) (i32.const 255)))
    ${L.join('\n')}
    (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
  (f32x4.extract_lane 0 ${sum}))`;
}
const variants: [string, number, number, boolean][] = [['b4x2f', 4, 2, true], ['b4x2m', 4, 2, false], ['b6x2f', 6, 2, true], ['b6x2m', 6, 2, false], ['b3x4f', 3, 4, true], ['b2x4f', 2, 4, true], ['b1x8f', 1, 8, true], ['b1x8m', 1, 8, false], ['b5x2f', 5, 2, true]];
const wat = `(module (memory 1) ${variants.map(([n, X, V, f]) => bcast(n, X, V, f)).join('\n')})`;
const f = { simd: true, relaxed_simd: true };
const m = wabt.parseWat('m.wat', wat, f); m.resolveNames(); (m as any).validate(f);
const ex = new WebAssembly.Instance(compileOptimized(new Uint8Array(m.toBinary({}).buffer)), {}).exports as any;
for (const [k, X, V] of variants) {
  ex[k](1000);
  const best = [];
  for (let r = 0; r < 5; r++) { const c0 = process.cpuUsage(); ex[k](5e6); const u = process.cpuUsage(c0); best.push((u.user + u.system) * 1000 / 5e6 / 4 / (X * V)); }
  best.sort((a, b) => a - b);
  console.log(k, 'ns per fma', best[0].toFixed(3), 'GFLOP/s', (8 / best[0]).toFixed(1));
}
