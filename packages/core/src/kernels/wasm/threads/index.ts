/**
 * The wasm thread pool (issue 26): shared memory, workers, relaxed-SIMD kernels, the ops on top
 * (phase A), and ThreadedLinear, the pool's weights behind linear.ts's interface (phase B: the
 * models' ThreadedStorage holds a model's matrices in the pool; see the design note in pool.ts).
 */
export {
  assembleThreadsWat,
  CHUNKS_PER_THREAD,
  defaultThreads,
  MAX_DEFAULT_THREADS,
  ThreadPool,
  type PoolExports,
  type PoolInfo,
  type PoolOptions,
} from './pool.ts';
export { SharedHeap, type Allocation } from './memory.ts';
export {
  compileOptimized,
  enableRelaxedSimd,
  relaxedValidates,
  runSelfTests,
  type SelfTestResult,
  type SimdPath,
} from './simd.ts';
export {
  attention,
  freeWeight,
  gather,
  matmul,
  matmulAt,
  matmulSplit,
  mix,
  scratch,
  SharedKv,
  sharedWeightBytes,
  splitHeads,
  uploadWeight,
  BLOCK,
  type AttentionOptions,
  type MatmulOptions,
  type OutputPart,
  type Q8Activations,
  type SharedWeight,
  type SplitHeadsOptions,
  type WeightSource,
} from './ops.ts';
export {
  floatTileText,
  selfTestWat,
  threadsWat,
  JOB_KERNELS,
  FLOAT_TILES,
  Q8_TILES,
  type JobKernel,
  type MatKind,
} from './wat.ts';
export { ThreadedLinear, type ThreadedLinearOptions } from './linear.ts';
export { pooledPrefillAttention } from './prefill.ts';
