/**
 * @moi/engine: a loaded model and everything generation needs around it, with no server, eval,
 * chart or hub client inside. `Engine.load` (a folder, or a resolver the caller hands in for hub
 * ids), `generate()` as a stream (batched, per-row sampling and mixing), the continuous-batching
 * `Scheduler`, chat sessions, text (tokenizer, chat templates, the streaming detokenizer), the
 * settings table every request field is declared in, and the per-step trace data.
 */
export { Engine, MAX_THREADS, resolveThreads, type EngineLoadOptions, type ModelResolver } from './engine/engine.ts';
export * from './engine/generate.ts';
export * from './engine/scheduler.ts';
export * from './engine/chat-session.ts';
export { prefillChunkEnd } from './engine/prefill.ts';
export {
  GPU_DTYPE_CHOICES,
  GpuPlans,
  gpuDtypeFor,
  gpuPlanWanted,
  planCapacity,
  type GpuDtype,
  type GpuRoute,
  type PlanSource,
} from './engine/gpu-plans.ts';
export { gpuFallbackReason } from './engine/gpu-decode.ts';
export * from './text/index.ts';
export * from './settings/index.ts';
export * from './trace/candidates.ts';
export { checkFiniteRows } from './engine/finite.ts';
