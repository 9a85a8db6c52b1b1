import { quantizeQ8, Q8_BLOCK } from '../packages/core/src/kernels/wasm/packed.ts';
function fast(x: Float32Array, rows: number, cols: number) {
  const nb = Math.ceil(cols / Q8_BLOCK);
  const q = new Int8Array(rows * cols);
  const d = new Float32Array(rows * nb);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    for (let b = 0; b < nb; b++) {
      const s = row + b * Q8_BLOCK;
      const e = row + Math.min(cols, (b + 1) * Q8_BLOCK);
      let amax = 0;
      for (let i = s; i < e; i++) { const v = x[i]; const a = v < 0 ? -v : v; if (a > amax) amax = a; }
      const scale = Math.fround(amax / 127);
      d[r * nb + b] = scale;
      if (scale === 0) continue;
      for (let i = s; i < e; i++) { const v = x[i] / scale; q[i] = v < 0 ? -Math.round(-v) : Math.round(v); }
    }
  }
  return { q, d };
}
const rows = 2048, cols = 2048;
const x = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.37) * 0.05);
for (let i = 0; i < 5000; i++) x[i * 7] = (i % 255 - 127) * 0.01; // exact halves and ties
const a = quantizeQ8(x, rows, cols), b = fast(x, rows, cols);
let diff = 0; for (let i = 0; i < a.q.length; i++) if (a.q[i] !== b.q[i]) diff++;
for (let i = 0; i < a.d.length; i++) if (a.d[i] !== b.d[i]) diff++;
console.log('differences', diff);
for (let k = 0; k < 2; k++) fast(x, rows, cols);
const s = process.hrtime.bigint(); for (let k = 0; k < 5; k++) fast(x, rows, cols);
console.log('fast ns per value', Number(process.hrtime.bigint() - s) / 5 / (rows * cols));
