/**
 * The f32 arithmetic ceiling of one wasm thread on this machine, and where the thread pool's f32
 * GEMM tile sits under it (issue 26). Two measurements, on one thread and then on every thread at
 * once (a worker per thread, started together):
 *
 * 1. Register-only chains: a loop of `f32x4.relaxed_madd` (FMA) on C independent accumulators, no
 *    loads. Each chain waits for its previous FMA, so the rate grows with C until the FMA units
 *    are full: C = 8 is what the GEMM tile below can hold in registers.
 * 2. The pool's own GEMM tile (wat.ts's floatTile text; weights in units of 32 rows stored column
 *    by column, one x value splat per row per column) at X x rows × R weight rows (2·X·R/8
 *    accumulators), over data that stays in cache. 4 × 8 and 2 × 16 are the pool's shapes (8
 *    accumulators); the wider ones have 10 or 12 and need more vector registers than V8's code
 *    for x64 keeps, so they spill.
 *
 * Not a test: nothing is asserted. Figures are medians of --repeats runs, GFLOP/s = 2 per FMA lane.
 *
 *   node_modules/.bin/tsx bench/fma-ceiling.ts [--threads 1,2] [--repeats 7] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import {
  assembleThreadsWat,
  compileOptimized,
  enableRelaxedSimd,
  floatTileText,
} from '../packages/core/src/kernels/wasm/threads/index.ts';

const { values: a } = parseArgs({
  options: {
    threads: { type: 'string', default: `1,${Math.max(1, os.availableParallelism())}` },
    repeats: { type: 'string', default: '7' },
    json: { type: 'string' },
  },
});
const threadCounts = a.threads!.split(',').map(Number);
const repeats = Number(a.repeats);

if (!enableRelaxedSimd()) {
  process.stderr.write('fma-ceiling: this Node has no relaxed SIMD (no f32x4.relaxed_madd); nothing to measure\n');
  process.exit(2);
}

const CHAINS = [4, 8, 10, 12, 14];
/** [x rows, weight rows]: the pool's two shapes, then wider ones */
const TILES: [number, number][] = [
  [4, 8],
  [2, 16],
  [5, 8],
  [6, 8],
  [3, 16],
];
const COLS = 576; // a unit of 32 weight rows × 576 columns (SmolLM2's hidden size) is 72 KB: it stays in L2
const X_ROWS = 60; // a multiple of every tile's x rows (60 × 576 floats: 135 KB)

/** `chains_C(n)`: n turns of C independent FMAs; `tile_X_R(w, x, xs, cols, o, os)`: one tile call. */
function moduleText(): string {
  const f: string[] = [];
  for (const C of CHAINS) {
    const acc = Array.from({ length: C }, (_, i) => `$a${i}`);
    f.push(`(func (export "chains_${C}") (param $n i32) (result f32) (local $m v128) (local $c v128) ${acc.map((x) => `(local ${x} v128)`).join(' ')}
  (local.set $m (f32x4.splat (f32.const 0.999))) (local.set $c (f32x4.splat (f32.const 0.001)))
  (loop $l
    ${acc.map((x) => `(local.set ${x} (f32x4.relaxed_madd (local.get ${x}) (local.get $m) (local.get $c)))`).join('\n    ')}
    (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
  (f32x4.extract_lane 0 (f32x4.add (local.get $a0) (local.get ${acc[C - 1]}))))`);
  }
  // the pool's own tile text (wat.ts), behind an export that passes its lane mask
  for (const [X, R] of TILES) {
    f.push(floatTileText('relaxed', 'f32', X, R / 8));
    f.push(`(func (export "tile_${X}_${R}") (param $w i32) (param $x i32) (param $xs i32) (param $cols i32) (param $o i32) (param $os i32)
  (call $tile_f32_${X}_${R / 8} (local.get $w) (local.get $x) (local.get $xs) (local.get $cols) (local.get $o) (local.get $os)
    (v128.const i32x4 0xffff0000 0xffff0000 0xffff0000 0xffff0000)))`);
  }
  return `(module (memory (export "mem") 64)\n${f.join('\n')}\n)`;
}

