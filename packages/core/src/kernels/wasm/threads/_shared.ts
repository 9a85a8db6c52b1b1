// temporary: the same mm_f32 over a shared and a non-shared memory
import { assembleThreadsWat } from './pool.ts';
import { compileOptimized, enableRelaxedSimd } from './simd.ts';
import { threadsWat } from './wat.ts';
enableRelaxedSimd();
const [inF, outF] = [576, 49152];
const text = threadsWat('relaxed');
const variants: [string, boolean][] = [['shared', true], ['plain', false]];
const insts = [];
for (const [name, shared] of variants) {
  const t = shared ? text : text.replace('(memory 1 65536 shared)', '(memory 1 65536)');
  const mem = new WebAssembly.Memory({ initial: 3000, maximum: 65536, shared });
  const ex = new WebAssembly.Instance(compileOptimized(await assembleThreadsWat(t)), { env: { memory: mem } }).exports as any;
  const f = new Float32Array(mem.buffer);
  const W = 1 << 20, X = W + inF * outF * 4 + 4096, Y = X + inF * 4 + 4096;
  for (let i = 0; i < inF * outF + inF; i++) f[(W >> 2) + i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  insts.push({ name, ex, mem, W, X, Y });
}
for (let rep = 0; rep < 4; rep++) {
  for (const { name, ex, mem, W, X, Y } of insts) {
    const args = new Int32Array(mem.buffer, 256, 16);
    args.set([W, inF * 4, X, inF * 4, 1, inF, Y, outF * 4, 48]);
    ex.mm_f32(256, 0, outF, 0);
    const c0 = process.cpuUsage(); const t0 = performance.now();
    for (let i = 0; i < 20; i++) ex.mm_f32(256, 0, outF, 0);
    const u = process.cpuUsage(c0); const wall = performance.now() - t0;
    console.log(name, 'cpu µs', ((u.user + u.system) / 20).toFixed(0), 'wall µs', (wall * 1000 / 20).toFixed(0), 'GB/s (cpu)', (inF * outF * 4 / ((u.user + u.system) / 20) / 1e3).toFixed(1));
  }
}
