/**
 * Micro-benchmark of the wasm thread pool's matmuls (issue 26, phase A) against today's
 * single-thread kernels, on the matrix shapes of the four peer models (read from
 * ../shared/peer-bench/configs, or $MOI_SHARED/peer-bench/configs): per shape, dtype and batch N,
 * - f32: XNNPACK's `tf.matMul(x [N, in], W [in, out])` (weights pre-transposed, warmed so
 *   XNNPACK has packed them) vs the pool's mm_f32;
 * - bf16: today's packedMatMul (packed-wat.ts) vs the pool's mm_bf16;
 * - q8: today's packedMatMul (16-bit activations below 32 rows, the GEMM above) vs the pool's
 *   mm_q8x8 (int8 activations; `--q8x16` adds the pool's 16-bit path);
 * the pool at 1 thread and at each count in --threads (one pool, its thread count capped per
 * call). The pool's figures include copying x in and y out. Plus the round trip of an empty job.
 * Not a test: speed is never asserted.
 *
 *   node_modules/.bin/tsx bench/threads.ts [--models smol,qwen2.5,qwen3,gemma] [--kinds f32,bf16,q8]
 *     [--ns 1,4,16,128] [--threads 1,2] [--repeats 5] [--ms 40] [--no-heads] [--q8x16]
 *     [--clock wall|cpu] [--spin µs] [--json FILE]
 *
 * Timing is wall time by default (threads make CPU time meaningless; `--clock cpu` for
 * one-thread kernel comparisons on a loaded machine), each figure the median over
 * interleaved repeats (every variant once, then again), so ratios come from one run on a noisy
 * shared machine; the load average is printed before and after. GB/s counts the weight bytes a
 * call reads once (f32 4, bf16 2, q8 1 + 4/32 per weight); GFLOP/s is 2·N·in·out per call. Head
 * shapes skip N = 128 (prefill takes the head for its last token only).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import {
  disposePacked,
  f32ToBf16,
  initBackend,
  pack16,
  packedBytes,
  packedMatMul,
  packQ8,
  quantizeQ8,
} from '../packages/core/src/index.ts';
import {
  freeWeight,
  matmul,
  ThreadPool,
  uploadWeight,
  type SharedWeight,
} from '../packages/core/src/kernels/wasm/threads/index.ts';

const { values: a } = parseArgs({
  options: {
    models: { type: 'string', default: 'smol,qwen2.5,qwen3,gemma' },
    kinds: { type: 'string', default: 'f32,bf16,q8' },
    ns: { type: 'string', default: '1,4,16,128' },
    threads: { type: 'string', default: `1,${Math.max(2, Math.min(os.availableParallelism(), 8))}` },
    clock: { type: 'string', default: 'wall' },
    repeats: { type: 'string', default: '5' },
    ms: { type: 'string', default: '40' },
    'no-heads': { type: 'boolean', default: false },
    q8x16: { type: 'boolean', default: false },
    spin: { type: 'string' },
    json: { type: 'string' },
  },
});

const CONFIGS: Record<string, string> = {
  smol: 'smollm2-135m',
  'qwen2.5': 'qwen2.5-0.5b',
  qwen3: 'qwen3-0.6b',
  gemma: 'gemma-3-270m',
};

interface Shape {
  model: string;
  name: string;
  inF: number;
  outF: number;
  head: boolean;
}

/** The matrices of one decoder layer and the head, from a peer config. */
function shapesOf(key: string): Shape[] {
  const shared = process.env.MOI_SHARED ?? path.resolve(import.meta.dirname, '../../shared');
  const c = JSON.parse(readFileSync(path.join(shared, 'peer-bench/configs', `${CONFIGS[key]}.json`), 'utf8'));
  const H = c.hidden_size;
  const D = c.head_dim ?? H / c.num_attention_heads;
  const q = c.num_attention_heads * D;
  const kv = c.num_key_value_heads * D;
  const model = CONFIGS[key];
  return [
    { model, name: 'qkv', inF: H, outF: q + 2 * kv, head: false },
    { model, name: 'o', inF: q, outF: H, head: false },
    { model, name: 'gate+up', inF: H, outF: 2 * c.intermediate_size, head: false },
    { model, name: 'down', inF: c.intermediate_size, outF: H, head: false },
    { model, name: 'head', inF: H, outF: c.vocab_size, head: true },
  ];
}

/** A seeded uniform generator in [-1, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

function median(v: number[]): number {
  const s = [...v].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * µs per call of f over `calls` calls: wall time, or with --clock cpu this process's CPU time
 * (all its threads: meaningful for one-thread variants only, and steadier on a loaded machine).
 */
function time(f: () => void, calls: number): number {
  if (a.clock === 'cpu') {
    const c0 = process.cpuUsage();
    for (let i = 0; i < calls; i++) f();
    const u = process.cpuUsage(c0);
    return (u.user + u.system) / calls;
  }
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) f();
  return ((performance.now() - t0) * 1000) / calls;
}

interface Row {
  model: string;
  shape: string;
  inF: number;
  outF: number;
  N: number;
  kind: string;
  variant: string;
  us: number;
  gbs: number;
  gflops: number;
  vsToday: number;
}

