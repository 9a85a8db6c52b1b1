/**
 * The engine benchmark: load time, prefill and decode speed in each mixing mode, batched decode,
 * memory, tensor counts, and a roofline ratio against a bandwidth measured in the same run.
 * The prompt follows peer-bench's definition so llama.cpp sees the same ids:
 *   prompt[i] = 1000 + (i·7919) mod (vocab_size − 2000), no BOS.
 */
import * as tf from '@tensorflow/tfjs-core';
import { activeKernels, initBackend, setKernelsEnabled } from '@moi/core';
import type { DtypeChoice } from '@moi/models';
import { dtypeLabel } from '../commands/options.ts';
import { Engine } from '@moi/engine';
import { generate, type GenerateRequest } from '@moi/engine';
import { measureReadBandwidth, median } from './bandwidth.ts';
import { measureGpuStep, type GpuStepCounters } from './gpu-step.ts';
import { profileDecodeStep, type StepProfile } from './profile.ts';

export interface BenchOptions {
  model: string;
  backend?: string;
  /** weight dtype asked for (auto by default; the result says what was loaded) */
  dtype?: DtypeChoice;
  /** threads for the weight matrices (default: Engine.load's: $MOI_THREADS, else the cores, capped) */
  threads?: number;
  /** false: skip the load's weight check (--no-check-tensors) */
  checkTensors?: boolean;
  promptTokens?: number;
  genTokens?: number;
  repeat?: number;
  batches?: number[];
  /** false: skip the bandwidth measurement (--no-roofline); `roofline` is then null */
  roofline?: boolean;
  /** report progress lines (to stderr, by the caller) */
  log?: (line: string) => void;
}

export interface BenchResult {
  model: string;
  backend: string;
  /** what the weight matrices were held as (f32, bf16, f16 or q8), and why */
  dtype: string;
  dtypeNote: string;
  /** threads multiplying the matrices (1: tfjs's single-thread kernels), the pool's SIMD path (null without it), and the line */
  threads: number;
  simd: string | null;
  threads_note: string;
  load_s: number;
  load_gb_s: number;
  prefill_tok_s: number;
  decode_tok_s: { standard: number; moi: number; direct: number };
  /** decode moi ÷ standard: the median of each repeat's back-to-back pair */
  moi_overhead: number;
  batch_decode_tok_s: Record<string, number>;
  peak_rss_mb: number;
  tensors_before: number;
  tensors_after: number;
  /** null with `roofline: false` (--no-roofline): the bandwidth was not measured */
  roofline: { bytes_per_token: number; bandwidth_gb_s: number; ratio: number; method: string } | null;
  first_ids: number[];
  prompt_tokens: number;
  gen_tokens: number;
  repeat: number;
  weight_bytes: number;
  /** CPU time of this process per decoded token (ms), median: steadier than wall time on a shared machine */
  decode_cpu_ms_per_tok: { standard: number; moi: number };
  /** one profiled batch-1 decode step: kernels dispatched (by name) and kernel time by bucket */
  step_profile: StepProfile;
  /**
   * webgpu with the GPU plan (issue 23): one warm batch-1 MoI decode step's counters (gpu-step.ts);
   * null on other backends or with MOI_GPU_PLAN=0. The decode figures above then ran on the plan.
   */
  gpu_step: GpuStepCounters | null;
  /** the GPU plan's storage and why (webgpu), else null */
  gpu_dtype_note: string | null;
  /** whether our own wasm kernels (src/kernels/wasm) ran */
  kernels_active: boolean;
  /**
   * The same figures with our kernels off (MOI_KERNELS=0), timed alternately with the runs above
   * in the same process. null where the kernels were not active (another backend, or
   * MOI_KERNELS=0), and with packed (16/8-bit) weights, whose fallback widens every matrix per call.
   */
  kernels_off: {
    prefill_tok_s: number;
    decode_tok_s: { standard: number; moi: number };
    decode_cpu_ms_per_tok: { standard: number; moi: number };
    step_profile: StepProfile;
  } | null;
}

export function benchPrompt(vocabSize: number, n: number): number[] {
  // peer-bench's definition needs vocab_size > 2000; tiny test models use the same stride mod V
  if (vocabSize <= 2000) return Array.from({ length: n }, (_, i) => (i * 7919) % vocabSize);
  return Array.from({ length: n }, (_, i) => 1000 + ((i * 7919) % (vocabSize - 2000)));
}

