/**
 * The GPU run of issue 23, for a session that has an NVIDIA GPU (H100/H200 class): decode speed of
 * the engine's GPU plan on webgpu (Dawn over the NVIDIA Vulkan driver), printed as one JSON object
 * (and written to --out after each measurement, so a timeout still leaves what was measured).
 * Not a test: nothing is asserted; the `goals` block compares the figures with the issue's.
 *
 *   bash bench/gpu/run.sh [--tiny] [--out FILE] [--tokens N] [--only NAME,…]   (with shared/gpu/pack.sh's bundle)
 *   node --import tsx bench/gpu/run.ts …                                      (where node is installed)
 *
 * Jobs (synthetic weights from `moi-gen synth`, made once under $MOI_GPU_MODELS or /tmp/moi-gpu-models):
 * - smollm2-135m, f32 checkpoint, f32 on the plan, through Engine + generate(): batch 1 standard
 *   and MoI (β = 1, top-20), batch 64 standard (all rows' tokens / decode time), gpu_step counters;
 * - qwen3-1.7b, bf16 checkpoint, f16 on the plan (auto), through Engine + generate(): the same;
 * - qwen2.5-7b (bench/gpu/qwen2.5-7b.json, the published shape), bf16 checkpoint, f16 on the plan,
 *   the plan alone (GpuPlans without the composite model, whose f32 copy of a 7B model would
 *   not fit beside it): batch 1 standard and MoI, peak host RSS.
 * `--tiny` runs the same three kinds of job on small configs (a lavapipe check that the script
 * runs end to end; its speeds mean nothing). The peer-bench configs are read from
 * $MOI_SHARED/peer-bench/configs, ../shared/peer-bench/configs or shared/peer-bench/configs.
 * Prompt: peer-bench's (1000 + (i·7919) mod (V − 2000)), 128 tokens; 64 decoded tokens a run
 * (the first, which the prefill picks, is not counted); the median of 3 runs after a warm-up.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gpuDevice, initBackend } from '@moi/core';
import { Engine, generate, GpuPlans, type GenerateRequest } from '@moi/engine';
import { specFromConfig, type RawConfig } from '@moi/models';
import { measureGpuStep } from '../../packages/cli/src/bench/gpu-step.ts';
import { synthesizeModel } from '../../packages/cli/src/synth.ts';

// ---- arguments

const argv = process.argv.slice(2);
const flag = (name: string) => argv.includes(name);
const value = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const tiny = flag('--tiny');
const outFile = value('--out');
const G = Number(value('--tokens') ?? (tiny ? 8 : 64));
const P = tiny ? 16 : 128;
const REPEAT = tiny ? 1 : 3;
const only = value('--only')?.split(',');
const here = path.dirname(new URL(import.meta.url).pathname);
const repo = path.resolve(here, '../..');
const modelsDir = process.env.MOI_GPU_MODELS ?? path.join(os.tmpdir(), 'moi-gpu-models');

/** eager PyTorch f32 on the H200 (issue 23), decode tok/s summed over batch 64 */
const EAGER_F32_B64: Record<string, number> = { 'smollm2-135m': 1735, 'qwen3-1.7b': 1409 };

// ---- configs

function peerConfig(file: string): string | null {
  const roots = [process.env.MOI_SHARED, path.resolve(repo, '../shared'), path.join(repo, 'shared')].filter(
    Boolean,
  ) as string[];
  for (const r of roots) {
    const f = path.join(r, 'peer-bench', 'configs', file);
    if (existsSync(f)) return f;
  }
  return null;
}

/** A small llama / qwen3 / qwen2 config for --tiny (the same families and code paths). */
function tinyConfig(modelType: 'llama' | 'qwen3' | 'qwen2'): RawConfig {
  return {
    model_type: modelType,
    hidden_size: 256,
    intermediate_size: 512,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 64,
    vocab_size: 4096,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: modelType !== 'qwen2',
    hidden_act: 'silu',
  };
}

interface Job {
  name: string;
  config: string | RawConfig | null;
  synth: 'f32' | 'bf16';
  /** the plan's --dtype */
  dtype: 'f32' | 'f16' | 'auto';
  /** Engine + generate() (else the plan alone) */
  engine: boolean;
  batches: number[];
}

