/**
 * The GPU device moi's WebGPU kernels and tfjs-backend-webgpu share.
 *
 * We request the adapter and the device ourselves (Dawn through the `webgpu` npm package):
 * - `shader-f16` when the adapter offers it (our kernels read f16 weights with WGSL's
 *   `unpack2x16float`, which needs no extension, so a device without it still runs f16 storage);
 * - `timestamp-query` when offered (tfjs-webgpu's profiler uses it);
 * - every limit at the adapter's maximum: `maxStorageBufferBindingSize` (128 MiB on Mesa's
 *   lavapipe, 2 GiB on an NVIDIA H200), `maxBufferSize`, `maxComputeWorkgroupStorageSize`
 *   (32 KiB on lavapipe, 48 KiB on the H200), `maxStorageBuffersPerShaderStage`, workgroup sizes
 *   and counts. The WebGPU defaults (128 MiB bindings, 8 storage buffers a stage) are lower.
 *
 * `shareDeviceWithTfjs` then registers tfjs's `webgpu` backend over that same device, so a tfjs
 * tensor's GPUBuffer (tfjs-webgpu keeps it in its tensor map) can be bound by our kernels and a
 * buffer our kernels wrote can become a tfjs tensor (`tensorFromBuffer`), with no copy through
 * the host. Both submit to one queue; `flushTfjs` submits tfjs's pending commands first, so ours
 * see what its ops wrote.
 */
import type {} from 'webgpu'; // the WebGPU types (GPUDevice, GPUBuffer, ...), through Dawn's package
import * as tf from '@tensorflow/tfjs-core';
import { BackendError } from '../../errors.ts';

export interface GpuDevice {
  adapter: GPUAdapter;
  device: GPUDevice;
  /** the device has `shader-f16` (WGSL `enable f16;` is allowed) */
  shaderF16: boolean;
  /** the limits the device was created with (the adapter's maxima) */
  limits: GpuLimits;
  /** vendor / architecture / description, for reports */
  description: string;
  /** what requestAdapter returned as adapter info (tfjs-webgpu's AdapterInfo reads it) */
  adapterInfo: GPUAdapterInfo;
}

export interface GpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBuffersPerShaderStage: number;
  minStorageBufferOffsetAlignment: number;
}

/** The limits we raise to the adapter's maximum (all of them are plain numbers in GPUSupportedLimits). */
const RAISED: (keyof GpuLimits)[] = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
];

/**
 * What our kernels assume of a device (checked once, at device creation): workgroups of 256
 * invocations (the sampling tail), 8 storage buffers a stage (the WebGPU default; the tail binds
 * at most 7 plus one per embedding block), 16 KiB of workgroup memory (the default; our largest
 * kernel, the tiled GEMM, takes 12 KiB).
 */
export const KERNEL_NEEDS = {
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupStorageSize: 16384,
} as const;

let pending: Promise<GpuDevice> | null = null;

/** navigator.gpu, installing Dawn's (the `webgpu` package) where the global has none. */
async function navigatorGpu(): Promise<GPU> {
  const g = globalThis as any;
  if (g.navigator?.gpu) return g.navigator.gpu as GPU;
  let dawn: any;
  try {
    dawn = await import('webgpu');
  } catch (err) {
    throw new BackendError(
      `webgpu: the Dawn package 'webgpu' is not installed (${(err as Error).message.split('\n')[0]}); install it (\`pnpm add webgpu\`)`,
    );
  }
  Object.assign(g, dawn.globals);
  if (!g.navigator?.gpu) {
    Object.defineProperty(g, 'navigator', {
      value: { ...(g.navigator ?? {}), gpu: dawn.create([]) },
      configurable: true,
    });
  }
  return g.navigator.gpu as GPU;
}

