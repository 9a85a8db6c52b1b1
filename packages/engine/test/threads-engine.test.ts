/**
 * The wasm thread pool in the engine (issue 26, phase B), end to end through Engine.load and
 * generateOne, against independent expectations:
 * - every thread count gives the same bits: with the matrices in the pool ('always'), the logits
 *   of a full forward, of a batched forward, and of every step of greedy, MoI (β = 1) and direct
 *   trajectories are bit for bit equal at 1, 2 and 3 threads, for f32, bf16 and q8 weights;
 * - f32 in the pool still equals the fixtures' references (transformers, float64-checked) within
 *   the float32 tolerance of shared/README (1e-4 × scale): logits, greedy tokens, MoI tokens;
 * - batched rows equal the same rows alone, bit for bit (the kernels never mix rows);
 * - no tensor leak across requests; the pool's workers are gone after dispose, and a process that
 *   loads an engine on several threads and disposes it exits by itself;
 * - `threads` / $MOI_THREADS outside 1..256 is a UsageError naming its source; the auto plan keeps
 *   every dtype on today's kernels at one thread and in the pool from two threads.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, requireShared, UsageError, type ThreadedLinear } from '@moi/core';
import { Engine, generateOne, resolveThreads, type GenerateRequest } from '../src/index.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const FIXTURES = ['llama', 'llama_tied', 'qwen2', 'qwen3', 'gemma2', 'gemma3_text', 'stories260K'];
const DTYPES = ['f32', 'bf16', 'q8'] as const;
const THREADS = [1, 2, 3];

interface MoiRef {
  beta: number;
  mode: 'moi' | 'direct';
  input_ids: number[];
  tokens: number[];
}
interface Reference {
  cases: { name: string; input_ids: number[]; logits: number[][]; greedy: { n: number; tokens: number[] } }[];
  moi: MoiRef[];
}

/** What one engine computed: every float it produced, and the tokens it chose. */
interface Run {
  logits: Float32Array[];
  batched: Float32Array;
  alone: Float32Array[];
  tokens: number[][];
  steps: Float32Array[][];
}

/** The logits of the last position of every forward call while `request` decodes, and its tokens. */
async function traced(engine: Engine, request: GenerateRequest): Promise<{ tokens: number[]; steps: Float32Array[] }> {
  const model = engine.model;
  const original = model.forward;
  const steps: Float32Array[] = [];
  model.forward = (input, opts) => {
    const out = original.call(model, input, opts);
    const [, T, V] = out.shape;
    const last = tf.slice(out, [0, T - 1, 0], [1, 1, V]);
    steps.push(Float32Array.from(last.dataSync() as Float32Array));
    last.dispose();
    return out;
  };
  try {
    const { done } = await generateOne(engine, request);
    return { tokens: done.tokens, steps };
  } finally {
    delete (model as { forward?: unknown }).forward;
  }
}

function forwardRows(engine: Engine, ids: number[][]): Float32Array {
  const out = engine.model.forward({ ids });
  const v = Float32Array.from(out.dataSync() as Float32Array);
  out.dispose();
  return v;
}

async function runAll(engine: Engine, ref: Reference): Promise<Run> {
  const run: Run = { logits: [], batched: new Float32Array(0), alone: [], tokens: [], steps: [] };
  for (const c of ref.cases) run.logits.push(forwardRows(engine, [c.input_ids]));
  // two prompts of one length, batched and alone
  const a = ref.cases[0].input_ids;
  const b = [...a].reverse();
  run.batched = forwardRows(engine, [a, b]);
  run.alone = [forwardRows(engine, [a]), forwardRows(engine, [b])];
  const c = ref.cases[ref.cases.length - 1];
  const requests: GenerateRequest[] = [
    {
      promptIds: c.input_ids,
      maxTokens: Math.min(12, c.greedy.n),
      sampling: { temperature: 0 },
      ignoreEos: true,
      mix: { mode: 'standard' },
    },
    ...ref.moi.slice(0, 2).map((t): GenerateRequest => ({
      promptIds: t.input_ids,
      maxTokens: Math.min(12, t.tokens.length),
      sampling: { temperature: 0 },
      ignoreEos: true,
      mix: { mode: t.mode, beta: t.beta },
    })),
  ];
  for (const r of requests) {
    const t = await traced(engine, r);
    run.tokens.push(t.tokens);
    run.steps.push(t.steps);
  }
  return run;
}