const jobs: Job[] = tiny
  ? [
      { name: 'tiny-llama', config: tinyConfig('llama'), synth: 'f32', dtype: 'f32', engine: true, batches: [4] },
      { name: 'tiny-qwen3', config: tinyConfig('qwen3'), synth: 'bf16', dtype: 'auto', engine: true, batches: [4] },
      {
        name: 'tiny-qwen2-plan',
        config: tinyConfig('qwen2'),
        synth: 'bf16',
        dtype: 'auto',
        engine: false,
        batches: [],
      },
    ]
  : [
      {
        name: 'smollm2-135m',
        config: peerConfig('smollm2-135m.json'),
        synth: 'f32',
        dtype: 'f32',
        engine: true,
        batches: [64],
      },
      {
        name: 'qwen3-1.7b',
        config: peerConfig('qwen3-1.7b.json'),
        synth: 'bf16',
        dtype: 'auto',
        engine: true,
        batches: [64],
      },
      {
        name: 'qwen2.5-7b',
        config: path.join(here, 'qwen2.5-7b.json'),
        synth: 'bf16',
        dtype: 'auto',
        engine: false,
        batches: [],
      },
    ];

// ---- the report, written as it grows

const report: Record<string, unknown> = {
  started: new Date().toISOString(),
  tiny,
  prompt_tokens: P,
  gen_tokens: G,
  repeat: REPEAT,
  jobs: {} as Record<string, unknown>,
};
const results = report.jobs as Record<string, Record<string, unknown>>;
function save(): void {
  if (outFile) writeFileSync(outFile, JSON.stringify(report, null, 1));
}
const log = (s: string) => process.stderr.write(`gpu-run: ${s}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const prompt = (V: number, n: number, shift = 0) =>
  Array.from({ length: n }, (_, i) => 1000 + (((i + shift) * 7919) % (V - 2000)));

function modelFolder(job: Job): string {
  const dir = path.join(modelsDir, `${job.name}-${job.synth}`);
  if (existsSync(path.join(dir, 'model.safetensors'))) return dir;
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const config =
    typeof job.config === 'string' ? (JSON.parse(readFileSync(job.config, 'utf8')) as RawConfig) : job.config!;
  synthesizeModel({ config, out: dir, dtype: job.synth });
  log(`${job.name}: synthesized (${job.synth}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return dir;
}

/** Decode tok/s of one generate() call: tokens after each row's first over the time from the first token to the end. */
async function timeGenerate(engine: Engine, reqs: GenerateRequest[]): Promise<number> {
  let first = 0;
  let counted = 0;
  const seen = new Set<number>();
  for await (const e of generate(engine, reqs)) {
    if (e.type !== 'token') continue;
    if (!first) first = performance.now();
    if (seen.has(e.row)) counted++;
    else seen.add(e.row);
  }
  return counted / ((performance.now() - first) / 1000);
}

async function engineJob(job: Job, dir: string, r: Record<string, unknown>): Promise<void> {
  const t0 = performance.now();
  const engine = await Engine.load(dir, { backend: 'webgpu', dtype: job.dtype });
  try {
    r.load_s = (performance.now() - t0) / 1000;
    r.plan_dtype = engine.gpu?.dtypeNote ?? 'no GPU plan (MOI_GPU_PLAN=0?)';
    r.plan_weight_bytes = engine.gpu?.weightBytes;
    const V = engine.spec.vocabSize;
    const req = (mode: string, shift = 0): GenerateRequest => ({
      promptIds: prompt(V, P, shift),
      maxTokens: G + 1,
      ignoreEos: true,
      sampling: { temperature: 0 },
      mix: { mode },
    });
    for (const mode of ['standard', 'moi']) await timeGenerate(engine, [{ ...req(mode), maxTokens: 3 }]);
    const tok: Record<string, number[]> = { standard: [], moi: [] };
    for (let k = 0; k < REPEAT; k++) {
      for (const mode of ['standard', 'moi']) {
        tok[mode].push(await timeGenerate(engine, [req(mode)]));
        log(`${job.name} batch 1 ${mode}: ${tok[mode].at(-1)!.toFixed(1)} tok/s (${engine.lastRoute?.path})`);
      }
    }
    r.route = engine.lastRoute;
    r.decode_tok_s_b1 = { standard: median(tok.standard), moi: median(tok.moi) };
    r.moi_vs_standard = median(tok.moi) / median(tok.standard);
    save();
    for (const b of job.batches) {
      const reqs = Array.from({ length: b }, (_, i) => req('standard', i));
      await timeGenerate(
        engine,
        reqs.map((x) => ({ ...x, maxTokens: 3 })),
      );
      const runs: number[] = [];
      for (let k = 0; k < Math.min(REPEAT, 2); k++) {
        runs.push(await timeGenerate(engine, reqs));
        log(`${job.name} batch ${b}: ${runs.at(-1)!.toFixed(1)} tok/s (all rows)`);
      }
      r[`decode_tok_s_b${b}`] = median(runs);
      save();
    }
    r.gpu_step = await measureGpuStep(engine, prompt(V, P));
    r.peak_rss_mb = process.resourceUsage().maxRSS / 1024;
  } finally {
    engine.dispose();
  }
}

/** The plan alone (no composite model): batch 1 standard and MoI through the plan's own loop. */
async function planJob(job: Job, dir: string, r: Record<string, unknown>): Promise<void> {
  const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as RawConfig;
  const { family, spec } = specFromConfig(config, path.join(dir, 'config.json'));
  const t0 = performance.now();
  const plans = await GpuPlans.create({ dir, family, spec }, job.dtype);
  try {
    r.load_s = (performance.now() - t0) / 1000;
    r.plan_dtype = plans.dtypeNote;
    r.plan_weight_bytes = plans.weightBytes;
    const plan = await plans.acquire(1, P + G + 8);
    try {
      const run = async (mode: 'standard' | 'moi'): Promise<number> => {
        plan.setRow(0, {
          sampling: { temperature: 0 },
          mix: mode === 'moi' ? { mode: 'moi', beta: 1, topK: 20 } : { mode: 'standard' },
        });
        plan.resetRow(0);
        await plan.prefill(0, prompt(spec.vocabSize, P));
        const t = performance.now();
        for (let s = 0; s < G; s++) await plan.step();
        return G / ((performance.now() - t) / 1000);
      };
      await run('standard');
      await run('moi');
      const tok: Record<string, number[]> = { standard: [], moi: [] };
      for (let k = 0; k < REPEAT; k++) {
        for (const mode of ['standard', 'moi'] as const) {
          tok[mode].push(await run(mode));
          log(`${job.name} (plan alone) batch 1 ${mode}: ${tok[mode].at(-1)!.toFixed(1)} tok/s`);
        }
      }
      r.decode_tok_s_b1 = { standard: median(tok.standard), moi: median(tok.moi) };
      r.moi_vs_standard = median(tok.moi) / median(tok.standard);
      r.gpu_step = { ...plan.lastStep, ...plan.dispatchesPerStep() };
    } finally {
      plans.release(plan);
    }
    r.peak_rss_mb = process.resourceUsage().maxRSS / 1024;
  } finally {
    plans.dispose();
  }
}

// ---- run

await initBackend({ backend: 'webgpu' });
const dev = await gpuDevice();
report.device = { description: dev.description, shader_f16: dev.shaderF16, limits: dev.limits };
log(`device: ${dev.description}`);
save();
for (const job of jobs) {
  if (only && !only.includes(job.name)) continue;
  const r: Record<string, unknown> = { synth: job.synth, dtype: job.dtype, path: job.engine ? 'engine' : 'plan alone' };
  results[job.name] = r;
  if (!job.config) {
    r.skipped = `config not found (peer-bench/configs under $MOI_SHARED, ../shared or shared/)`;
    log(`${job.name}: ${r.skipped as string}`);
    save();
    continue;
  }
  try {
    const dir = modelFolder(job);
    await (job.engine ? engineJob(job, dir, r) : planJob(job, dir, r));
  } catch (err) {
    r.error = (err as Error).message;
    log(`${job.name}: ${r.error as string}`);
  }
  save();
}

// ---- against issue 23's goals (where the figures exist)
const b1 = (name: string) => results[name]?.decode_tok_s_b1 as { standard: number; moi: number } | undefined;
const b64 = (name: string) => results[name]?.decode_tok_s_b64 as number | undefined;
if (!tiny) {
  report.goals = {
    'smollm2-135m f32 batch 1 tok/s (goal >= 150)': b1('smollm2-135m')?.standard,
    'qwen3-1.7b f16 batch 1 tok/s (goal >= 100)': b1('qwen3-1.7b')?.standard,
    'smollm2-135m batch 64 / eager PyTorch f32 1735 (goal >= 1.5)':
      b64('smollm2-135m') === undefined ? undefined : b64('smollm2-135m')! / EAGER_F32_B64['smollm2-135m'],
    'qwen3-1.7b batch 64 / eager PyTorch f32 1409 (goal >= 1.5)':
      b64('qwen3-1.7b') === undefined ? undefined : b64('qwen3-1.7b')! / EAGER_F32_B64['qwen3-1.7b'],
    'moi / standard, batch 1 (goal >= 0.95)': Object.fromEntries(
      Object.entries(results).map(([k, v]) => [k, v.moi_vs_standard]),
    ),
    'qwen2.5-7b f16 MoI batch 1 tok/s (a 7B+ shape decoding with MoI)': b1('qwen2.5-7b')?.moi,
  };
}
report.finished = new Date().toISOString();
save();
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(0);
