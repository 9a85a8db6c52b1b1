/** Qwen2 / Qwen2.5: q/k/v projection biases; optional sliding window from max_window_layers. */
import { ModelError } from '@moi/core';
import { readBase, type BaseConfig, type ConfigReader } from './config.ts';
import { dropBuffers, type Family } from './family.ts';
import { baseSpec, uniformLayers } from './llama.ts';

/** Qwen's sliding-window fields (Qwen2 and Qwen3 alike). */
export interface QwenWindow {
  use_sliding_window: boolean;
  sliding_window: number | null;
  max_window_layers: number;
}

export type Qwen2Config = BaseConfig & QwenWindow;

export function readQwenWindow(r: ConfigReader, base: BaseConfig): QwenWindow {
  return {
    use_sliding_window: r.bool('use_sliding_window', false),
    sliding_window: r.optInt('sliding_window'),
    max_window_layers: readMaxWindowLayers(r, base.num_hidden_layers),
  };
}

/** A layer index: an integer ≥ 0 (past the last layer means no layer uses the window). */
function readMaxWindowLayers(r: ConfigReader, layers: number): number {
  const v = r.num('max_window_layers', layers);
  if (!Number.isInteger(v) || v < 0) {
    throw new ModelError(
      'E_CONFIG',
      `${r.source}: field 'max_window_layers' must be an integer ≥ 0 (got ${JSON.stringify(r.raw.max_window_layers)})`,
    );
  }
  return v;
}

/** HF Qwen2/3: layers from max_window_layers on use the window, when use_sliding_window is set. */
export function qwenWindowAt(c: QwenWindow): (layer: number) => number | null {
  return (i) => (c.use_sliding_window && c.sliding_window && i >= c.max_window_layers ? c.sliding_window : null);
}

export const qwen2: Family<Qwen2Config> = {
  modelTypes: ['qwen2'],
  parseConfig: (r: ConfigReader) => {
    const base = readBase(r, { rope_theta: 10000 });
    return { ...base, ...readQwenWindow(r, base) };
  },
  toSpec: (c) => ({
    ...baseSpec(c),
    qkvBias: true,
    oBias: false,
    mlpBias: false,
    qkNorm: false,
    layers: uniformLayers(c, qwenWindowAt(c)),
  }),
  sanitize: dropBuffers,
};
