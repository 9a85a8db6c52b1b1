/**
 * Benchmark of the packed-weight matmul kernels (issue 15) against today's f32 path, on the wasm
 * backend: per matrix shape and batch N, XNNPACK's f32 `tf.matMul(x [N, in], W [in, out])`
 * (weights pre-transposed, warmed so XNNPACK has packed them) next to our packedMatMul on bf16,
 * f16 and q8 weights in the checkpoint's [out, in] layout. Not a test: speed is never asserted.
 *
 *   node_modules/.bin/tsx bench/gemv.ts [--shapes smol|qwen|all] [--ns 1,4,16,128] [--repeats 5]
 *     [--ms 60] [--json FILE]
 *
 * The calls are interleaved (f32, bf16, f16, q8, then again) and each figure is the median over
 * the repeats of µs per call, so the ratios come from one run on a noisy shared machine; the time
 * is the process's CPU time (wall time on a loaded machine mostly measures the other jobs).
 * N ≥ 4 runs the panel GEMM (gemm_K), fewer rows the dot-product tiles (matmul_K). Effective
 * GB/s counts the weight bytes each call reads once (f32 4, bf16/f16 2, q8 1 + 4/32 per weight).
 * Head shapes skip N = 128 (prefill takes the head for its last token only). The weights are
 * random (uniform ±0.05, so f16 has no subnormals), the same values in every dtype.
 *
 * Measured 2026-11-24 on the shared 2-core machine (load ~10; CPU time): N = 1, bf16 0.73–1.37×
 * f32 (above 1 only where f32 streams from DRAM: heads, Qwen gate+up and down), f16 0.24–0.40×;
 * N = 4, 0.42–0.76×; N = 16, 0.59–0.85×; N = 128, 0.72–0.93×. The bf16/f16 decode tiles run at
 * about 19–24 GB/s of bf16 whatever the size: instruction-bound (per 4 weights a widen, a
 * multiply, an add and an x load, no fused multiply-add in wasm SIMD128).
 * Measured 2026-11-25 (quiet machine, 3 repeats): q8 at N = 1, which multiplies integers against x
 * rounded to 16 bits (matmul_q8x16), 1.16–1.98× f32 at 15–20 GB/s of q8 (the dequantizing tile it
 * replaced: 0.63–0.92×, 8–9 GB/s); q8 runs that tile for N < 12 (N = 2: 1.32–2.03×) and the GEMM
 * on the rounded values from 12 rows on.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import {
  disposePacked,
  f32ToBf16,
  f32ToF16,
  initBackend,
  pack16,
  packedBytes,
  packedMatMul,
  packQ8,
  type PackedWeight,
} from '../packages/core/src/index.ts';

const { values: a } = parseArgs({
  options: {
    shapes: { type: 'string', default: 'all' },
    ns: { type: 'string', default: '1,4,16,128' },
    repeats: { type: 'string', default: '5' },
    ms: { type: 'string', default: '60' },
    json: { type: 'string' },
  },
});

interface Shape {
  model: string;
  name: string;
  inF: number;
  outF: number;
  head?: boolean;
}
const SHAPES: Shape[] = [
  { model: 'smol', name: 'SmolLM2-135M qkv-ish', inF: 576, outF: 1728 },
  { model: 'smol', name: 'SmolLM2-135M gate+up', inF: 576, outF: 3072 },
  { model: 'smol', name: 'SmolLM2-135M down', inF: 1536, outF: 576 },
  { model: 'smol', name: 'SmolLM2-135M head', inF: 576, outF: 49152, head: true },
  { model: 'qwen', name: 'Qwen2.5-0.5B qkv', inF: 896, outF: 1152 },
  { model: 'qwen', name: 'Qwen2.5-0.5B gate+up', inF: 896, outF: 9728 },
  { model: 'qwen', name: 'Qwen2.5-0.5B down', inF: 4864, outF: 896 },
  { model: 'qwen', name: 'Qwen2.5-0.5B head', inF: 896, outF: 151936, head: true },
];

const ns = a.ns!.split(',').map(Number);
const repeats = Number(a.repeats);
const targetMs = Number(a.ms);

/** A seeded uniform generator in [-1, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

/**
 * µs per call of f over `calls` calls (each result disposed): this process's CPU time (user +
 * system), not wall time, since on a shared machine wall time mostly measures the other jobs.
 */
