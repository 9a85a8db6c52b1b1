/**
 * Shared helpers of the WebGPU kernel tests: the device (or a skip saying why there is none),
 * one-dispatch runs of a kernel over host arrays, f16 rounding and float64 references.
 */
import assert from 'node:assert/strict';
import { f16ToF32, f32ToF16, GpuRuntime, gpuDevice, type Kernel } from '../src/index.ts';

let rt: Promise<GpuRuntime> | null = null;

/** The shared runtime, or skip the suite (no adapter: the BackendError says what is missing). */
export async function runtimeOrSkip(ctx: Mocha.Context): Promise<GpuRuntime> {
  rt ??= gpuDevice().then((d) => new GpuRuntime(d));
  try {
    return await rt;
  } catch (err) {
    rt = null;
    console.log(`      [skip] webgpu: ${(err as Error).message}`);
    ctx.skip();
    throw err;
  }
}

export type HostArray = Float32Array | Uint32Array | Int32Array | Uint16Array;

/**
 * Run `kernel` once over buffers made from `inputs` (by binding name); returns the named outputs
 * as Float32Array/Uint32Array views of what the GPU left in them.
 */
export async function runOnce(
  r: GpuRuntime,
  kernel: Kernel,
  inputs: Record<string, HostArray | number>,
  groups: number | [number, number] | [number, number, number],
  outputs: string[],
): Promise<Record<string, ArrayBuffer>> {
  const pipeline = await r.pipeline(kernel);
  const bufs: Record<string, GPUBuffer> = {};
  for (const [name, v] of Object.entries(inputs)) {
    bufs[name] = typeof v === 'number' ? r.buffer(name, v) : r.upload(name, v);
  }
  if (kernel.dims && !bufs.dims) bufs.dims = r.dimsBuffer(kernel);
  const bg = r.bindGroup(kernel, pipeline, bufs);
  const step = r.begin(kernel.label);
  const g = typeof groups === 'number' ? [groups] : groups;
  step.dispatch(pipeline, bg, g[0], g[1] ?? 1, g[2] ?? 1);
  step.finish();
  const out: Record<string, ArrayBuffer> = {};
  for (const name of outputs) out[name] = await r.readBuffer(bufs[name]);
  for (const b of Object.values(bufs)) b.destroy();
  return out;
}

/** A seeded generator of floats (mulberry32), so test data is the same run after run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randn(n: number, r: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

/** Round to f16 and back (what f16 storage holds). */
export function roundF16(a: Float32Array): Float32Array {
  return f16ToF32(f32ToF16(a));
}

/** max |a − b| / max(|b|, floor) */
export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): number {
  assert.equal(got.length, want.length, `${what}: length`);
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  scale = Math.max(scale, 1e-6);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  assert.ok(
    worst / scale <= tol,
    `${what}: worst |diff| ${worst} at ${at} (got ${got[at]}, want ${want[at]}) over scale ${scale} > ${tol}`,
  );
  return worst / scale;
}
