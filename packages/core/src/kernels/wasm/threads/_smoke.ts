import { ThreadPool, uploadWeight, matmul } from './index.ts';
import { quantizeQ8 } from '../../packed.ts';
import { f32ToBf16, bf16ToF32 } from '../../../dtype.ts';
const t0 = performance.now();
const pool = await ThreadPool.create({ threads: Number(process.argv[2] ?? 2) });
console.log('created', pool.info, (performance.now() - t0).toFixed(0), 'ms');
console.log('empty job µs', pool.emptyJobMicros(2000).toFixed(2), pool.emptyJobMicros(2000).toFixed(2));
const rows = 1000, cols = 576, N = 5;
const w = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.37) * 0.1);
const x = new Float32Array(N * cols).map((_, i) => Math.cos(i * 0.11));
const ref = (wf: Float32Array, xx: Float32Array) => { const y = new Float64Array(N * rows); for (let n = 0; n < N; n++) for (let r = 0; r < rows; r++) { let s = 0; for (let c = 0; c < cols; c++) s += wf[r * cols + c] * xx[n * cols + c]; y[n * rows + r] = s; } return y; };
const maxErr = (a: Float32Array, b: Float64Array) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };
for (const N2 of [1, 2, 3, 4, 5]) {
  const W = uploadWeight(pool, { kind: 'f32', values: w }, rows, cols);
  const y = matmul(pool, W, x, N);
  console.log('f32', N2, maxErr(y, ref(w, x)));
  break;
}
const wb = f32ToBf16(w);
const Wb = uploadWeight(pool, { kind: 'bf16', words: wb }, rows, cols);
console.log('bf16', maxErr(matmul(pool, Wb, x, N), ref(bf16ToF32(wb), x)));
const Wh = uploadWeight(pool, { kind: 'f16', words: (await import('../../../dtype.ts')).f32ToF16(w) }, rows, cols);
console.log('f16', maxErr(matmul(pool, Wh, x, N), ref((await import('../../../dtype.ts')).f16ToF32((await import('../../../dtype.ts')).f32ToF16(w)), x)));
const { q, d } = quantizeQ8(w, rows, cols);
const Wq = uploadWeight(pool, { kind: 'q8', q, d }, rows, cols);
const wq = new Float32Array(rows * cols).map((_, i) => q[i] * d[Math.floor(i / cols) * (cols / 32) + Math.floor((i % cols) / 32)]);
console.log('q8x8', maxErr(matmul(pool, Wq, x, N), ref(wq, x)), 'x16', maxErr(matmul(pool, Wq, x, N, { q8: 'x16' }), ref(wq, x)));
await pool.dispose();
console.log('disposed');
