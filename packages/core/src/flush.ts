/**
 * A subnormal-flushing cpu backend, for tests: what a GPU does to float32 (flush-to-zero on
 * results, denormals-are-zero on operands), reproduced on tfjs-backend-cpu so that CI can see it.
 *
 * A GPU may treat every float32 below the smallest normal number, 2^-126 ≈ 1.1755e-38, as
 * zero (WGSL and Vulkan allow it; an NVIDIA H200 through Dawn did, issue 21). Code that leans on
 * a subnormal value (a clamp such as `maximum(p, 1e-38)`, an `exp` that underflows into the
 * subnormal range and is then divided by or logged) is exact on wasm and cpu and produces 0, −∞
 * or NaN on a GPU.
 *
 * `setCpuFlushing(true)` re-registers every kernel of backend `cpu` with a wrapper that:
 *   - hands the kernel a flushed copy of each float32 input holding a subnormal (the caller's
 *     tensor is never changed: an upload keeps its bits, as a GPU buffer does);
 *   - flushes each float32 output in place, before anything else can read it.
 * Sign is kept (−1e-39 → −0), as hardware FTZ does. Work done inside one kernel (the cpu Softmax
 * computes exp, sum and divide in one call) is not flushed between its parts; only what crosses a
 * kernel boundary is, which is where a GPU's memory traffic is. `setCpuFlushing(false)` puts the
 * original kernels back. The backend keeps its name (`cpu`), so every backend check in the engine
 * treats it as the cpu backend; initBackend switches it with MOI_FLUSH_SUBNORMALS=1.
 */
import * as tf from '@tensorflow/tfjs-core';

/** The smallest normal float32, 2^-126. Anything of smaller magnitude is zero on a GPU. */
export const FLT_MIN_NORMAL = 2 ** -126;

/** The cpu kernels as tfjs-backend-cpu registered them, while the flushing ones stand in. */
const originals = new Map<string, tf.KernelConfig>();

/** Whether the cpu backend's kernels flush subnormals now. */
export function cpuFlushing(): boolean {
  return originals.size > 0;
}

function isSubnormal(x: number): boolean {
  return x !== 0 && x > -FLT_MIN_NORMAL && x < FLT_MIN_NORMAL;
}

/** True when `v` holds a float32 subnormal. */
export function hasSubnormal(v: ArrayLike<number>): boolean {
  for (let i = 0; i < v.length; i++) if (isSubnormal(v[i])) return true;
  return false;
}

/** Flush the subnormals of `v` to zero (keeping the sign), in place. */
export function flushArray(v: Float32Array): void {
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (isSubnormal(x)) v[i] = x < 0 ? -0 : 0;
  }
}

/** The cpu backend's storage, as far as the wrapper needs it. */
interface CpuStorage {
  data: { get(dataId: object): { values?: unknown } | undefined };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
  disposeIntermediateTensorInfo(info: tf.TensorInfo): void;
}

function float32Values(backend: CpuStorage, t: tf.TensorInfo | undefined | null): Float32Array | null {
  if (!t || t.dtype !== 'float32') return null;
  const v = backend.data.get(t.dataId)?.values;
  return v instanceof Float32Array ? v : null;
}

function flushingKernel(kernelFunc: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as CpuStorage;
    const copies: tf.TensorInfo[] = [];
    // operands: a flushed copy wherever an input holds a subnormal (arrays stay arrays: Concat, AddN, Pack)
    const flushInput = (t: tf.TensorInfo): tf.TensorInfo => {
      const v = float32Values(backend, t);
      if (!v || !hasSubnormal(v)) return t;
      const copy = new Float32Array(v);
      flushArray(copy);
      const info = backend.makeTensorInfo(t.shape, 'float32', copy);
      copies.push(info);
      return info;
    };
    const given = args.inputs as unknown;
    const inputs = Array.isArray(given)
      ? (given as tf.TensorInfo[]).map(flushInput)
      : Object.fromEntries(Object.entries(args.inputs).map(([k, t]) => [k, t ? flushInput(t) : t]));
    try {
      const out = kernelFunc({ ...args, inputs: inputs as tf.NamedTensorInfoMap });
      for (const o of Array.isArray(out) ? out : [out]) {
        const v = float32Values(backend, o);
        if (v) flushArray(v);
      }
      return out;
    } finally {
      // a kernel that returns its input (Reshape) took its own reference: the copy lives on in it
      for (const c of copies) backend.disposeIntermediateTensorInfo(c);
    }
  };
}

/**
 * Make the cpu backend's kernels flush subnormals (on) or put tfjs-backend-cpu's own kernels
 * back (off). Needs the cpu backend's kernels registered (its package imported).
 */
export function setCpuFlushing(on: boolean): void {
  if (on === cpuFlushing()) return;
  if (on) {
    for (const k of tf.getKernelsForBackend('cpu')) {
      originals.set(k.kernelName, k);
      tf.unregisterKernel(k.kernelName, 'cpu');
      tf.registerKernel({ ...k, kernelFunc: flushingKernel(k.kernelFunc) });
    }
  } else {
    for (const k of originals.values()) {
      tf.unregisterKernel(k.kernelName, 'cpu');
      tf.registerKernel(k);
    }
    originals.clear();
  }
}
