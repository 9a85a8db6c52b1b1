/**
 * The fixture conformance run both ways: with our own wasm kernels (the default) and with
 * MOI_KERNELS=0 (the composite fallbacks), on every fixture in shared/fixtures:
 * - greedy decode with the KV cache: the reference tokens both ways, and every step's logits
 *   agreeing to ≤ 1e-5 × the logit scale;
 * - batched rows at different offsets (three prompts of different lengths decoded side by side,
 *   one row skipped on some steps): the same agreement, row by row;
 * - MoI trajectories (reference.json `moi[]`, β = 1, through generateOne): the reference tokens
 *   and logits (1e-4 × scale) both ways, and, fed the same mixed inputs, step logits agreeing
 *   to ≤ 1e-5 × scale.
 * Each way leaves no tensors behind.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  activeKernels,
  initBackend,
  kernelDispatches,
  resetKernelDispatches,
  setKernelsEnabled,
  sharedDir,
  SHARED_MISSING,
} from '@moi/core';
import type { Decoder, ForwardInput, ForwardOptions } from '@moi/models';
import { Engine } from '@moi/engine';
import { generateOne, type GenerateRequest } from '@moi/engine';

interface Reference {
  cases: { name: string; input_ids: number[]; greedy: { n: number; tokens: number[] } }[];
  moi: {
    beta: number;
    mode: 'moi' | 'direct';
    topk: number;
    input_ids: number[];
    tokens: number[];
    step_logits: number[][];
  }[];
}

const shared = sharedDir();
const root = shared ? path.join(shared, 'fixtures') : null;
const FIXTURES = root
  ? readdirSync(root)
      .filter((d) => existsSync(path.join(root, d, 'reference.json')))
      .sort()
  : [];

function scaleOf(row: ArrayLike<number>): number {
  let m = 1;
  for (let i = 0; i < row.length; i++) m = Math.max(m, Math.abs(row[i]));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'row lengths');
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Math.abs(a[i] - b[i]);
    if (!(x <= d)) d = Number.isNaN(x) ? Infinity : x;
  }
  return d;
}

/** Assert two lists of logits rows agree to ≤ 1e-5 × the scale of each row. */
function assertAgree(a: Float32Array[], b: Float32Array[], label: string): void {
  assert.equal(a.length, b.length, `${label}: rows`);
  for (let s = 0; s < a.length; s++) {
    const d = maxAbsDiff(a[s], b[s]);
    const tol = 1e-5 * scaleOf(b[s]);
    assert.ok(d <= tol, `${label}: row ${s} differs by ${d} > ${tol} (kernels on vs off)`);
  }
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** The last-position logits of each row (disposes t). */
function lastRows(t: tf.Tensor): Float32Array[] {
  const [B, T, V] = t.shape;
  const flat = t.dataSync() as Float32Array;
  t.dispose();
  return Array.from({ length: B }, (_, b) => flat.slice((b * T + T - 1) * V, (b * T + T) * V));
}

/** Greedy decode of one prompt with the cache; logits of every step. */
function greedySteps(model: Decoder, prompt: number[], n: number): { tokens: number[]; logits: Float32Array[] } {
  const cache = model.makeCache(1, prompt.length + n);
  try {
    const logits: Float32Array[] = [];
    const tokens: number[] = [];
    let row = lastRows(model.forward({ ids: [prompt] }, { cache, lastOnly: true }))[0];
    for (let i = 0; i < n; i++) {
      logits.push(row);
      tokens.push(argmax(row));
      if (i + 1 < n) row = lastRows(model.forward({ ids: [[tokens[i]]] }, { cache, lastOnly: true }))[0];
    }
    return { tokens, logits };
  } finally {
    for (const c of cache) c.dispose();
  }
}

/**
 * Three rows prefilled to different lengths, then `steps` one-token steps; on odd steps row 1
 * sits out (rows [0, 2]). Returns the logits of every (step, row) in order.
 */
function batchedSteps(model: Decoder, prompts: number[][], steps: number): Float32Array[] {
  const cache = model.makeCache(prompts.length, Math.max(...prompts.map((p) => p.length)) + steps);
  try {
    const out: Float32Array[] = [];
    const next: number[] = [];
    prompts.forEach((p, r) => {
      const row = lastRows(model.forward({ ids: [p] }, { cache, rows: [r], lastOnly: true }))[0];
      out.push(row);
      next[r] = argmax(row);
    });
    for (let s = 0; s < steps; s++) {
      const rows = s % 2 ? [0, 2] : [0, 1, 2];
      const got = lastRows(model.forward({ ids: rows.map((r) => [next[r]]) }, { cache, rows, lastOnly: true }));
      rows.forEach((r, i) => {
        out.push(got[i]);
        next[r] = argmax(got[i]);
      });
    }
    return out;
  } finally {
    for (const c of cache) c.dispose();
  }
}

/** One forward call's input, as host data. */
type StepInput = { ids?: number[][]; embeds?: { data: Float32Array; shape: [number, number, number] } };

/**
 * generateOne with the step logits recorded (single row). With `record`, each forward call's
 * input is appended to it; with `replay`, each call's input is replaced by the recorded one of
 * the same step (teacher forcing: both runs then see identical inputs at every step).
 */
async function traced(
  engine: Engine,
  request: GenerateRequest,
  io: { record?: StepInput[]; replay?: StepInput[] } = {},
): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const model = engine.model;
  const original = model.forward;
  const logits: Float32Array[] = [];
  model.forward = (input: ForwardInput, opts?: ForwardOptions): tf.Tensor3D => {
    const step = logits.length;
    if (io.record) {
      io.record.push(
        input.embeds
          ? { embeds: { data: Float32Array.from(input.embeds.dataSync() as Float32Array), shape: input.embeds.shape } }
          : { ids: input.ids },
      );
    }
    const given = io.replay?.[step];
    const embeds = given?.embeds ? tf.tensor3d(given.embeds.data, given.embeds.shape) : null;
    let out: tf.Tensor3D;
    try {
      out = original.call(model, given ? (embeds ? { embeds } : { ids: given.ids }) : input, opts);
    } finally {
      embeds?.dispose();
    }
    const [, T, V] = out.shape;
    const last = tf.slice(out, [0, T - 1, 0], [1, 1, V]);
    logits.push(Float32Array.from(last.dataSync() as Float32Array));
    last.dispose();
    return out;
  };
  try {
    const { done } = await generateOne(engine, request);
    return { tokens: done.tokens, logits };
  } finally {
    delete (model as { forward?: unknown }).forward;
  }
}

