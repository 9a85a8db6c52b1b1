export * from './errors.ts';
export * from './paths.ts';
export * from './safetensors.ts';
export * from './backend.ts';
export * from './flush.ts';
export * from './nn.ts';
export * from './decoder-shape.ts';
export * from './kernels/wasm/index.ts';
export * from './linear.ts';
export {
  defaultThreads,
  MAX_DEFAULT_THREADS,
  pooledPrefillAttention,
  sharedWeightBytes,
  ThreadedLinear,
  ThreadPool,
  type PoolInfo,
  type PoolOptions,
  type SimdPath,
  type ThreadedLinearOptions,
} from './kernels/wasm/threads/index.ts';
export * from './vocab-blocks.ts';
export * from './embed-source.ts';
export * from './sampling/index.ts';
export * from './range.ts';
export * from './kernels/webgpu/index.ts';
