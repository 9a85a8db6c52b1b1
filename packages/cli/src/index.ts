/**
 * @moi/cli's public API, for workspace imports and notebook-style scripts: load an Engine,
 * generate() as a stream (batched, per-row sampling and MoI), chat sessions, text, sampling,
 * hub resolution, synthetic models and the benchmark.
 */
export { Engine, type EngineLoadOptions } from './engine/engine.ts';
export * from './engine/generate.ts';
export * from './engine/scheduler.ts';
export * from './engine/chat-session.ts';
export * from './text/index.ts';
export * from './sampling/index.ts';
export * from './hub/index.ts';
export * from './synth.ts';
export * from './bench/bench.ts';
export { measureReadBandwidth } from './bench/bandwidth.ts';