/** Run requests to the end; decode tok/s counts the tokens after each row's first, over the decode wall time. */
async function timeDecode(
  engine: Engine,
  requests: GenerateRequest[],
): Promise<{ tokS: number; prefillS: number; ids: number[][]; cpuMsPerTok: number }> {
  const ids: number[][] = requests.map(() => []);
  let first = 0;
  let tokensAfterFirst = 0;
  const t0 = performance.now();
  let prefillS = 0;
  let cpu0 = process.cpuUsage();
  for await (const e of generate(engine, requests)) {
    if (e.type !== 'token') continue;
    if (!first) {
      first = performance.now();
      prefillS = (first - t0) / 1000;
      cpu0 = process.cpuUsage();
    }
    if (ids[e.row].length > 0) tokensAfterFirst++;
    ids[e.row].push(e.token);
  }
  const decodeS = (performance.now() - first) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return {
    tokS: tokensAfterFirst / decodeS,
    prefillS,
    ids,
    cpuMsPerTok: (cpu.user + cpu.system) / 1000 / tokensAfterFirst,
  };
}

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const log = o.log ?? (() => {});
  const P = o.promptTokens ?? 128;
  const G = o.genTokens ?? 64;
  const R = o.repeat ?? 3;
  // bandwidth first, so its scratch matrix's heap is reused by the model rather than added to it
  await initBackend({ backend: o.backend });
  const bw = o.roofline === false ? null : await measureReadBandwidth();
  if (bw) log(`read bandwidth ${bw.gbPerSec.toFixed(2)} GB/s (${bw.method})`);
  const t0 = performance.now();
  const engine = await Engine.load(o.model, {
    backend: o.backend,
    dtype: o.dtype,
    threads: o.threads,
    checkTensors: o.checkTensors,
  });
  const loadS = (performance.now() - t0) / 1000;
  const spec = engine.spec;
  const prompt = benchPrompt(spec.vocabSize, P);
  const request = (mode: string): GenerateRequest => ({
    promptIds: prompt,
    maxTokens: G + 1,
    ignoreEos: true,
    sampling: { temperature: 0 },
    mix: { mode },
  });
  log(
    `loaded ${o.model} on ${engine.backend.name} as ${engine.loaded.dtype} (${engine.loaded.dtypeNote}), ${engine.threads.note}, in ${loadS.toFixed(2)} s`,
  );

  // warm-up of every path (kernel setup, kept constants), not timed
  for (const mode of ['standard', 'moi', 'direct']) await timeDecode(engine, [{ ...request(mode), maxTokens: 3 }]);
  await timeDecode(
    engine,
    [0, 1].map(() => ({ ...request('standard'), maxTokens: 3 })),
  );
  // The kernels-off twin runs compare our attention/norm/RoPE kernels with tfjs's ops. With
  // packed weights, kernels off also sends every matmul to the composite fallback, which widens
  // each whole matrix per call (SmolLM2-135M q8: 0.25 tok/s against 21.6): not that comparison,
  // and hours on the larger shapes. So they run on f32 weights only.
  const kernelsActive = activeKernels() !== null;
  const kernelsOn = kernelsActive && engine.loaded.dtype === 'f32';
  if (kernelsOn) {
    setKernelsEnabled(false);
    for (const mode of ['standard', 'moi']) await timeDecode(engine, [{ ...request(mode), maxTokens: 3 }]);
    setKernelsEnabled(true);
  }
  const tensorsBefore = tf.memory().numTensors;

  const prefill: number[] = [];
  const decode: Record<'standard' | 'moi' | 'direct', number[]> = { standard: [], moi: [], direct: [] };
  const cpu: Record<'standard' | 'moi', number[]> = { standard: [], moi: [] };
  const off = {
    prefill: [] as number[],
    standard: [] as number[],
    moi: [] as number[],
    cpuStandard: [] as number[],
    cpuMoi: [] as number[],
  };
  let firstIds: number[] = [];
  try {
    for (let r = 0; r < R; r++) {
      // the three modes back to back (MoI's ratio pairs each repeat's runs), then the kernels-off twins
      for (const mode of ['standard', 'moi', 'direct'] as const) {
        const run = await timeDecode(engine, [request(mode)]);
        decode[mode].push(run.tokS);
        if (mode !== 'direct') cpu[mode].push(run.cpuMsPerTok);
        if (mode === 'standard') {
          prefill.push(P / run.prefillS);
          firstIds = run.ids[0].slice(0, 8);
        }
        log(
          `repeat ${r + 1}/${R} ${mode}: ${run.tokS.toFixed(2)} tok/s (prefill ${(P / run.prefillS).toFixed(1)} tok/s)`,
        );
      }
      if (!kernelsOn) continue;
      for (const mode of ['standard', 'moi'] as const) {
        // the same runs with our kernels off, right after: back to back in one process
        setKernelsEnabled(false);
        const o = await timeDecode(engine, [request(mode)]);
        setKernelsEnabled(true);
        off[mode].push(o.tokS);
        off[mode === 'standard' ? 'cpuStandard' : 'cpuMoi'].push(o.cpuMsPerTok);
        if (mode === 'standard') off.prefill.push(P / o.prefillS);
        log(
          `repeat ${r + 1}/${R} ${mode}, kernels off: ${o.tokS.toFixed(2)} tok/s (prefill ${(P / o.prefillS).toFixed(1)} tok/s)`,
        );
      }
    }
  } finally {
    setKernelsEnabled(true);
  }
  const stepProfile = await profileDecodeStep(engine.model, prompt, prompt[0]);
  let offProfile: StepProfile | null = null;
  if (kernelsOn) {
    setKernelsEnabled(false);
    try {
      offProfile = await profileDecodeStep(engine.model, prompt, prompt[0]);
    } finally {
      setKernelsEnabled(true);
    }
  }
  log(
    `kernels per decode step: ${stepProfile.kernels}${offProfile ? ` (${offProfile.kernels} with our kernels off)` : ''}`,
  );
  const batch: Record<string, number> = {};
  for (const b of o.batches ?? [4, 16]) {
    const runs: number[] = [];
    for (let r = 0; r < Math.min(R, 2); r++) {
      const reqs = Array.from({ length: b }, (_, i) => ({
        ...request('standard'),
        promptIds: benchPrompt(spec.vocabSize, P - (i % 4)),
      }));
      runs.push((await timeDecode(engine, reqs)).tokS);
    }
    batch[String(b)] = median(runs);
    log(`batch ${b}: ${batch[String(b)].toFixed(2)} tok/s`);
  }
  const tensorsAfter = tf.memory().numTensors;
  const gpuStep = await measureGpuStep(engine, prompt);
  if (gpuStep) log(`gpu_step: ${JSON.stringify(gpuStep)}`);

  // Bytes a batch-1 decode step reads: every weight once, except an untied embedding table, of
  // which only one row is gathered (a tied table is the head, read whole every step).
  const w = engine.model.weights;
  const bytesPerToken = engine.loaded.weightBytes - (w.embed ? w.embed.bytes * (1 - 1 / spec.vocabSize) : 0);
  const standard = median(decode.standard);
  const result: BenchResult = {
    model: o.model,
    backend: engine.backend.name,
    dtype: engine.loaded.dtype,
    dtypeNote: engine.loaded.dtypeNote,
    threads: engine.threads.threads,
    simd: engine.threads.simd,
    threads_note: engine.threads.note,
    load_s: loadS,
    load_gb_s: engine.loaded.checkpointBytes / loadS / 1e9,
    prefill_tok_s: median(prefill),
    decode_tok_s: { standard, moi: median(decode.moi), direct: median(decode.direct) },
    moi_overhead: median(decode.moi.map((m, r) => m / decode.standard[r])),
    batch_decode_tok_s: batch,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    tensors_before: tensorsBefore,
    tensors_after: tensorsAfter,
    roofline: bw && {
      bytes_per_token: bytesPerToken,
      bandwidth_gb_s: bw.gbPerSec,
      ratio: (standard * bytesPerToken) / (bw.gbPerSec * 1e9),
      method: bw.method,
    },
    first_ids: firstIds,
    prompt_tokens: P,
    gen_tokens: G,
    repeat: R,
    weight_bytes: engine.loaded.weightBytes,
    decode_cpu_ms_per_tok: { standard: median(cpu.standard), moi: median(cpu.moi) },
    step_profile: stepProfile,
    gpu_step: gpuStep,
    gpu_dtype_note: engine.gpu?.dtypeNote ?? null,
    kernels_active: kernelsActive,
    kernels_off: kernelsOn
      ? {
          prefill_tok_s: median(off.prefill),
          decode_tok_s: { standard: median(off.standard), moi: median(off.moi) },
          decode_cpu_ms_per_tok: { standard: median(off.cpuStandard), moi: median(off.cpuMoi) },
          step_profile: offProfile!,
        }
      : null,
  };
  engine.dispose();
  return result;
}

