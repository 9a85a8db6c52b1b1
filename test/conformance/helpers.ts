/**
 * Backend conformance: the fixture checks every backend must pass, and the backends they run on.
 *
 * - `tfjsNodeKernelNames()` reads, from the installed `@tensorflow/tfjs-node` package itself, the
 *   kernel names it registers for backend `tensorflow` (its JS registers them before its native
 *   binding loads, so this works where the binding is missing). It runs in a fresh child process:
 *   a failed require leaves its submodules cached, so a second load in one process registers
 *   nothing.
 * - `registerTensorflowStandIn(names)` registers a backend named `tensorflow` made of
 *   tfjs-backend-cpu's kernels, restricted to exactly those names: a kernel tfjs-node lacks is
 *   then missing here too, as on a CUDA user's machine.
 * - `conformance(name)` is the check list: logits vs reference.json, greedy tokens (in-place and
 *   fallback caches), batched rows vs alone, MoI trajectories vs the wasm run and reference.json,
 *   and the free-running modes teacher-forced (packages/cli/src/doctor/teacher-forced.ts): direct
 *   against reference.json's own trajectory (its tokens and step logits), Soft Thinking against
 *   the wasm run's. Their free-running trajectories are only reported against the wasm run: two
 *   correct float32 backends part there after a few steps (rounding grows ~4× per step without
 *   the anchor on the sampled token), so that is no promise a backend (a GPU) can keep. All reads
 *   are async (webgpu has no synchronous read).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { sharedDir } from '@moi/core';
import { loadModel, writableView, type Decoder, type KVCache, type LoadedModel } from '@moi/models';
import { Engine } from '@moi/engine';
import type { MixOptions } from '@moi/moi';
import { generate, generateOne } from '@moi/engine';
import {
  agreeing,
  directSettings,
  recordRun,
  softSettings,
  teacherForced,
  type RefRun,
  type TeacherForcedReport,
} from '../../packages/cli/src/doctor/teacher-forced.ts';

const coreDir = fileURLToPath(new URL('../../packages/core/', import.meta.url));

// ---------------------------------------------------------------------------------------------
// the tensorflow stand-in

/** The kernel names the installed @tensorflow/tfjs-node registers for backend 'tensorflow'. */
export function tfjsNodeKernelNames(): Promise<string[]> {
  const code = `
    const { createRequire } = require('node:module');
    const nodeMain = require.resolve('@tensorflow/tfjs-node');
    // tfjs-core as tfjs-node itself resolves it: the instance its kernels register into
    const tf = createRequire(nodeMain)('@tensorflow/tfjs-core');
    let loaded = 'binding loaded';
    try { require('@tensorflow/tfjs-node'); } catch (e) { loaded = String(e && e.message || e).split('\\n')[0]; }
    const names = tf.getKernelsForBackend('tensorflow').map((k) => k.kernelName);
    process.stdout.write('NAMES ' + JSON.stringify({ names, loaded }) + '\\n');`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', code], { cwd: coreDir, timeout: 60_000 }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('NAMES '));
      if (!line) return reject(new Error(`reading tfjs-node's kernels failed: ${err?.message ?? ''}\n${stderr}`));
      resolve((JSON.parse(line.slice(6)) as { names: string[] }).names);
    });
  });
}

/**
 * Register backend 'tensorflow' = tfjs-backend-cpu's kernels whose names are in `names`, and
 * make it current. Needs the cpu backend registered (initBackend({backend:'cpu'}) first).
 * Returns an undo that removes it again.
 */
export async function registerTensorflowStandIn(names: string[]): Promise<() => void> {
  const cpu = tf.findBackend('cpu');
  assert.ok(cpu, 'the cpu backend must be registered first');
  const Ctor = cpu.constructor as new () => tf.KernelBackend;
  const allowed = new Set(names);
  if (tf.findBackend('tensorflow')) tf.removeBackend('tensorflow');
  for (const k of tf.getKernelsForBackend('tensorflow')) tf.unregisterKernel(k.kernelName, 'tensorflow');
  tf.registerBackend('tensorflow', () => new Ctor());
  for (const k of tf.getKernelsForBackend('cpu')) {
    if (allowed.has(k.kernelName)) tf.registerKernel({ ...k, backendName: 'tensorflow' });
  }
  assert.ok(await tf.setBackend('tensorflow'), 'the stand-in backend starts');
  return () => {
    for (const k of tf.getKernelsForBackend('tensorflow')) tf.unregisterKernel(k.kernelName, 'tensorflow');
    tf.removeBackend('tensorflow');
  };
}

