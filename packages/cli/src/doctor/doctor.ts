/**
 * moi-gen doctor: the self-check a user runs on a new machine or GPU (issue 21).
 *
 * 1. Every backend: whether it starts and, if not, why and how to fix it; the webgpu adapter and
 *    its limits; wasm SIMD, threads and the engine's own kernels; tfjs-node's native binding.
 * 2. On the chosen backend, a small random Llama (model.ts, no fixtures, no network) against the
 *    plain cpu backend (the reference: float32, subnormals kept, no GPU in the way):
 *      logits       every position of two prompts, alone and batched: max|Δ| ≤ 1e-4 × max(1, max|L|)
 *      greedy       the standard trajectory equals cpu's
 *      moi          the MoI trajectories (β 0.5, 1, 2) equal cpu's: the sampled token anchors them
 *      batched rows a row of the batch equals the same request alone
 *      direct, soft teacher-forced along cpu's free runs (teacher-forced.ts): same inputs each step
 *    and, as information only, how far the free-running direct and soft runs agree with cpu's
 *    (float32 rounding grows ~4× per step without the anchor, so they may part), and the speed
 *    of a short greedy decode.
 * Every check ends with a plain verdict; a check that throws (NaN logits, a missing kernel) fails
 * with its message. The flushing cpu backend is checked like any other (MOI_FLUSH_SUBNORMALS=1
 * with the cpu backend), which shows what a GPU's flush-to-zero does to the engine.
 */
import { rmSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import {
  activeKernels,
  BACKENDS,
  backendLabel,
  initBackend,
  kernelsEnabled,
  type BackendName,
  type BackendReport,
} from '@moi/core';
import { Engine, generate, generateOne, type GenerateRequest } from '@moi/engine';
import type { MixOptions } from '@moi/moi';
import type { ThreadsReport } from '@moi/models';
import { DOCTOR_CONFIG, writeDoctorModel } from './model.ts';
import {
  agreeing,
  directSettings,
  recordRun,
  softSettings,
  teacherForced,
  type RefRun,
  type TeacherForcedReport,
} from './teacher-forced.ts';

// ---------------------------------------------------------------------------------------------
// backends

export interface BackendInfo {
  name: BackendName;
  starts: boolean;
  /** the package that provides it (when it starts) */
  package: string | null;
  /** why it does not start, with the fix (BackendError's message) */
  why: string | null;
  /** adapter and limits (webgpu), SIMD / threads / kernels (wasm), the native binding (tensorflow) */
  details: Record<string, string | number | boolean>;
}

const WEBGPU_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
] as const;

async function detailsOf(name: BackendName): Promise<BackendInfo['details']> {
  if (name === 'wasm') {
    return {
      simd: Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')),
      threads: tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT'),
      moiKernels: kernelsEnabled() && activeKernels() !== null,
    };
  }
  if (name === 'webgpu') {
    const device = (
      tf.backend() as unknown as { device?: { limits?: Record<string, number>; adapterInfo?: Record<string, string> } }
    ).device;
    const info = device?.adapterInfo ?? {};
    const out: BackendInfo['details'] = {};
    for (const k of ['vendor', 'architecture', 'device', 'description'] as const) if (info[k]) out[k] = String(info[k]);
    for (const k of WEBGPU_LIMITS) if (device?.limits?.[k] !== undefined) out[k] = device.limits[k];
    return out;
  }
  if (name === 'tensorflow') return { 'tfjs-node': 'native binding loaded' };
  return {};
}

