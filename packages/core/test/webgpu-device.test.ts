/**
 * The shared WebGPU device and the runtime (src/kernels/webgpu/device.ts, runtime.ts): the device
 * has shader-f16 where the adapter offers it and the adapter's maximum limits; tfjs-webgpu, started
 * through initBackend, runs on that same device; a tfjs tensor's GPUBuffer feeds our kernel and our
 * kernel's output becomes a tfjs tensor, compared with tfjs's own ops (the composite); the pipeline
 * cache compiles once and the counters count what a step does.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  flushTfjs,
  gpuDevice,
  initBackend,
  KERNEL_NEEDS,
  normKernel,
  rmsNorm,
  tensorBuffer,
  tensorFromBuffer,
} from '../src/index.ts';
import { randn, rng, runtimeOrSkip } from './webgpu-helpers.ts';

describe('webgpu: the shared device and the runtime', function () {
  this.timeout(300_000);

  it("requests shader-f16 when offered and the adapter's maximum limits", async function () {
    await runtimeOrSkip(this);
    const gpu = await gpuDevice();
    assert.equal(gpu.shaderF16, gpu.adapter.features.has('shader-f16'));
    assert.equal(gpu.device.features.has('shader-f16'), gpu.adapter.features.has('shader-f16'));
    for (const k of [
      'maxStorageBufferBindingSize',
      'maxBufferSize',
      'maxComputeWorkgroupStorageSize',
      'maxStorageBuffersPerShaderStage',
      'maxComputeInvocationsPerWorkgroup',
    ] as const) {
      assert.equal(gpu.limits[k], (gpu.adapter.limits as any)[k], `${k} is the adapter's maximum`);
      assert.equal((gpu.device.limits as any)[k], (gpu.adapter.limits as any)[k], `the device has ${k} raised`);
    }
    for (const [k, need] of Object.entries(KERNEL_NEEDS)) assert.ok((gpu.limits as any)[k] >= need, `${k} ≥ ${need}`);
    // the same device on every call
    assert.equal((await gpuDevice()).device, gpu.device);
  });

  describe('with tfjs-webgpu on the same device', () => {
    before(async function () {
      await runtimeOrSkip(this);
      try {
        await initBackend({ backend: 'webgpu' });
      } catch (err) {
        console.log(`      [skip] tfjs-webgpu: ${(err as Error).message}`);
        this.skip();
      }
    });
    after(async () => {
      await initBackend({ backend: 'wasm' });
    });

    it('tfjs runs on our device', async () => {
      assert.equal(tf.getBackend(), 'webgpu');
      assert.equal((tf.backend() as any).device, (await gpuDevice()).device);
      // switching away and back keeps the backend (and its device)
      const b = tf.backend();
      await initBackend({ backend: 'cpu' });
      await initBackend({ backend: 'webgpu' });
      assert.equal(tf.backend(), b);
    });

    it('our kernel reads tfjs tensors in place and its output becomes a tfjs tensor (vs tfjs rmsNorm)', async function () {
      const r = await runtimeOrSkip(this);
      const M = 3;
      const H = 37;
      const g = rng(7);
      tf.dispose(rmsNorm(tf.ones([1, 2]), tf.ones([2]) as tf.Tensor1D, 1e-5)); // its kept eps scalar, made before counting
      const before = tf.memory().numTensors;
      const x = tf.tensor2d(randn(M * H, g), [M, H]);
      const w = tf.tensor1d(randn(H, g));
      const resid = tf.tensor2d(randn(M * H, g), [M, H]);
      // h = resid + rmsNorm(x)·w, our kernel writing into a copy of resid's buffer
      const kernel = normKernel({ M, H, eps: 1e-5, aStride: H, hStride: H, residual: true });
      const pipeline = await r.pipeline(kernel);
      const h = r.buffer('h', M * H * 4);
      const init = r.begin('copy');
      init.copy(tensorBuffer(resid), 0, h, 0, M * H * 4);
      init.finish();
      const bind = r.bindGroup(kernel, pipeline, {
        dims: r.dimsBuffer(kernel),
        a: tensorBuffer(x),
        nw: tensorBuffer(w),
        h,
      });
      const step = r.begin('norm');
      step.dispatch(pipeline, bind, M);
      step.finish();
      const got = tensorFromBuffer(h, [M, H]);
      const [d, sc] = tf.tidy(() => {
        const want = tf.add(resid, rmsNorm(x, w as tf.Tensor1D, 1e-5));
        return [tf.max(tf.abs(tf.sub(got, want))), tf.max(tf.abs(want))];
      });
      const diff = (await d.data())[0];
      const scale = (await sc.data())[0];
      assert.ok(diff / scale < 1e-6, `diff ${diff} over scale ${scale}`);
      tf.dispose([x, w, resid, got, d, sc]);
      h.destroy();
      assert.equal(tf.memory().numTensors, before, 'no tensors left behind');
      flushTfjs();
    });
  });

  it('compiles a pipeline once and counts what a step does', async function () {
    const r = await runtimeOrSkip(this);
    const kernel = normKernel({ M: 2, H: 8, eps: 1e-6, aStride: 8, hStride: 8, residual: false });
    const before = r.snapshot();
    const p1 = await r.pipeline(kernel);
    const p2 = await r.pipeline({
      ...normKernel({ M: 5, H: 16, eps: 1e-5, aStride: 16, hStride: 16, residual: false }),
    });
    assert.equal(p1, p2, 'shapes travel in dims: one pipeline serves both');
    const a = r.upload('a', new Float32Array(16).fill(2));
    const nw = r.upload('nw', new Float32Array(8).fill(0.5));
    const h = r.buffer('h', 64);
    const dims = r.dimsBuffer(kernel);
    const bind = r.bindGroup(kernel, p1, { dims, a, nw, h });
    const mid = r.snapshot();
    assert.deepEqual(
      {
        p: mid.new_pipelines - before.new_pipelines,
        g: mid.new_bind_groups - before.new_bind_groups,
        b: mid.new_buffers - before.new_buffers,
      },
      { p: 1, g: 1, b: 4 },
    );
    const step = r.begin('norm');
    r.write(a, 0, new Float32Array([1, 1, 1, 1]));
    step.dispatch(p1, bind, 2);
    step.finish();
    const out = new Float32Array(await r.readBuffer(h, 64));
    const after = r.snapshot();
    assert.equal(after.dispatches - mid.dispatches, 1);
    assert.equal(after.uploads_bytes - mid.uploads_bytes, 16);
    assert.equal(after.readback_bytes - mid.readback_bytes, 64);
    // row 0 = [1,1,1,1,2,2,2,2]: rms = √(20/8); row 1 all 2 → 1 · 0.5
    const inv = 1 / Math.sqrt(20 / 8 + 1e-6);
    assert.ok(
      Math.abs(out[0] - inv * 0.5) < 1e-6 && Math.abs(out[4] - 2 * inv * 0.5) < 1e-6 && Math.abs(out[8] - 0.5) < 1e-6,
      `got ${Array.from(out.subarray(0, 12))}`,
    );
    for (const b of [a, nw, h, dims]) b.destroy();
  });
});