// ---------------------------------------------------------------------------------------------
// fixtures

export interface MoiRef {
  beta: number;
  mode: 'moi' | 'direct';
  input_ids: number[];
  tokens: number[];
  step_logits: number[][];
  topk: number;
}
export interface Reference {
  cases: { name: string; input_ids: number[]; logits: number[][]; greedy: { n: number; tokens: number[] } }[];
  moi: MoiRef[];
}

export function fixtureNames(): { root: string | null; names: string[] } {
  const s = sharedDir();
  const root = s ? path.join(s, 'fixtures') : null;
  const names = root
    ? readdirSync(root)
        .filter((d) => existsSync(path.join(root, d, 'reference.json')))
        .sort()
    : [];
  return { root, names };
}

export function readReference(dir: string): Reference {
  return JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
}

/** Rows [T][V] of a [B, T, V] tensor's row b, read asynchronously; disposes the tensor. */
async function rowsAsync(t: tf.Tensor): Promise<Float32Array[][]> {
  const [B, T, V] = t.shape;
  const flat = (await t.data()) as Float32Array;
  t.dispose();
  return Array.from({ length: B }, (_, b) =>
    Array.from({ length: T }, (_, i) => flat.slice((b * T + i) * V, (b * T + i + 1) * V)),
  );
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** max |a − b| over rows, and the reference scale max(1, max|b|). */
function relDiff(a: ArrayLike<number>[], b: ArrayLike<number>[]): { diff: number; scale: number } {
  let diff = 0;
  let scale = 1;
  assert.equal(a.length, b.length, 'positions');
  for (let t = 0; t < b.length; t++) {
    assert.equal(a[t].length, b[t].length, 'vocab');
    for (let v = 0; v < b[t].length; v++) {
      const d = Math.abs(a[t][v] - b[t][v]);
      diff = Number.isNaN(d) ? Infinity : Math.max(diff, d);
      scale = Math.max(scale, Math.abs(b[t][v]));
    }
  }
  return { diff, scale };
}

/** Greedy continuation with a KV cache (prefill then one-token steps), async reads. */
async function greedyAsync(model: Decoder, prompt: number[], n: number, noInPlace: boolean): Promise<number[]> {
  const cache: KVCache[] = model.makeCache(1, prompt.length + n, { noInPlace });
  try {
    const tokens: number[] = [];
    let row = (await rowsAsync(model.forward({ ids: [prompt] }, { cache, lastOnly: true })))[0][0];
    for (let i = 0; i < n; i++) {
      tokens.push(argmax(row));
      if (i + 1 < n) row = (await rowsAsync(model.forward({ ids: [[tokens[i]]] }, { cache, lastOnly: true })))[0][0];
    }
    return tokens;
  } finally {
    for (const c of cache) c.dispose();
  }
}

/** What one backend produced on one fixture; the wasm run's is the baseline for the others. */
export interface FixtureRun {
  trajectories: Record<string, number[]>;
  /** the free-running Soft Thinking run (logits and tokens), which the others are teacher-forced along */
  soft: RefRun;
}

export interface ConformanceResult {
  /** worst max|diff| / scale over all reference logits */
  worstRel: number;
  runs: Map<string, FixtureRun>;
  /** the teacher-forced reports, by fixture */
  teacherForced: Map<string, { direct: TeacherForcedReport; soft: TeacherForcedReport | null }>;
}

/** Soft Thinking as the checks run it: filters off (candidates: the 10 largest), T 0.6, think-end the last id. */
export function softCheckSettings(vocabSize: number) {
  return softSettings(vocabSize, vocabSize - 1);
}

function assertTeacherForced(r: TeacherForcedReport, label: string): void {
  assert.deepEqual(r.failures, [], `${label}: teacher-forced ${r.mode}`);
  assert.ok(
    r.setsCompared >= r.steps / 2,
    `${label}: teacher-forced ${r.mode} compared candidates at only ${r.setsCompared} of ${r.steps} steps (near-ties elsewhere)`,
  );
}

/**
 * Run every check on every fixture on the current backend. `baseline` (the wasm run) is what the
 * MoI trajectories must equal and what Soft Thinking is teacher-forced along; without it (the
 * wasm run itself) they are checked against reference.json, and the soft run is recorded.
 */
export async function conformance(
  fixtures: string[],
  root: string,
  baseline?: Map<string, FixtureRun>,
): Promise<ConformanceResult> {
  const backend = tf.getBackend();
  const runs = new Map<string, FixtureRun>();
  const tfReports: ConformanceResult['teacherForced'] = new Map();
  const parted: string[] = [];
  let worstRel = 0;
  let before = -1;
  // the in-place KV-cache path exists where the backend lends a writable view of a tensor (wasm,
  // cpu); elsewhere both greedy runs below would take the fallback path, so it runs once
  const probe = tf.zeros([1]);
  const inPlace = writableView(probe) !== null;
  probe.dispose();
  for (const [i, name] of fixtures.entries()) {
    // the first fixture warms the backend's kept constants (scalars, rotation matrices)
    if (i === 1) before = tf.memory().numTensors;
    const dir = path.join(root, name);
    const ref = readReference(dir);
    let softRun: RefRun | null;
    const m: LoadedModel = await loadModel(dir);
    const model = m.model;
    try {
      // logits: every case, one full forward (no cache)
      for (const c of ref.cases) {
        const [rows] = await rowsAsync(model.forward({ ids: [c.input_ids] }));
        const { diff, scale } = relDiff(rows, c.logits);
        worstRel = Math.max(worstRel, diff / scale);
        assert.ok(diff <= 1e-4 * scale, `${backend} ${name}/${c.name}: logits max |diff| ${diff} > 1e-4 × ${scale}`);
      }
      // greedy: the in-place cache path (where the backend has one) and the fallback path
      for (const c of ref.cases) {
        for (const noInPlace of inPlace ? [false, true] : [true]) {
          const got = await greedyAsync(model, c.input_ids, c.greedy.n, noInPlace);
          assert.deepEqual(
            got,
            c.greedy.tokens,
            `${backend} ${name}/${c.name}: greedy (${noInPlace ? 'fallback' : 'in-place'} cache)`,
          );
        }
      }
      // batched rows: the cases' prompts in one forward where they share a length, vs alone
      const byLen = new Map<number, typeof ref.cases>();
      for (const c of ref.cases) byLen.set(c.input_ids.length, [...(byLen.get(c.input_ids.length) ?? []), c]);
      for (const group of byLen.values()) {
        if (group.length < 2) continue;
        const rows = await rowsAsync(model.forward({ ids: group.map((c) => c.input_ids) }));
        group.forEach((c, b) => {
          const { diff, scale } = relDiff(rows[b], c.logits);
          assert.ok(diff <= 1e-4 * scale, `${backend} ${name}/${c.name}: batched logits max |diff| ${diff}`);
        });
      }
      // direct, teacher-forced along reference.json's own trajectory: the same inputs every step
      const d = ref.moi.find((r) => r.mode === 'direct');
      assert.ok(d?.step_logits, `${name}: reference.json has a direct trajectory with step_logits`);
      const direct = await teacherForced(
        model,
        { prompt: d.input_ids, steps: d.step_logits.map((l, s) => ({ logits: l, token: d.tokens[s] })) },
        directSettings(d.topk),
      );
      assertTeacherForced(direct, `${backend} ${name}`);
      // Soft Thinking: the wasm run's free run is the reference the others are teacher-forced along
      const soft = softCheckSettings(m.spec.vocabSize);
      const n = d.tokens.length;
      softRun = baseline ? null : await recordRun(model, d.input_ids, n, soft);
      const base = baseline?.get(name);
      const softReport = base ? await teacherForced(model, base.soft, soft) : null;
      if (softReport) assertTeacherForced(softReport, `${backend} ${name}`);
      tfReports.set(name, { direct, soft: softReport });
    } finally {
      m.dispose();
    }

    // trajectories through the users' decode path, standard greedy + moi + direct, all rows batched
    const engine = await Engine.load(dir, { backend });
    try {
      const last = ref.cases[ref.cases.length - 1];
      const prompt = ref.moi[0]?.input_ids ?? last.input_ids;
      const n = ref.moi[0]?.tokens.length ?? last.greedy.n;
      const V = engine.spec.vocabSize;
      const modes: { key: string; mix: MixOptions }[] = [
        { key: 'standard', mix: { mode: 'standard' } },
        ...ref.moi.map((r) => ({ key: `${r.mode}:${r.beta}`, mix: { mode: r.mode, beta: r.beta } })),
        // a Soft Thinking row in the same batch (free-running: reported, not gated)
        {
          key: 'soft',
          mix: {
            mode: 'soft',
            topK: 10,
            soft: {
              temperature: 0.6,
              topK: 0,
              topP: 1,
              minP: 0,
              thinkEndId: V - 1,
              coldStopEntropy: 0,
              afterThinking: { temperature: 0 },
            },
          },
        },
      ];
      const requests = modes.map((x) => ({
        promptIds: prompt,
        maxTokens: n,
        sampling: { temperature: 0 },
        ignoreEos: true,
        mix: x.mix,
      }));
      const tokens: number[][] = requests.map(() => []);
      for await (const e of generate(engine, requests)) if (e.type === 'token') tokens[e.row].push(e.token);
      const trajectories: Record<string, number[]> = {};
      modes.forEach((x, i) => {
        trajectories[x.key] = tokens[i];
      });
      // batched equals alone (one row: the MoI one, the most sensitive)
      const alone = await generateOne(engine, requests[1] ?? requests[0]);
      assert.deepEqual(
        alone.done.tokens,
        tokens[requests[1] ? 1 : 0],
        `${backend} ${name}: a batched row equals the same request alone`,
      );
      const base = baseline?.get(name);
      for (const x of modes) {
        if (base && (x.mix.mode === 'direct' || x.mix.mode === 'soft')) {
          // free-running, no anchor: reported only (teacher-forced above is the gate)
          const agreed = agreeing(trajectories[x.key], base.trajectories[x.key]);
          if (agreed < trajectories[x.key].length) parted.push(`${name} ${x.key} at step ${agreed}`);
        } else if (base) {
          assert.deepEqual(
            trajectories[x.key],
            base.trajectories[x.key],
            `${backend} ${name}: ${x.key} trajectory equals the wasm run`,
          );
        } else if (x.key === 'standard') {
          const g = ref.cases.find((c) => c.input_ids.join() === prompt.join());
          if (g)
            assert.deepEqual(
              trajectories[x.key].slice(0, g.greedy.n),
              g.greedy.tokens.slice(0, n),
              `${backend} ${name}: standard`,
            );
        }
      }
      const moiRef = ref.moi.find((r) => r.mode === 'moi');
      if (moiRef)
        assert.deepEqual(
          trajectories[`moi:${moiRef.beta}`],
          moiRef.tokens,
          `${backend} ${name}: moi trajectory equals reference.json`,
        );
      runs.set(name, { trajectories, soft: softRun ?? baseline!.get(name)!.soft });
    } finally {
      engine.dispose();
    }
  }
  if (before >= 0)
    assert.ok(
      tf.memory().numTensors <= before + 8,
      `${backend}: tensors ${before} → ${tf.memory().numTensors} over the fixtures (a leak)`,
    );
  if (baseline) {
    console.log(
      `      [free-running] ${backend} vs the wasm run (reported, not gated): ` +
        `${parted.length ? `parts on ${parted.join(', ')}` : 'direct and soft agree on every fixture'}`,
    );
  }
  return { worstRel, runs, teacherForced: tfReports };
}

const wasmRuns = new Map<string, Promise<ConformanceResult>>();

/** The wasm run of these fixtures (the baseline), computed once per process and list of fixtures. */
export function wasmBaseline(fixtures: string[], root: string): Promise<ConformanceResult> {
  const key = `${root}\n${fixtures.join('\n')}`;
  let run = wasmRuns.get(key);
  if (!run) {
    run = (async () => {
      const { initBackend } = await import('@moi/core');
      await initBackend({ backend: 'wasm' });
      return conformance(fixtures, root);
    })();
    wasmRuns.set(key, run);
  }
  return run;
}