/** Equal as bits (NaNs of the same payload, signed zeros told apart). */
function assertBits(a: Float32Array, b: Float32Array, label: string): void {
  assert.equal(a.length, b.length, `${label}: lengths`);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) assert.fail(`${label}: element ${i} differs: ${a[i]} vs ${b[i]}`);
  }
}

function assertSameRun(a: Run, b: Run, label: string): void {
  a.logits.forEach((l, i) => assertBits(l, b.logits[i], `${label} logits of case ${i}`));
  assertBits(a.batched, b.batched, `${label} batched logits`);
  assert.deepEqual(a.tokens, b.tokens, `${label} tokens`);
  a.steps.forEach((s, i) => {
    assert.equal(s.length, b.steps[i].length, `${label} trajectory ${i} steps`);
    s.forEach((row, k) => assertBits(row, b.steps[i][k], `${label} trajectory ${i} step ${k}`));
  });
}

const scaleOf = (row: ArrayLike<number>) => {
  let m = 1;
  for (let i = 0; i < row.length; i++) m = Math.max(m, Math.abs(row[i]));
  return m;
};

describe('threads in the engine (issue 26 phase B)', function () {
  this.timeout(600_000);
  let fixtures: string;
  before(async function () {
    fixtures = path.join(requireShared(this), 'fixtures');
    await initBackend({ backend: 'wasm' });
  });

  for (const name of FIXTURES) {
    describe(name, function () {
      for (const dtype of DTYPES) {
        it(`${dtype}: 1, 2 and 3 threads give the same bits (logits, batched rows, greedy, MoI, direct)${dtype === 'f32' ? ', and the reference within 1e-4 × scale' : ''}`, async function () {
          const dir = path.join(fixtures, name);
          const ref = JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
          const runs: Run[] = [];
          for (const threads of THREADS) {
            const engine = await Engine.load(dir, { backend: 'wasm', dtype, threads, threadedWeights: 'always' });
            try {
              assert.equal(engine.threads.pooled, true);
              assert.equal(engine.threads.threads, threads);
              assert.equal((engine.model.weights.layers[0].qkv as ThreadedLinear).label, 'threaded');
              runs.push(await runAll(engine, ref));
            } finally {
              engine.dispose();
            }
          }
          const [one, ...more] = runs;
          more.forEach((r, i) => assertSameRun(one, r, `${name} ${dtype} ${THREADS[i + 1]} threads vs 1`));
          // batched rows are the rows alone
          const half = one.batched.length / 2;
          assertBits(one.batched.subarray(0, half), one.alone[0], `${name} ${dtype} batched row 0 vs alone`);
          assertBits(one.batched.subarray(half), one.alone[1], `${name} ${dtype} batched row 1 vs alone`);
          if (dtype !== 'f32') return;
          ref.cases.forEach((c, i) => {
            const V = c.logits[0].length;
            c.logits.forEach((row, t) => {
              const got = one.logits[i].subarray(t * V, (t + 1) * V);
              let d = 0;
              for (let v = 0; v < V; v++) d = Math.max(d, Math.abs(got[v] - row[v]));
              assert.ok(
                d <= 1e-4 * scaleOf(row),
                `${name} case ${c.name} position ${t}: logits differ from the reference by ${d}`,
              );
            });
          });
          const c = ref.cases[ref.cases.length - 1];
          assert.deepEqual(
            one.tokens[0],
            c.greedy.tokens.slice(0, one.tokens[0].length),
            `${name}: greedy tokens vs the reference`,
          );
          const moi = ref.moi.findIndex((t) => t.mode === 'moi');
          if (moi >= 0 && moi < 2)
            assert.deepEqual(
              one.tokens[1 + moi],
              ref.moi[moi].tokens.slice(0, one.tokens[1 + moi].length),
              `${name}: MoI tokens vs the reference`,
            );
        });
      }
    });
  }

  it("no tensor leak across requests, and the pool's workers are gone after dispose", async function () {
    const dir = path.join(fixtures, 'stories260K');
    const engine = await Engine.load(dir, { backend: 'wasm', threads: 2, dtype: 'q8' });
    const req: GenerateRequest = {
      promptIds: [1, 403, 407, 261, 378],
      maxTokens: 8,
      sampling: { temperature: 0 },
      ignoreEos: true,
      mix: { mode: 'moi', beta: 1 },
    };
    const layer = engine.model.weights.layers[0].qkv as ThreadedLinear;
    try {
      await generateOne(engine, req);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) await generateOne(engine, req);
      assert.equal(tf.memory().numTensors, before, 'tensors after three more requests');
      assert.equal(layer.pool.liveWorkers, 1);
    } finally {
      engine.dispose();
    }
    assert.equal(layer.pool.isDisposed, true);
    for (let i = 0; i < 100 && layer.pool.liveWorkers > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(layer.pool.liveWorkers, 0, 'workers left after dispose');
  });

  it('a process that loads an engine on 3 threads and disposes it exits by itself', function () {
    const script = `
      import { Engine, generateOne } from './packages/engine/src/index.ts';
      const e = await Engine.load(${JSON.stringify(path.join(fixtures, 'stories260K'))}, { backend: 'wasm', threads: 3 });
      const { done } = await generateOne(e, { promptIds: [1, 403, 407, 261, 378], maxTokens: 4, sampling: { temperature: 0 }, ignoreEos: true });
      console.log(JSON.stringify({ threads: e.threads.threads, pooled: e.threads.pooled, n: done.tokens.length }));
      e.dispose();`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: REPO,
      encoding: 'utf8',
      timeout: 90_000,
    });
    assert.equal(r.error, undefined, `the process did not exit: ${r.error?.message}`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!), { threads: 3, pooled: true, n: 4 });
  });

  it("the auto plan: every dtype in the pool at 1 and 2 threads on wasm; 'never' keeps tfjs's kernels", async function () {
    const dir = path.join(fixtures, 'llama');
    for (const [dtype, threads, choice, pooled] of [
      ['f32', 1, 'auto', true],
      ['bf16', 1, 'auto', true],
      ['q8', 1, 'auto', true],
      ['f32', 2, 'auto', true],
      ['bf16', 2, 'auto', true],
      ['q8', 2, 'auto', true],
      ['f32', 2, 'never', false],
      ['q8', 1, 'never', false],
    ] as const) {
      const engine = await Engine.load(dir, { backend: 'wasm', dtype, threads, threadedWeights: choice });
      try {
        assert.equal(engine.threads.pooled, pooled, `${dtype} at ${threads} thread(s), ${choice}`);
        assert.equal(engine.threads.threads, pooled ? threads : 1);
        assert.match(engine.threads.note, pooled ? /^threads \d+ \(pool, simd (relaxed|simd128)/ : /^threads 1 \(tfjs/);
      } finally {
        engine.dispose();
      }
    }
    // off wasm there is no pool, whatever the count
    const cpu = await Engine.load(dir, { backend: 'cpu', threads: 2 });
    try {
      assert.equal(cpu.threads.pooled, false);
      assert.match(cpu.threads.note, /the pool runs on wasm only/);
    } finally {
      cpu.dispose();
      await initBackend({ backend: 'wasm' });
    }
  });

  it('a bad thread count is a UsageError naming the flag or MOI_THREADS', async function () {
    for (const bad of [0, -1, 1.5, 257, Number.NaN]) {
      assert.throws(
        () => resolveThreads(bad, '--threads', {}),
        (e: unknown) =>
          e instanceof UsageError &&
          e.code === 'E_THREADS' &&
          /--threads must be an integer from 1 to 256/.test(e.message),
      );
    }
    assert.throws(
      () => resolveThreads(undefined, '--threads', { MOI_THREADS: 'two' }),
      (e: unknown) =>
        e instanceof UsageError && /MOI_THREADS must be an integer/.test(e.message) && /"two"/.test(e.message),
    );
    assert.equal(resolveThreads(undefined, '--threads', { MOI_THREADS: ' 3 ' }), 3);
    assert.equal(resolveThreads(2, '--threads', { MOI_THREADS: '3' }), 2);
    await assert.rejects(
      Engine.load(path.join(fixtures, 'llama'), { backend: 'wasm', threads: 0 }),
      (e: unknown) => e instanceof UsageError && e.code === 'E_THREADS',
    );
  });
});