/** The measuring loop, as text: run in every thread (the main one too), it returns GFLOP/s per item. */
const MEASURE = `
function measure(ex, chains, tiles, cols, xRows, repeats) {
  const f = new Float32Array(ex.mem.buffer);
  f.fill(0.001);
  const W = 1 << 20, X = W + 32 * cols * 4 + 4096, O = X + xRows * cols * 4 + 4096;
  const median = (xs) => xs.slice().sort((p, q) => p - q)[xs.length >> 1];
  const time = (run, flops) => {
    run(); run();
    const r = [];
    for (let k = 0; k < repeats; k++) { const t0 = performance.now(); run(); r.push(flops / (performance.now() - t0) / 1e6); }
    return median(r);
  };
  const out = {};
  for (const C of chains) {
    const n = 2_000_000;
    out['chains ' + C] = time(() => ex['chains_' + C](n), n * C * 8);
  }
  for (const [x, r] of tiles) {
    const reps = 40;
    const tile = ex['tile_' + x + '_' + r];
    const run = () => {
      for (let k = 0; k < reps; k++)
        for (let n = 0; n < xRows; n += x)
          for (let q = 0; q < 32 / r; q++) tile(W + q * r * 4, X + n * cols * 4, cols * 4, cols, O + n * 128 + q * r * 4, 128);
    };
    out['tile ' + x + ' x ' + r] = time(run, reps * 2 * 32 * cols * xRows);
  }
  return out;
}`;

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const v8 = require('node:v8');
v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
${MEASURE}
const ex = new WebAssembly.Instance(workerData.module).exports;
parentPort.once('message', () => parentPort.postMessage(measure(ex, ...workerData.args)));
`;

type Figures = Record<string, number>;
const measure = new Function(`${MEASURE}; return measure;`)() as (
  ex: WebAssembly.Exports,
  chains: number[],
  tiles: [number, number][],
  cols: number,
  xRows: number,
  repeats: number,
) => Figures;

// every function compiled by TurboFan up front, as the pool's module is (workers get the compiled code)
const module = compileOptimized(await assembleThreadsWat(moduleText()));
const args = [CHAINS, TILES, COLS, X_ROWS, repeats] as const;
const rows: { threads: number; perThread: Figures[] }[] = [];
for (const t of threadCounts) {
  const workers = Array.from({ length: t - 1 }, () => new Worker(WORKER, { eval: true, workerData: { module, args } }));
  await Promise.all(workers.map((w) => new Promise((r) => w.once('online', r))));
  const results = workers.map((w) => new Promise<Figures>((r) => w.once('message', r)));
  for (const w of workers) w.postMessage('go');
  const main = measure(new WebAssembly.Instance(module).exports, ...args);
  const perThread = [main, ...(await Promise.all(results))];
  for (const w of workers) await w.terminate();
  rows.push({ threads: t, perThread });
}

const names = Object.keys(rows[0].perThread[0]);
process.stdout.write(
  `\nGFLOP/s per thread (${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.versions.node}, relaxed SIMD)\n\n`,
);
process.stdout.write(`| | ${rows.map((r) => `${r.threads} thread${r.threads > 1 ? 's (each)' : ''}`).join(' | ')} |\n`);
process.stdout.write(`|---|${rows.map(() => '---').join('|')}|\n`);
for (const n of names) {
  const cells = rows.map((r) => r.perThread.map((p) => p[n].toFixed(1)).join(' / '));
  process.stdout.write(`| ${n.replace('chains', 'FMA chains:')} | ${cells.join(' | ')} |\n`);
}
if (a.json)
  writeFileSync(
    a.json,
    JSON.stringify(
      { date: new Date().toISOString(), node: process.versions.node, cpu: os.cpus()[0]?.model, rows },
      null,
      2,
    ),
  );