/** Run fn with the kernels on, then off; check each way leaves no tensors and dispatches as it should. */
async function bothWays<T>(fn: () => T | Promise<T>): Promise<{ on: T; off: T }> {
  const run = async (on: boolean): Promise<T> => {
    setKernelsEnabled(on);
    resetKernelDispatches();
    const before = tf.memory().numTensors;
    const r = await fn();
    assert.equal(tf.memory().numTensors, before, `no tensors left with the kernels ${on ? 'on' : 'off'}`);
    const n = kernelDispatches().MoiDecodeAttention ?? 0;
    assert.ok(
      on ? n > 0 : n === 0,
      `decode-attention kernel dispatched ${n} times with the kernels ${on ? 'on' : 'off'}`,
    );
    return r;
  };
  try {
    return { on: await run(true), off: await run(false) };
  } finally {
    setKernelsEnabled(true);
  }
}

describe('kernels: fixture conformance with the kernels on and with MOI_KERNELS=0 (wasm)', function () {
  before(async function () {
    if (!root) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
    assert.ok(activeKernels(), 'the kernels module is active on wasm');
  });

  for (const name of FIXTURES) {
    describe(name, function () {
      let engine: Engine;
      let ref: Reference;
      before(async () => {
        ref = JSON.parse(readFileSync(path.join(root!, name, 'reference.json'), 'utf8')) as Reference;
        engine = await Engine.load(path.join(root!, name), { backend: 'wasm' });
        // first use creates the kept constants (scalars, rope matrices): not leaks
        await bothWays(() => greedySteps(engine.model, ref.cases[0].input_ids.slice(0, 2), 2)).catch(() => undefined);
        // (the composite prefill path's constants too: the warm-up above stops at the kernels-on run's leak check)
        setKernelsEnabled(false);
        greedySteps(engine.model, ref.cases[0].input_ids.slice(0, 2), 2);
        setKernelsEnabled(true);
        await traced(engine, {
          promptIds: [1, 2],
          maxTokens: 2,
          sampling: { temperature: 0 },
          ignoreEos: true,
          mix: { mode: 'moi', beta: 1 },
        });
      });
      after(() => engine?.dispose());

      it('greedy decode: reference tokens both ways, step logits agree to 1e-5 × scale', async function () {
        for (const c of ref.cases) {
          const { on, off } = await bothWays(() => greedySteps(engine.model, c.input_ids, c.greedy.n));
          assert.deepEqual(on.tokens, c.greedy.tokens, `${name}/${c.name}: tokens with the kernels`);
          assert.deepEqual(off.tokens, c.greedy.tokens, `${name}/${c.name}: tokens with MOI_KERNELS=0`);
          assertAgree(on.logits, off.logits, `${name}/${c.name}`);
        }
      });

      it('batched rows at different offsets (one row sitting out every other step) agree', async function () {
        const p = ref.cases[0].input_ids;
        const prompts = [p, p.slice(0, 3), [...p, ...p].slice(0, p.length + 5)];
        const { on, off } = await bothWays(() => batchedSteps(engine.model, prompts, 12));
        assertAgree(on, off, `${name} batched`);
      });

      it('MoI trajectories (β = 1): reference tokens both ways, step logits agree on the same inputs', async function () {
        for (const t of ref.moi.filter((m) => m.mode === 'moi')) {
          const req: GenerateRequest = {
            promptIds: t.input_ids,
            maxTokens: t.tokens.length,
            sampling: { temperature: 0 },
            ignoreEos: true,
            mix: { mode: t.mode, beta: t.beta },
          };
          // free-running both ways: the reference tokens, and within moi.test's 1e-4 × scale of its logits
          const { on, off } = await bothWays(() => traced(engine, req));
          assert.deepEqual(on.tokens, t.tokens, `${name} moi: tokens with the kernels`);
          assert.deepEqual(off.tokens, t.tokens, `${name} moi: tokens with MOI_KERNELS=0`);
          t.step_logits.forEach((row, s) => {
            for (const [way, got] of [
              ['on', on],
              ['off', off],
            ] as const) {
              const d = maxAbsDiff(got.logits[s], row);
              assert.ok(
                d <= 1e-4 * scaleOf(row),
                `${name} moi: step ${s} is ${d} from the reference with the kernels ${way}`,
              );
            }
          });
          // Fed the same mixed inputs at every step (teacher forcing: the mixture fed back would
          // otherwise amplify float32 rounding, on llama ~2× a step), the two ways agree to 1e-5.
          const inputs: StepInput[] = [];
          setKernelsEnabled(false);
          const base = await traced(engine, req, { record: inputs });
          setKernelsEnabled(true);
          const forced = await traced(engine, req, { replay: inputs });
          assert.ok(
            inputs.slice(1).every((x) => x.embeds),
            'MoI steps feed embeddings',
          );
          assertAgree(forced.logits, base.logits, `${name} moi (same inputs)`);
        }
      });
    });
  }
});