function time(f: () => tf.Tensor, calls: number): number {
  const c0 = process.cpuUsage();
  for (let i = 0; i < calls; i++) f().dispose();
  const u = process.cpuUsage(c0);
  return (u.user + u.system) / calls;
}

function median(v: number[]): number {
  const s = [...v].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface Row {
  shape: string;
  N: number;
  kind: string;
  us: number;
  gbs: number;
  speedup: number;
}

async function main(): Promise<void> {
  await initBackend({ backend: 'wasm' });
  const rows: Row[] = [];
  console.log(`backend ${tf.getBackend()}, ${repeats} interleaved repeats, median CPU µs per call`);
  console.log(
    '| shape | N | f32 XNNPACK µs (GB/s) | bf16 µs (GB/s, ×f32) | f16 µs (GB/s, ×f32) | q8 µs (GB/s, ×f32) |',
  );
  console.log('|---|---|---|---|---|---|');
  for (const s of SHAPES.filter((x) => a.shapes === 'all' || x.model === a.shapes)) {
    const r = rng(s.inF * 7 + s.outF);
    const w = new Float32Array(s.inF * s.outF); // [out, in]
    for (let i = 0; i < w.length; i++) w[i] = r() * 0.05;
    const wT = new Float32Array(w.length); // [in, out] for XNNPACK
    for (let o = 0; o < s.outF; o++) for (let i = 0; i < s.inF; i++) wT[i * s.outF + o] = w[o * s.inF + i];
    const f32W = tf.tensor2d(wT, [s.inF, s.outF]);
    const packed: Record<string, PackedWeight> = {
      bf16: pack16('bf16', f32ToBf16(w), s.outF, s.inF),
      f16: pack16('f16', f32ToF16(w), s.outF, s.inF),
      q8: packQ8(w, s.outF, s.inF),
    };
    for (const N of ns) {
      if (s.head && N > 16) continue;
      const xd = new Float32Array(N * s.inF);
      for (let i = 0; i < xd.length; i++) xd[i] = r();
      const x = tf.tensor2d(xd, [N, s.inF]);
      const fns: Record<string, () => tf.Tensor> = {
        f32: () => tf.matMul(x, f32W),
        bf16: () => packedMatMul(x, packed.bf16),
        f16: () => packedMatMul(x, packed.f16),
        q8: () => packedMatMul(x, packed.q8),
      };
      const bytes: Record<string, number> = { f32: s.inF * s.outF * 4 };
      for (const k of ['bf16', 'f16', 'q8']) bytes[k] = packedBytes(packed[k]);
      // warm up (XNNPACK packs f32W on its first call) and size the timing loops
      const calls: Record<string, number> = {};
      for (const [k, f] of Object.entries(fns)) {
        f().dispose();
        const once = time(f, 1);
        calls[k] = Math.max(1, Math.round((targetMs * 1000) / Math.max(once, 1)));
      }
      const us: Record<string, number[]> = { f32: [], bf16: [], f16: [], q8: [] };
      for (let rep = 0; rep < repeats; rep++) for (const [k, f] of Object.entries(fns)) us[k].push(time(f, calls[k]));
      x.dispose();
      const med = Object.fromEntries(Object.entries(us).map(([k, v]) => [k, median(v)]));
      const cell = (k: string) =>
        `${med[k].toFixed(0)} (${(bytes[k] / med[k] / 1e3).toFixed(1)}${k === 'f32' ? '' : `, ${(med.f32 / med[k]).toFixed(2)}×`})`;
      console.log(
        `| ${s.name} ${s.inF}→${s.outF} | ${N} | ${cell('f32')} | ${cell('bf16')} | ${cell('f16')} | ${cell('q8')} |`,
      );
      for (const k of Object.keys(fns))
        rows.push({
          shape: `${s.name} ${s.inF}→${s.outF}`,
          N,
          kind: k,
          us: med[k],
          gbs: bytes[k] / med[k] / 1e3,
          speedup: med.f32 / med[k],
        });
    }
    f32W.dispose();
    for (const p of Object.values(packed)) disposePacked(p);
  }
  if (a.json) writeFileSync(a.json, JSON.stringify(rows, null, 2));
}

await main();
