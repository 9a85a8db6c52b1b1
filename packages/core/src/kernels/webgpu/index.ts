/**
 * moi's own WebGPU room: the shared device, a small runtime with step counters, WGSL kernels and
 * the fixed-shape GPU decode plan (issue 23). Nothing here imports Dawn or tfjs-backend-webgpu at
 * load time: they are imported when a device is first asked for.
 */
export { flushTfjs, gpuDevice, KERNEL_NEEDS, shareDeviceWithTfjs, tensorBuffer, tensorFromBuffer, type GpuDevice, type GpuLimits } from './device.ts';
export { counterDiff, GpuRuntime, GpuStep, grid, zeroCounters, type GpuCounters, type Kernel } from './runtime.ts';
export { ACT_WGSL, gemmGroups, gemmKernel, gemvGroups, gemvKernel, GEMV_MAX_ROWS, linearKernel, padK, type Act, type LinearShape } from './linear.ts';
