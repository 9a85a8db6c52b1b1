/**
 * @moi/cli's public API, for workspace imports and notebook-style scripts: hub resolution (models
 * and datasets), synthetic models and the benchmark. The engine itself is `@moi/engine` (re-exported
 * here, so one import serves a notebook that also downloads).
 */
export * from '@moi/engine';
export * from './hub/index.ts';
export * from './synth.ts';
export * from './bench/bench.ts';
export { measureReadBandwidth } from './bench/bandwidth.ts';
