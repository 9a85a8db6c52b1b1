import { gemmKernel, gemmGroups, GpuRuntime, gpuDevice } from '../src/index.ts';
import { runOnce } from './webgpu-helpers.ts';
const rt = new GpuRuntime(await gpuDevice());
const s: any = { M: 17, K: 16, N: 9, w: 'f32', xStride: 24, yStride: 14 };
const k = gemmKernel(s);
let t0 = performance.now();
await rt.pipeline(k);
console.log('compile', (performance.now() - t0).toFixed(0));
for (let i = 0; i < 3; i++) {
  t0 = performance.now();
  await runOnce(rt, k, { x: new Float32Array(17 * 24), w: new Float32Array(9 * 16), y: new Float32Array(17 * 14) }, gemmGroups(s), ['y']);
  console.log('run', (performance.now() - t0).toFixed(0));
}