/** Try every backend (in this process), then leave none chosen in particular. */
export async function listBackends(): Promise<BackendInfo[]> {
  const out: BackendInfo[] = [];
  for (const name of BACKENDS) {
    try {
      const r = await initBackend({ backend: name, flushSubnormals: false });
      out.push({ name, starts: true, package: r.package, why: null, details: await detailsOf(name) });
    } catch (err) {
      const why = (err as Error).message;
      const details: BackendInfo['details'] =
        name === 'tensorflow'
          ? {
              'tfjs-node': /native binding did not load/.test(why)
                ? 'installed, its native binding did not load'
                : 'not installed',
            }
          : {};
      out.push({ name, starts: false, package: null, why, details });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// the reference (plain cpu) and the checks

export const DOCTOR_PROMPTS: readonly number[][] = [
  [1, 17, 42, 99, 250, 311],
  [1, 400, 7, 123, 88, 5],
];
const BETAS = [0.5, 1, 2];

/** Soft Thinking as the doctor runs it: filters off, T 0.6, 10 candidates, think-end the last id. */
function softOptions(vocabSize: number): MixOptions {
  return {
    mode: 'soft',
    topK: 10,
    soft: {
      temperature: 0.6,
      topK: 0,
      topP: 1,
      minP: 0,
      thinkEndId: vocabSize - 1,
      coldStopEntropy: 0,
      afterThinking: { temperature: 0 },
    },
  };
}

interface Outputs {
  /** per prompt, per position, the logits: alone, and the prompts in one batch */
  logits: { alone: Float32Array[][]; batched: Float32Array[][] };
  /**
   * the rows of one batch (standard, moi at each β, direct, soft) and the β 1 request alone: the
   * tokens, or what failed (then the rows ran alone, and batchError says why the batch failed)
   */
  trajectories: { rows: Record<string, number[] | string>; alone: number[] | string; batchError: string | null };
  decode: { tokens: number; tokPerSec: number; prefillTokPerSec: number };
}

async function rows3(t: tf.Tensor3D): Promise<Float32Array[][]> {
  const [B, T, V] = t.shape;
  const flat = (await t.data()) as Float32Array;
  t.dispose();
  return Array.from({ length: B }, (_, b) =>
    Array.from({ length: T }, (_, i) => flat.slice((b * T + i) * V, (b * T + i + 1) * V)),
  );
}

const request = (mix: MixOptions, steps: number): GenerateRequest => ({
  promptIds: [...DOCTOR_PROMPTS[0]],
  maxTokens: steps,
  sampling: { temperature: 0 },
  ignoreEos: true,
  mix,
});

async function logitsOf(engine: Engine): Promise<Outputs['logits']> {
  const alone: Float32Array[][] = [];
  for (const p of DOCTOR_PROMPTS) alone.push((await rows3(engine.model.forward({ ids: [[...p]] })))[0]);
  return { alone, batched: await rows3(engine.model.forward({ ids: DOCTOR_PROMPTS.map((p) => [...p]) })) };
}

/**
 * Through the users' decode path: every mode as a row of one batch, then the β 1 row alone. When
 * the batch fails (one row's NaN ends it), each row runs alone, so the failure is put on its row.
 */
async function trajectoriesOf(engine: Engine, steps: number): Promise<Outputs['trajectories']> {
  const modes: { key: string; mix: MixOptions }[] = [
    { key: 'standard', mix: { mode: 'standard' } },
    ...BETAS.map((beta) => ({ key: `moi:${beta}`, mix: { mode: 'moi', beta } })),
    { key: 'direct', mix: { mode: 'direct' } },
    { key: 'soft', mix: softOptions(engine.spec.vocabSize) },
  ];
  const firstLine = (err: unknown) => (err as Error).message.split('\n')[0];
  const alone = async (mix: MixOptions): Promise<number[] | string> => {
    try {
      return (await generateOne(engine, request(mix, steps))).done.tokens;
    } catch (err) {
      return firstLine(err);
    }
  };
  try {
    const tokens: number[][] = modes.map(() => []);
    for await (const e of generate(
      engine,
      modes.map((m) => request(m.mix, steps)),
    ))
      if (e.type === 'token') tokens[e.row].push(e.token);
    return {
      rows: Object.fromEntries(modes.map((m, i) => [m.key, tokens[i]])),
      alone: await alone({ mode: 'moi', beta: 1 }),
      batchError: null,
    };
  } catch (err) {
    const rows: Record<string, number[] | string> = {};
    for (const m of modes) rows[m.key] = await alone(m.mix);
    return { rows, alone: rows['moi:1'], batchError: firstLine(err) };
  }
}

/** A short greedy decode of 2 × steps tokens, timed (after the trajectories: the backend is warm). */
async function decodeOf(engine: Engine, steps: number): Promise<Outputs['decode']> {
  const timed = await generateOne(engine, request({ mode: 'standard' }, 2 * steps));
  return {
    tokens: 2 * steps,
    tokPerSec: timed.done.stats.decodeTokPerSec,
    prefillTokPerSec: timed.done.stats.prefillTokPerSec,
  };
}

export interface DoctorReference {
  steps: number;
  outputs: Outputs;
  direct: RefRun;
  soft: RefRun;
}

/** The plain cpu backend's outputs on the doctor model in `dir` (float32, subnormals kept). */
export async function doctorReference(dir: string, steps = 16): Promise<DoctorReference> {
  const engine = await Engine.load(dir, { backend: 'cpu', flushSubnormals: false });
  try {
    const V = engine.spec.vocabSize;
    return {
      steps,
      outputs: {
        logits: await logitsOf(engine),
        trajectories: await trajectoriesOf(engine, steps),
        decode: await decodeOf(engine, steps),
      },
      direct: await recordRun(engine.model, [...DOCTOR_PROMPTS[0]], steps, directSettings()),
      soft: await recordRun(engine.model, [...DOCTOR_PROMPTS[0]], steps, softSettings(V, V - 1)),
    };
  } finally {
    engine.dispose();
  }
}

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface BackendResult {
  backend: { name: string; label: string; flushSubnormals: boolean; reason: string } | null;
  checks: DoctorCheck[];
  /** not checks: what the free-running modes and a short decode did */
  freeRunning: Record<string, { agree: number; of: number } | { error: string }>;
  decode: { tokens: number; tokPerSec: number; prefillTokPerSec: number; cpuTokPerSec: number } | null;
  /** what multiplied the weights on the checked backend: the thread pool (threads, SIMD path, why not relaxed) or tfjs's kernels */
  threads?: ThreadsReport;
}

const LOGIT_TOL = 1e-4;

function logitCheck(got: Float32Array[][], want: Float32Array[][]): { worst: number; ok: boolean } {
  let worst = 0;
  for (let p = 0; p < want.length; p++) {
    for (let t = 0; t < want[p].length; t++) {
      let diff = 0;
      let scale = 1;
      for (let v = 0; v < want[p][t].length; v++) {
        const d = Math.abs(got[p][t][v] - want[p][t][v]);
        diff = Number.isNaN(d) ? Infinity : Math.max(diff, d);
        scale = Math.max(scale, Math.abs(want[p][t][v]));
      }
      worst = Math.max(worst, diff / scale);
    }
  }
  return { worst, ok: worst <= LOGIT_TOL };
}

function teacherDetail(r: TeacherForcedReport): string {
  const base =
    `${r.steps} steps: logits ${r.worstLogitRel.toExponential(1)} × scale, weights at most ${r.worstWeightRatio.toFixed(2)} of their tolerance, ` +
    `candidates compared at ${r.setsCompared} (near-ties at ${r.nearTies})`;
  return r.failures.length
    ? `${r.failures[0]}${r.failures.length > 1 ? ` (and ${r.failures.length - 1} more)` : ''}; ${base}`
    : base;
}

async function check(
  checks: DoctorCheck[],
  name: string,
  f: () => Promise<{ ok: boolean; detail: string }>,
): Promise<void> {
  try {
    checks.push({ name, ...(await f()) });
  } catch (err) {
    checks.push({ name, ok: false, detail: (err as Error).message.split('\n')[0] });
  }
}

/**
 * The checks on one backend (`backend`: a name, or undefined for MOI_BACKEND / the best available;
 * `flushSubnormals`: undefined for MOI_FLUSH_SUBNORMALS) against the cpu reference.
 */
export async function checkBackend(
  dir: string,
  ref: DoctorReference,
  target: { backend?: string; flushSubnormals?: boolean; threads?: number } = {},
): Promise<BackendResult> {
  const result: BackendResult = { backend: null, checks: [], freeRunning: {}, decode: null };
  let report: BackendReport;
  let engine: Engine;
  try {
    // the choice first (initBackend keeps a started backend when none is named)
    report = await initBackend({ backend: target.backend, flushSubnormals: target.flushSubnormals });
    engine = await Engine.load(dir, {
      backend: report.name,
      flushSubnormals: report.flushSubnormals,
      threads: target.threads,
    });
  } catch (err) {
    result.checks.push({ name: 'start', ok: false, detail: (err as Error).message.split('\n')[0] });
    return result;
  }
  result.backend = {
    name: report.name,
    label: backendLabel(report),
    flushSubnormals: report.flushSubnormals,
    reason: report.reason,
  };
  result.threads = engine.threads;
  const checks = result.checks;
  const want = ref.outputs;
  try {
    await check(checks, 'logits', async () => {
      const got = await logitsOf(engine);
      const alone = logitCheck(got.alone, want.logits.alone);
      const batched = logitCheck(got.batched, want.logits.alone);
      return {
        ok: alone.ok && batched.ok,
        detail: `max |diff| ${alone.worst.toExponential(1)} × scale alone, ${batched.worst.toExponential(1)} batched (tolerance ${LOGIT_TOL})`,
      };
    });
    const got = await trajectoriesOf(engine, ref.steps);
    const w = want.trajectories.rows;
    /** how many leading tokens of row `key` equal cpu's, or what failed */
    const agree = (key: string): number | string => {
      const mine = got.rows[key];
      const theirs = w[key];
      if (typeof theirs === 'string') return `the cpu reference failed: ${theirs}`;
      return typeof mine === 'string' ? mine : agreeing(mine, theirs);
    };
    await check(checks, 'greedy', async () => {
      const n = agree('standard');
      return typeof n === 'string'
        ? { ok: false, detail: n }
        : { ok: n === ref.steps, detail: `${n} of ${ref.steps} tokens equal cpu's` };
    });
    await check(checks, 'moi', async () => {
      const parts = BETAS.map((b) => ({ b, n: agree(`moi:${b}`) }));
      const failed = parts.find((p) => typeof p.n === 'string');
      if (failed) return { ok: false, detail: `β ${failed.b}: ${failed.n}` };
      return {
        ok: parts.every((p) => p.n === ref.steps),
        detail: `${parts.map((p) => `β ${p.b}: ${p.n} of ${ref.steps}`).join(', ')} tokens equal cpu's`,
      };
    });
    await check(checks, 'batched rows', async () => {
      if (got.batchError) return { ok: false, detail: `the batch of every mode failed: ${got.batchError}` };
      const a = got.alone;
      const b = got.rows['moi:1'];
      if (typeof a === 'string') return { ok: false, detail: `the request alone failed: ${a}` };
      const n = agreeing(a, b as number[]);
      return {
        ok: n === ref.steps,
        detail:
          n === ref.steps
            ? 'a MoI row of the batch equals the same request alone'
            : `a batched MoI row parts from the same request alone at step ${n}`,
      };
    });
    for (const key of ['direct', 'soft']) {
      const n = agree(key);
      result.freeRunning[key] = typeof n === 'number' ? { agree: n, of: ref.steps } : { error: n };
    }
    const V = engine.spec.vocabSize;
    await check(checks, 'direct (teacher-forced)', async () => {
      const r = await teacherForced(engine.model, ref.direct, directSettings(), { logitTol: LOGIT_TOL });
      return { ok: r.failures.length === 0, detail: teacherDetail(r) };
    });
    await check(checks, 'soft (teacher-forced)', async () => {
      const r = await teacherForced(engine.model, ref.soft, softSettings(V, V - 1), { logitTol: LOGIT_TOL });
      return { ok: r.failures.length === 0, detail: teacherDetail(r) };
    });
    try {
      result.decode = { ...(await decodeOf(engine, ref.steps)), cpuTokPerSec: want.decode.tokPerSec };
    } catch (err) {
      checks.push({ name: 'decode', ok: false, detail: (err as Error).message.split('\n')[0] });
    }
  } finally {
    engine.dispose();
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// all of it

export interface DoctorReport {
  backends: BackendInfo[];
  model: { modelType: string; hiddenSize: number; layers: number; vocabSize: number; steps: number };
  reference: string;
  result: BackendResult;
  ok: boolean;
}

export interface DoctorOptions {
  /** the backend to check (default: MOI_BACKEND, else the best available) */
  backend?: string;
  /** trajectory length (default 16) */
  steps?: number;
  /** threads for the checked engine's weights (default Engine.load's: $MOI_THREADS, else the cores, capped) */
  threads?: number;
  /** progress lines (stderr in the CLI) */
  onProgress?: (line: string) => void;
}

export async function runDoctor(opts: DoctorOptions = {}): Promise<DoctorReport> {
  const steps = opts.steps ?? 16;
  const say = opts.onProgress ?? (() => {});
  const model = {
    modelType: String(DOCTOR_CONFIG.model_type),
    hiddenSize: Number(DOCTOR_CONFIG.hidden_size),
    layers: Number(DOCTOR_CONFIG.num_hidden_layers),
    vocabSize: Number(DOCTOR_CONFIG.vocab_size),
    steps,
  };
  const reference = 'cpu (float32, subnormals kept)';
  // the backend the user gets (before anything else starts one: initBackend keeps a started backend)
  let chosen: { backend?: string; flushSubnormals?: boolean };
  let startError: string | null = null;
  try {
    const r = await initBackend({ backend: opts.backend });
    chosen = { backend: r.name, flushSubnormals: r.flushSubnormals };
  } catch (err) {
    startError = (err as Error).message.split('\n')[0];
    chosen = { backend: opts.backend };
  }
  say('backends: trying each');
  const backends = await listBackends();
  if (startError !== null) {
    const result: BackendResult = {
      backend: null,
      checks: [{ name: 'start', ok: false, detail: startError }],
      freeRunning: {},
      decode: null,
    };
    return { backends, model, reference, result, ok: false };
  }
  const dir = writeDoctorModel();
  try {
    say('reference: the cpu backend');
    const ref = await doctorReference(dir, steps);
    say(`checking ${chosen.backend}${chosen.flushSubnormals ? ' (flushing subnormals)' : ''}`);
    const result = await checkBackend(dir, ref, { ...chosen, threads: opts.threads });
    return { backends, model, reference, result, ok: result.checks.length > 0 && result.checks.every((c) => c.ok) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The report as plain text: backends, then one verdict per check, then the overall verdict. */
export function formatDoctor(r: DoctorReport): string {
  const lines: string[] = ['backends:'];
  for (const b of r.backends) {
    const d = Object.entries(b.details)
      .map(([k, v]) => `${k} ${typeof v === 'boolean' ? (v ? 'yes' : 'no') : v}`)
      .join(', ');
    lines.push(
      `  ${b.name.padEnd(10)} ${b.starts ? 'starts' : 'no    '}  ${b.starts ? b.package : b.why}${d ? `\n  ${''.padEnd(10)}         ${d}` : ''}`,
    );
  }
  const res = r.result;
  const name = res.backend?.label ?? 'the chosen backend';
  lines.push(
    `checks on ${name} against ${r.reference}, a random ${r.model.modelType} (hidden ${r.model.hiddenSize}, ${r.model.layers} layers, vocabulary ${r.model.vocabSize}), ${r.model.steps} steps:`,
  );
  if (res.threads) lines.push(`  info  ${'threads'.padEnd(24)} ${res.threads.note}`);
  for (const c of res.checks) lines.push(`  ${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(24)} ${c.detail}`);
  const fr = Object.entries(res.freeRunning);
  if (fr.length)
    lines.push(
      `  info  ${'free-running'.padEnd(24)} ${fr.map(([k, v]) => ('error' in v ? `${k} failed: ${v.error}` : `${k} agrees with cpu for ${v.agree} of ${v.of} steps`)).join(', ')} (not a check: without the anchor on the sampled token, rounding grows ~4× per step)`,
    );
  if (res.decode)
    lines.push(
      `  info  ${'decode'.padEnd(24)} ${res.decode.tokens} tokens at ${res.decode.tokPerSec.toFixed(1)} tok/s (cpu ${res.decode.cpuTokPerSec.toFixed(1)} tok/s), prefill ${res.decode.prefillTokPerSec.toFixed(1)} tok/s`,
    );
  const failed = res.checks.filter((c) => !c.ok);
  lines.push(
    failed.length === 0
      ? `verdict: all ${res.checks.length} checks passed on ${name}`
      : `verdict: ${failed.length} of ${res.checks.length} checks failed on ${name}: ${failed.map((c) => c.name).join(', ')}`,
  );
  return `${lines.join('\n')}\n`;
}
