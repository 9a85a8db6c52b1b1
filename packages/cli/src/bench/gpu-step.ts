/**
 * `gpu_step` of `moi-gen bench --json` on webgpu (issue 23): the counters of one decode step of the
 * engine's GPU plan after warm-up (dispatches in all and per layer, bytes uploaded and read back,
 * pipelines, bind groups and buffers made during the step), from the runtime's own counters.
 * The scenario: `batch` rows, each prefilled with the bench prompt, greedy MoI (β = 1, top-20,
 * the tail's heaviest greedy mode), two steps to warm up, then the measured one.
 */
import type { Engine } from '@moi/engine';

export interface GpuStepCounters {
  rows: number;
  mode: 'moi';
  /** what the plan stores its matrices as */
  dtype: string;
  dispatches: number;
  dispatches_per_layer: number;
  /** embedding gather, head blocks, the tail (stats, sampler, mix): dispatches outside the layers */
  dispatches_outside_layers: number;
  uploads_bytes: number;
  readback_bytes: number;
  readback_bytes_per_row: number;
  /** reads of the step (one: the records) */
  readbacks: number;
  new_pipelines: number;
  new_bind_groups: number;
  new_buffers: number;
}

/** The counters of one warm decode step of the engine's plan; null off the GPU plan. */
export async function measureGpuStep(engine: Engine, prompt: number[], rows = 1): Promise<GpuStepCounters | null> {
  const gpu = engine.gpu;
  if (!gpu) return null;
  const plan = await gpu.acquire(rows, prompt.length + 4);
  try {
    for (let r = 0; r < rows; r++) {
      plan.setRow(r, { sampling: { temperature: 0 }, mix: { mode: 'moi', beta: 1, topK: 20 } });
      plan.resetRow(r);
      await plan.prefill(r, prompt);
    }
    await plan.step();
    await plan.step();
    await plan.step();
    const c = plan.lastStep!;
    const per = plan.dispatchesPerStep();
    return {
      rows,
      mode: 'moi',
      dtype: plan.dtype,
      dispatches: c.dispatches,
      dispatches_per_layer: per.perLayer,
      dispatches_outside_layers: c.dispatches - per.perLayer * engine.spec.numLayers,
      uploads_bytes: c.uploads_bytes,
      readback_bytes: c.readback_bytes,
      readback_bytes_per_row: c.readback_bytes / rows,
      readbacks: c.readbacks,
      new_pipelines: c.new_pipelines,
      new_bind_groups: c.new_bind_groups,
      new_buffers: c.new_buffers,
    };
  } finally {
    gpu.release(plan);
  }
}
