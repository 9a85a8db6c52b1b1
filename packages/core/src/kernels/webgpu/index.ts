/**
 * moi's own WebGPU room: the shared device, a small runtime with step counters, WGSL kernels and
 * the fixed-shape GPU decode plan (issue 23). Nothing here imports Dawn or tfjs-backend-webgpu at
 * load time: they are imported when a device is first asked for.
 */
export {
  flushTfjs,
  gpuDevice,
  KERNEL_NEEDS,
  shareDeviceWithTfjs,
  tensorBuffer,
  tensorFromBuffer,
  type GpuDevice,
  type GpuLimits,
} from './device.ts';
export {
  counterDiff,
  DimsLayout,
  GpuRuntime,
  GpuStep,
  grid,
  zeroCounters,
  type GpuCounters,
  type Kernel,
} from './runtime.ts';
export {
  ACT_WGSL,
  autoSplitK,
  gemmGroups,
  gemmKernel,
  gemvGroups,
  gemvKernel,
  GEMV_MAX_ROWS,
  linearKernels,
  padK,
  splitReduceKernel,
  splitScratchWords,
  type Act,
  type LinearShape,
} from './linear.ts';
export { normKernel, type NormShape } from './norm.ts';
export { embedAccess, gatherGroups, gatherKernel, type EmbedLayout, type GatherShape } from './embed.ts';
export { ropeKernel, ropeTable, type RopeShape } from './rope.ts';
export { attentionKernel, type AttentionShape } from './attention.ts';
export {
  MIX_MODE_CODE,
  NO_TOKEN,
  packRowParams,
  type TailRowParams,
  RECORD_TOP_LOGPROBS,
  RECORD_WORDS,
  ROW_PARAM_WORDS,
  TAIL_MAX_K,
  TAIL_SCRATCH_WORDS,
  tailKernels,
  tailMixKernel,
  tailOffsets,
  tailSampleKernel,
  tailStatsKernel,
  type TailShape,
} from './tail.ts';
export {
  F16_MAX,
  GpuWeightStore,
  type GpuLayerSpec,
  type StoredWeight,
  type GpuModelSpec,
  type HostTensor,
  type WeightsProvider,
} from './weights.ts';
export { GpuDecodePlan, type GpuMixMode, type GpuPlanOptions, type RowSettings, type StepRecord } from './plan.ts';