async function createDevice(): Promise<GpuDevice> {
  const gpu = await navigatorGpu();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter)
    throw new BackendError(
      'webgpu: no GPU adapter (Dawn found no Vulkan driver it accepts; on a CPU-only machine install Mesa 25 lavapipe)',
    );
  const requiredFeatures: GPUFeatureName[] = [];
  for (const f of ['shader-f16', 'timestamp-query'] as GPUFeatureName[])
    if (adapter.features.has(f)) requiredFeatures.push(f);
  const requiredLimits: Record<string, number> = {};
  for (const k of RAISED) requiredLimits[k] = (adapter.limits as any)[k];
  for (const [k, need] of Object.entries(KERNEL_NEEDS)) {
    if (requiredLimits[k] < need) {
      throw new BackendError(
        `webgpu: the adapter's ${k} is ${requiredLimits[k]}; moi's WebGPU kernels need at least ${need}`,
      );
    }
  }
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const limits = {} as GpuLimits;
  for (const k of [...RAISED, 'minStorageBufferOffsetAlignment'] as (keyof GpuLimits)[])
    limits[k] = (device.limits as any)[k];
  const info = adapter.info;
  const description =
    [info?.vendor, info?.architecture, info?.device, info?.description].filter((s) => s).join(' ') || 'unknown adapter';
  return { adapter, device, shaderF16: device.features.has('shader-f16'), limits, description, adapterInfo: info };
}

/** The process's GPU device (created on first use, then shared). */
export function gpuDevice(): Promise<GpuDevice> {
  if (!pending) {
    pending = createDevice();
    pending.catch(() => {
      pending = null;
    });
  }
  return pending;
}

// ---------------------------------------------------------------------------------------------
// sharing the device with tfjs-backend-webgpu

/**
 * The tfjs `webgpu` backend object if one has started (read from the engine's registry: tf.getBackend
 * and tf.findBackend would start a backend as a side effect).
 */
function startedWebgpu(): any {
  return (tf.engine() as any).registry?.webgpu ?? null;
}

/** The tfjs `webgpu` backend object, when it is the active one. */
function webgpuBackend(): any {
  const b = startedWebgpu();
  return b && (tf.engine() as any).backendInstance === b ? b : null;
}

/**
 * Register tfjs's `webgpu` backend over our device (replacing the stock registration, which
 * creates a device of its own without shader-f16). Call after importing
 * @tensorflow/tfjs-backend-webgpu and before tf.setBackend('webgpu'). Returns the device.
 */
export async function shareDeviceWithTfjs(pkg = '@tensorflow/tfjs-backend-webgpu'): Promise<GpuDevice> {
  const mod: any = await import(pkg);
  const WebGPUBackend = mod.WebGPUBackend ?? mod.default?.WebGPUBackend;
  if (typeof WebGPUBackend !== 'function') throw new BackendError(`webgpu: ${pkg} exports no WebGPUBackend`);
  const gpu = await gpuDevice();
  // already ours (registered, or started): keep it, and the tensors it holds
  if (tf.findBackendFactory('webgpu') === ourFactory || startedWebgpu()?.device === gpu.device) return gpu;
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  ourFactory = () => new WebGPUBackend(gpu.device, gpu.adapterInfo);
  tf.registerBackend('webgpu', ourFactory, 3);
  return gpu;
}

let ourFactory: (() => tf.KernelBackend) | null = null;

/** Submit the commands tfjs-webgpu has recorded but not yet submitted (so ours run after them). */
export function flushTfjs(): void {
  const b = startedWebgpu();
  if (b?.commandEncoder) {
    b.endComputePassEncoder?.();
    b.submitQueue();
  }
}

/** The GPUBuffer holding a tfjs-webgpu tensor (uploaded first if it still lives on the host). */
export function tensorBuffer(t: tf.Tensor): GPUBuffer {
  const b = webgpuBackend();
  if (!b) throw new BackendError('tensorBuffer: the active tfjs backend is not webgpu');
  b.uploadToGPU(t.dataId);
  const res = b.tensorMap.get(t.dataId)?.resource;
  if (!res || typeof res.mapAsync !== 'function')
    throw new BackendError('tensorBuffer: the tensor is not held in a GPUBuffer (a texture?)');
  return res as GPUBuffer;
}

/**
 * A tfjs-webgpu tensor over (a copy of) `buffer`: tfjs copies it by default, so our later writes
 * to the buffer do not change the tensor. The buffer needs STORAGE | COPY_SRC usage.
 */
export function tensorFromBuffer(
  buffer: GPUBuffer,
  shape: number[],
  dtype: 'float32' | 'int32' = 'float32',
): tf.Tensor {
  if (!webgpuBackend()) throw new BackendError('tensorFromBuffer: the active tfjs backend is not webgpu');
  return tf.tensor({ buffer } as any, shape, dtype);
}