/** Bytes a weight holds: f32 tensor, or packed 16/8-bit data with its scales. */
function profileLine(p: StepProfile): string {
  const t = p.ms.gemv + p.ms.attention + p.ms.other;
  const pc = (x: number) => `${((100 * x) / (t || 1)).toFixed(0)}%`;
  return `${p.kernels}${p.pool_jobs ? ` + ${p.pool_jobs} pool jobs` : ''} (profiled time: GEMV ${pc(p.ms.gemv)}, attention ${pc(p.ms.attention)}, other ${pc(p.ms.other)})`;
}

export function formatBench(r: BenchResult): string {
  const rows: [string, string][] = [
    ['model', r.model],
    ['backend / dtype', `${r.backend} / ${dtypeLabel(r)}`],
    ['threads', r.threads_note],
    ['load', `${r.load_s.toFixed(2)} s (${r.load_gb_s.toFixed(2)} GB/s)`],
    [`prefill (${r.prompt_tokens} tok)`, `${r.prefill_tok_s.toFixed(1)} tok/s`],
    ['decode standard', `${r.decode_tok_s.standard.toFixed(2)} tok/s`],
    ['decode moi', `${r.decode_tok_s.moi.toFixed(2)} tok/s (×${r.moi_overhead.toFixed(3)} of standard)`],
    ['decode direct', `${r.decode_tok_s.direct.toFixed(2)} tok/s`],
    ...Object.entries(r.batch_decode_tok_s).map(([b, v]): [string, string] => [
      `decode batch ${b}`,
      `${v.toFixed(2)} tok/s (all rows)`,
    ]),
    ['peak RSS', `${r.peak_rss_mb.toFixed(0)} MB (weights ${(r.weight_bytes / 1e6).toFixed(0)} MB ${r.dtype})`],
    ['tensors before / after', `${r.tensors_before} / ${r.tensors_after}`],
    [
      'roofline',
      r.roofline
        ? `${(r.roofline.bytes_per_token / 1e6).toFixed(1)} MB/token at ${r.roofline.bandwidth_gb_s.toFixed(2)} GB/s → ` +
          `${((r.roofline.bandwidth_gb_s * 1e9) / r.roofline.bytes_per_token).toFixed(2)} tok/s max; ratio ${r.roofline.ratio.toFixed(3)}`
        : 'not measured (--no-roofline)',
    ],
    [
      'decode CPU time',
      `${r.decode_cpu_ms_per_tok.standard.toFixed(2)} ms/tok standard, ${r.decode_cpu_ms_per_tok.moi.toFixed(2)} moi`,
    ],
    ['kernels / decode step', profileLine(r.step_profile)],
    ...(r.gpu_step
      ? ([
          ['gpu plan', r.gpu_dtype_note ?? ''],
          [
            'gpu plan / step',
            `${r.gpu_step.dispatches} dispatches (${r.gpu_step.dispatches_per_layer} a layer + ${r.gpu_step.dispatches_outside_layers}), ` +
              `${r.gpu_step.uploads_bytes} B up, ${r.gpu_step.readbacks} read of ${r.gpu_step.readback_bytes_per_row} B a row, ` +
              `new: ${r.gpu_step.new_pipelines} pipelines, ${r.gpu_step.new_bind_groups} bind groups, ${r.gpu_step.new_buffers} buffers`,
          ],
        ] as [string, string][])
      : []),
    ...(r.kernels_off
      ? ([
          ['kernels off: prefill', `${r.kernels_off.prefill_tok_s.toFixed(1)} tok/s`],
          [
            'kernels off: decode',
            `${r.kernels_off.decode_tok_s.standard.toFixed(2)} tok/s standard, ${r.kernels_off.decode_tok_s.moi.toFixed(2)} moi; ` +
              `CPU ${r.kernels_off.decode_cpu_ms_per_tok.standard.toFixed(2)} / ${r.kernels_off.decode_cpu_ms_per_tok.moi.toFixed(2)} ms/tok`,
          ],
          ['kernels off: / step', profileLine(r.kernels_off.step_profile)],
        ] as [string, string][])
      : [
          [
            'own kernels',
            r.kernels_active
              ? `on; no kernels-off runs with ${r.dtype} weights (the fallback widens every matrix per call)`
              : 'not active (another backend or MOI_KERNELS=0)',
          ] as [string, string],
        ]),
    ['first ids', r.first_ids.join(',')],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}