async function main(): Promise<void> {
  await initBackend({ backend: 'wasm' });
  const threadCounts = a.threads!.split(',').map(Number);
  const maxThreads = Math.max(...threadCounts);
  const pool = await ThreadPool.create({ threads: maxThreads, spinMicros: a.spin ? Number(a.spin) : undefined });
  const repeats = Number(a.repeats);
  const targetMs = Number(a.ms);
  const ns = a.ns!.split(',').map(Number);
  const kinds = a.kinds!.split(',');
  const load0 = os.loadavg();
  console.log(
    `# bench/threads.ts — Node ${process.versions.node}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.availableParallelism()}, pool: ${JSON.stringify(pool.info)}`,
  );
  console.log(
    `load average at start: ${load0.map((x) => x.toFixed(2)).join(' ')}; ${repeats} interleaved repeats, median ${a.clock} µs per call`,
  );
  const empty: number[] = [];
  for (let r = 0; r < repeats; r++) empty.push(pool.emptyJobMicros(2000));
  console.log(
    `empty job round trip (${maxThreads} threads): median ${median(empty).toFixed(2)} µs (runs: ${empty.map((x) => x.toFixed(2)).join(', ')})`,
  );
  const rows: Row[] = [];
  const variantsOf = (kind: string) => [
    'today',
    ...threadCounts.map((t) => `pool×${t}`),
    ...(kind === 'q8' && a.q8x16 ? threadCounts.map((t) => `x16×${t}`) : []),
  ];
  for (const key of a.models!.split(',')) {
    for (const s of shapesOf(key)) {
      if (s.head && a['no-heads']) continue;
      const r = rng(s.inF * 7 + s.outF);
      const w = new Float32Array(s.inF * s.outF); // [out, in]
      for (let i = 0; i < w.length; i++) w[i] = r() * 0.05;
      for (const kind of kinds) {
        // today's weights (tfjs) and the pool's
        let todayW: tf.Tensor2D | null = null;
        let packed: ReturnType<typeof pack16> | null = null;
        let shared: SharedWeight;
        let bytes: number;
        if (kind === 'f32') {
          const wT = new Float32Array(w.length);
          for (let o = 0; o < s.outF; o++) for (let i = 0; i < s.inF; i++) wT[i * s.outF + o] = w[o * s.inF + i];
          todayW = tf.tensor2d(wT, [s.inF, s.outF]);
          shared = uploadWeight(pool, { kind: 'f32', values: w }, s.outF, s.inF);
          bytes = w.length * 4;
        } else if (kind === 'bf16') {
          const words = f32ToBf16(w);
          packed = pack16('bf16', words, s.outF, s.inF);
          shared = uploadWeight(pool, { kind: 'bf16', words }, s.outF, s.inF);
          bytes = packedBytes(packed);
        } else {
          const { q, d } = quantizeQ8(w, s.outF, s.inF);
          packed = packQ8(w, s.outF, s.inF);
          shared = uploadWeight(pool, { kind: 'q8', q, d }, s.outF, s.inF);
          bytes = packedBytes(packed);
        }
        for (const N of ns) {
          if (s.head && N > 16) continue;
          const xd = new Float32Array(N * s.inF);
          for (let i = 0; i < xd.length; i++) xd[i] = r();
          const x = tf.tensor2d(xd, [N, s.inF]);
          const out = new Float32Array(N * s.outF);
          const fns: Record<string, () => void> = {
            today: todayW ? () => tf.matMul(x, todayW!).dispose() : () => packedMatMul(x, packed!).dispose(),
          };
          for (const t of threadCounts) {
            fns[`pool×${t}`] = () => matmul(pool, shared, xd, N, { threads: t, out });
            if (kind === 'q8' && a.q8x16)
              fns[`x16×${t}`] = () => matmul(pool, shared, xd, N, { threads: t, out, q8: 'x16' });
          }
          const calls: Record<string, number> = {};
          for (const [k, f] of Object.entries(fns)) {
            f(); // warm up (XNNPACK packs its weights on the first call)
            calls[k] = Math.max(1, Math.round((targetMs * 1000) / Math.max(time(f, 1), 1)));
          }
          const us: Record<string, number[]> = Object.fromEntries(Object.keys(fns).map((k) => [k, []]));
          for (let rep = 0; rep < repeats; rep++)
            for (const [k, f] of Object.entries(fns)) us[k].push(time(f, calls[k]));
          x.dispose();
          const med = Object.fromEntries(Object.entries(us).map(([k, v]) => [k, median(v)]));
          const flops = 2 * N * s.inF * s.outF;
          const cells = variantsOf(kind).map((k) => {
            const row: Row = {
              model: s.model,
              shape: s.name,
              inF: s.inF,
              outF: s.outF,
              N,
              kind,
              variant: k,
              us: med[k],
              gbs: bytes / med[k] / 1e3,
              gflops: flops / med[k] / 1e3,
              vsToday: med.today / med[k],
            };
            rows.push(row);
            return `${med[k].toFixed(0)} (${row.gbs.toFixed(1)} GB/s, ${row.gflops.toFixed(1)} GF/s${k === 'today' ? '' : `, ${row.vsToday.toFixed(2)}×`})`;
          });
          console.log(`| ${s.model} ${s.name} ${s.inF}→${s.outF} | ${kind} | ${N} | ${cells.join(' | ')} |`);
        }
        todayW?.dispose();
        if (packed) disposePacked(packed);
        freeWeight(pool, shared);
      }
    }
  }
  const load1 = os.loadavg();
  console.log(`load average at end: ${load1.map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`columns: today, ${variantsOf('q8').slice(1).join(', ')} (µs (GB/s, GFLOP/s, ×today))`);
  await pool.dispose();
  if (a.json)
    writeFileSync(
      a.json,
      JSON.stringify(
        { node: process.versions.node, info: pool.info, emptyJobMicros: median(empty), load: [load0, load1], rows },
        null,
        2,
      ),
    );
}

await main();
