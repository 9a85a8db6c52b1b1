// temporary experiment: time mm kernels on one thread for several tile plans
import { assembleThreadsWat } from './pool.ts';
import { compileOptimized, enableRelaxedSimd } from './simd.ts';
import { threadsWat, FLOAT_TILES, Q8_TILES } from './wat.ts';
enableRelaxedSimd();
const plans = JSON.parse(process.argv[2]);
const [inF, outF] = [Number(process.argv[3] ?? 576), Number(process.argv[4] ?? 3072)];
const kind = process.argv[5] ?? 'mm_f32';
const Ns = (process.argv[6] ?? '1,4,16,128').split(',').map(Number);
const mem = new WebAssembly.Memory({ initial: 4000, maximum: 65536, shared: true });
const mods = [];
for (const p of plans) {
  if (p.f) { for (const k of Object.keys(FLOAT_TILES)) delete (FLOAT_TILES as any)[k]; Object.assign(FLOAT_TILES, p.f); } if (p.q) { for (const k of Object.keys(Q8_TILES)) delete (Q8_TILES as any)[k]; Object.assign(Q8_TILES, p.q); }
  mods.push(new WebAssembly.Instance(compileOptimized(await assembleThreadsWat(threadsWat('relaxed'))), { env: { memory: mem } }).exports as any);
}
const W = 1 << 20, X = W + inF * outF * 4 + 4096, Y = X + 128 * inF * 4 + 4096, XQ = Y + 128 * outF * 4 + 4096, XD = XQ + 128 * inF * 2 + 4096;
const f = new Float32Array(mem.buffer);
for (let i = 0; i < (XD >> 2) + 100000; i++) f[i + (W >> 2)] = ((i * 2654435761) % 1000) / 1000 - 0.5;
const args = new Int32Array(mem.buffer, 256, 32);
for (const N of Ns) {
  const best: number[] = plans.map(() => Infinity);
  for (let rep = 0; rep < 5; rep++) for (const [pi, ex] of mods.entries()) {
    const nb = inF / 32;
    const run = () => {
      if (kind === 'mm_q8x8') {
        args.set([X, inF * 4, N, nb, XQ, nb * 64, XD, nb * 4]); ex.quant_x8(256, 0, N, 0);
        args.set([W, inF, W + inF * outF, outF * 4, XQ, nb * 64, XD, nb * 4, N, nb, Y, outF * 4, Math.max(4, Math.floor(192 * 1024 / (nb * 64) / 4) * 4)]);
        ex.mm_q8x8(256, 0, outF, 0);
      } else {
        args.set([W, inF * (kind === 'mm_f32' ? 4 : 2), X, inF * 4, N, inF, Y, outF * 4, Math.max(4, Math.floor(192 * 1024 / (inF * 4) / 4) * 4)]);
        ex[kind](256, 0, outF, 0);
      }
    };
    run();
    let calls = 1; const c0 = process.cpuUsage(); run(); const once = Math.max(1, process.cpuUsage(c0).user);
    calls = Math.max(1, Math.round(40000 / once));
    const c1 = process.cpuUsage(); for (let i = 0; i < calls; i++) run(); const u = process.cpuUsage(c1);
    const us = (u.user + u.system) / calls;
    best[pi] = Math.min(best[pi], us);
  }
  console.log(`N=${N}`, best.map((us, pi) => `${JSON.stringify(plans[pi])}: ${us.toFixed(0)} µs ${(2 * N * inF * outF / us / 1e3).toFixed(1)} GF/s`).join(' | '));
}
