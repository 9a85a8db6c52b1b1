import { attentionKernel, gatherKernel, gemmKernel, gemvKernel, GpuRuntime, gpuDevice, normKernel, ropeKernel, tailKernels, type Kernel } from '../src/index.ts';
const rt = new GpuRuntime(await gpuDevice());
const embed = { V: 512, H: 64, dtype: 'f32' as const, blockRows: 512 };
const tk = tailKernels({ B: 1, V: 512, H: 64, embed, hStride: 64, scale: null, penalties: false });
const only = process.argv[2];
const ks: [Kernel, [number, number]][] = [
  [tk.stats, [1, 1]], [tk.sample, [1, 1]], [tk.mix, [1, 1]],
  [attentionKernel({ M: 1, D: 16, nH: 4, nKV: 2, S: 64, window: null, softcap: null, qStride: 64, oStride: 64, rowsAt: 0, posAt: 0 }), [4, 1]],
  [gemmKernel({ M: 64, K: 64, N: 128, w: 'f32', xStride: 64, yStride: 128, norm: { eps: 1e-5 } }), [2, 1]],
];
for (const [k, g] of ks) {
  if (only && !k.label.includes(only)) continue;
  const p = await rt.pipeline(k);
  const bufs: Record<string, GPUBuffer> = {};
  for (const n of k.bindings) bufs[n] = n === 'dims' ? rt.dimsBuffer(k) : rt.buffer(n, 1 << 20);
  const bg = rt.bindGroup(k, p, bufs);
  const t0 = performance.now();
  const st = rt.begin('x'); st.dispatch(p, bg, g[0], g[1]); st.finish();
  await rt.readBuffer(bufs[k.bindings[k.bindings.length - 1]], 16);
  console.log(k.label, (performance.now() - t0).toFixed(0), 'ms');
}
