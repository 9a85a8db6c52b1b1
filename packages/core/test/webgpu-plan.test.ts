/**
 * GpuDecodePlan (src/kernels/webgpu/plan.ts) on the local adapter (lavapipe here):
 * - every fixture: the plan's logits (a chunked prefill, then teacher-forced decode steps) within
 *   1e-4 of the logit scale of reference.json (Hugging Face's float32 outputs), greedy tokens and
 *   the MoI (β = 1, argmax) trajectory equal to the reference, and the direct trajectory
 *   teacher-forced (its tokens forced, each step's logits against the reference's);
 * - rows at different positions decoding in one batch equal the composite engine (@moi/models'
 *   Decoder on the wasm backend) run on each row alone;
 * - f16 storage equals f32 storage of the f16-rounded weights; bf16 converts; a matrix past f16's
 *   range stays f32 and the plan says so;
 * - seeded sampling through the plan draws what @moi/core's composite sampler draws from the plan's
 *   own logits;
 * - the step counters on the SmolLM2-135M shape (issue 23's goals) and on a batch;
 * - bad input: typed errors naming what is wrong.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  bf16ToF32,
  Checkpoint,
  createRng,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  GpuDecodePlan,
  GpuRuntime,
  initBackend,
  ModelError,
  RECORD_WORDS,
  resolveSamplingParams,
  sample,
  sharedDir,
  UsageError,
  type GpuModelSpec,
  type HostTensor,
  type WeightsProvider,
} from '../src/index.ts';
import { loadModel, readConfig, specFromConfig, type LoadedModel } from '@moi/models';
import { rng, runtimeOrSkip } from './webgpu-helpers.ts';
import { directMixF64 } from './direct-mix-f64.ts';

interface Reference {
  cases: { name: string; input_ids: number[]; logits: number[][]; greedy: { n: number; tokens: number[] } }[];
  moi: { beta: number; mode: 'moi' | 'direct'; input_ids: number[]; tokens: number[]; step_logits: number[][] }[];
}

const FIXTURES = [
  'llama',
  'llama_tied',
  'llama_rope3',
  'qwen2',
  'qwen3',
  'gemma',
  'gemma2',
  'gemma3_text',
  'gemma3_text_ropescale',
  'stories260K',
];

function fixtureDir(name: string): string | null {
  const s = sharedDir();
  const d = s ? path.join(s, 'fixtures', name) : null;
  return d && existsSync(path.join(d, 'reference.json')) ? d : null;
}

/** The plan's inputs from a fixture folder: its spec and its checkpoint as a weights provider. */
function fixture(
  dir: string,
  convert?: (name: string, t: HostTensor) => HostTensor,
): { spec: GpuModelSpec; weights: WeightsProvider; close(): void; ref: Reference; embed: Float32Array } {
  const { spec } = specFromConfig(readConfig(dir));
  const ck = Checkpoint.open(dir);
  const embed = ck.readFloat32('model.embed_tokens.weight');
  const weights: WeightsProvider = (name) => {
    if (!ck.has(name)) return null;
    const t: HostTensor = { data: ck.readFloat32(name), dtype: 'f32', shape: ck.info(name).shape };
    return convert ? convert(name, t) : t;
  };
  return {
    spec,
    weights,
    embed,
    close: () => ck.close(),
    ref: JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference,
  };
}

/** max |got − want| / max(1, max |want|) */
function rel(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let d = 0;
  let s = 1;
  for (let i = 0; i < want.length; i++) {
    const x = Math.abs(got[i] - want[i]);
    d = Number.isNaN(x) ? Infinity : Math.max(d, x);
    s = Math.max(s, Math.abs(want[i]));
  }
  return d / s;
}

const TOL = 1e-4;

describe('webgpu: GpuDecodePlan', function () {
  this.timeout(900_000);

  for (const name of FIXTURES) {
    it(`${name}: logits within 1e-4 of reference.json, greedy and MoI trajectories equal, direct teacher-forced`, async function () {
      const r = await runtimeOrSkip(this);
      const dir = fixtureDir(name);
      if (!dir) {
        console.log(`      [skip] fixture ${name} not found (shared/ missing)`);
        this.skip();
      }
      const f = fixture(dir!);
      // stories260K prefills through the tiled GEMM (chunks of 16 rows); the others through the GEMV (chunks of 4)
      const plan = await GpuDecodePlan.create({
        runtime: r,
        spec: f.spec,
        weights: f.weights,
        batch: 1,
        capacity: 64,
        prefillChunk: name === 'stories260K' ? 16 : 4,
      });
      f.close();
      try {
        let worst = 0;
        for (const c of f.ref.cases) {
          plan.resetRow(0);
          const head = Math.min(5, c.input_ids.length);
          await plan.prefill(0, c.input_ids.slice(0, head));
          worst = Math.max(worst, rel(await plan.logits(), c.logits[head - 1]));
          for (let t = head; t < c.input_ids.length; t++) {
            await plan.step({ ids: [c.input_ids[t]] });
            worst = Math.max(worst, rel(await plan.logits(), c.logits[t]));
          }
          assert.ok(worst <= TOL, `${c.name}: logits off by ${worst.toExponential(2)} × scale`);
          plan.resetRow(0);
          const tokens = [(await plan.prefill(0, c.input_ids)).token];
          while (tokens.length < c.greedy.n) tokens.push((await plan.step())[0].token);
          assert.deepEqual(tokens, c.greedy.tokens, `${c.name}: greedy tokens`);
        }
        for (const m of f.ref.moi) {
          plan.setRow(0, { mix: { mode: m.mode, beta: m.beta, topK: 20 } });
          plan.resetRow(0);
          if (m.mode === 'moi') {
            const tokens = [(await plan.prefill(0, m.input_ids)).token];
            while (tokens.length < m.tokens.length) tokens.push((await plan.step())[0].token);
            assert.deepEqual(tokens, m.tokens, `MoI β ${m.beta}: trajectory`);
          } else {
            // direct, teacher-forced (its fed-back mixture amplifies float32 rounding ~4× a step):
            // each step's input is the direct mix of the reference's previous step logits
            // (float64, README's rule, over the fixture's embedding rows); its logits must then be
            // the reference's, and the tail's own choice its token
            const rec = await plan.prefill(0, m.input_ids);
            assert.equal(rec.token, m.tokens[0]);
            let d = rel(await plan.logits(), m.step_logits[0]);
            for (let s = 1; s < m.tokens.length; s++) {
              const [x] = await plan.step({
                embeds: directMixF64(
                  m.step_logits[s - 1],
                  m.tokens[s - 1],
                  f.embed,
                  f.spec.hiddenSize,
                  f.spec.embedScale,
                ),
              });
              d = Math.max(d, rel(await plan.logits(), m.step_logits[s]));
              assert.equal(x.token, m.tokens[s], `direct, teacher-forced: step ${s}'s token`);
            }
            assert.ok(d <= TOL, `direct, teacher-forced: step logits off by ${d.toExponential(2)} × scale`);
          }
        }
        plan.setRow(0, {});
        console.log(
          `      [plan] ${name}: worst logits ${worst.toExponential(1)} × scale; ${JSON.stringify(plan.dispatchesPerStep())}`,
        );
      } finally {
        plan.dispose();
      }
    });
  }

  for (const name of ['qwen2', 'gemma2']) {
    it(`${name}: split-K GEMVs (forced on every GEMV) keep the logits and the greedy tokens`, async function () {
      const r = await runtimeOrSkip(this);
      const dir = fixtureDir(name);
      if (!dir) this.skip();
      const f = fixture(dir!);
      const plan = await GpuDecodePlan.create({
        runtime: r,
        spec: f.spec,
        weights: f.weights,
        batch: 1,
        capacity: 40,
        prefillChunk: 4,
        splitK: 3,
      });
      f.close();
      try {
        const c = f.ref.cases[0];
        await plan.prefill(0, c.input_ids.slice(0, 6));
        let d = rel(await plan.logits(), c.logits[5]);
        for (let t = 6; t < c.input_ids.length; t++) {
          await plan.step({ ids: [c.input_ids[t]] });
          d = Math.max(d, rel(await plan.logits(), c.logits[t]));
        }
        assert.ok(d <= TOL, `logits off by ${d.toExponential(2)} × scale`);
        plan.resetRow(0);
        const tokens = [(await plan.prefill(0, c.input_ids)).token];
        while (tokens.length < c.greedy.n) tokens.push((await plan.step())[0].token);
        assert.deepEqual(tokens, c.greedy.tokens);
        const per = plan.dispatchesPerStep();
        assert.equal(per.perLayer, (f.spec.sandwichNorms ? 8 : 6) + 4, 'one reduction after each of the 4 GEMVs');
        assert.equal(plan.lastStep!.dispatches, per.total);
      } finally {
        plan.dispose();
      }
    });
  }

  it('vocabulary blocks: bindings of 96 KiB split the tied table (head and embedding) into 2 blocks, logits and tokens unchanged', async function () {
    const r = await runtimeOrSkip(this);
    const dir = fixtureDir('stories260K');
    if (!dir) this.skip();
    const small = new GpuRuntime({ ...r.gpu, limits: { ...r.gpu.limits, maxStorageBufferBindingSize: 96 * 1024 } });
    const f = fixture(dir!);
    const plan = await GpuDecodePlan.create({
      runtime: small,
      spec: f.spec,
      weights: f.weights,
      batch: 1,
      capacity: 64,
      prefillChunk: 4,
    });
    f.close();
    try {
      assert.equal(plan.dispatchesPerStep().outsideLayers, 4, 'two head dispatches, tail stats and mix');
      plan.setRow(0, { mix: { mode: 'moi', beta: 1 } });
      const m = f.ref.moi.find((x) => x.mode === 'moi')!;
      const tokens = [(await plan.prefill(0, m.input_ids)).token];
      assert.ok(rel(await plan.logits(), m.step_logits[0]) <= TOL);
      while (tokens.length < m.tokens.length) tokens.push((await plan.step())[0].token);
      assert.deepEqual(tokens, m.tokens, 'the MoI trajectory (the mix gathers rows from both blocks)');
      await assert.rejects(
        GpuDecodePlan.create({
          runtime: new GpuRuntime({ ...r.gpu, limits: { ...r.gpu.limits, maxStorageBufferBindingSize: 32 * 1024 } }),
          spec: f.spec,
          weights: f.weights,
          batch: 1,
          capacity: 8,
        }),
        (e: unknown) =>
          e instanceof ModelError &&
          e.code === 'E_GPU_LIMIT' &&
          /^mlp act: 45056 bytes exceed this device's maxStorageBufferBindingSize \(32768 bytes on /.test(e.message),
      );
    } finally {
      plan.dispose();
    }
  });

  describe('against the composite engine (wasm)', () => {
    before(async () => {
      await initBackend({ backend: 'wasm' });
    });

    for (const name of ['qwen3', 'gemma2']) {
      it(`${name}: rows at different positions in one batch equal each row alone (Decoder.forward with a cache)`, async function () {
        const r = await runtimeOrSkip(this);
        const dir = fixtureDir(name);
        if (!dir) this.skip();
        const f = fixture(dir!);
        const loaded: LoadedModel = await loadModel(dir!);
        const V = f.spec.vocabSize;
        const prompts = [
          [5, 9, 200, 31, 7, 77, 100],
          [1, 2, 3],
          [300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311],
        ];
        const feeds = [
          [11, 12, 13, 14, 15, 16],
          [400, 1, 400, 2, 400, 3],
          [9, 8, 7, 6, 5, 4],
        ];
        const B = prompts.length;
        const plan = await GpuDecodePlan.create({
          runtime: r,
          spec: f.spec,
          weights: f.weights,
          batch: B,
          capacity: 32,
          prefillChunk: 5,
        });
        f.close();
        try {
          // the composite, one row at a time
          const want: Float32Array[][] = [];
          for (let b = 0; b < B; b++) {
            const cache = loaded.model.makeCache(1, 32);
            const rows: Float32Array[] = [];
            const read = async (t: tf.Tensor3D) => {
              const d = (await t.data()) as Float32Array;
              t.dispose();
              return d.slice(0, V);
            };
            rows.push(await read(loaded.model.forward({ ids: [prompts[b]] }, { cache, lastOnly: true })));
            for (const id of feeds[b])
              rows.push(await read(loaded.model.forward({ ids: [[id]] }, { cache, lastOnly: true })));
            for (const c of cache) c.dispose();
            want.push(rows);
          }
          // the plan: each row prefilled (5-token chunks), then the rows step together
          const numTensors = tf.memory().numTensors;
          const got: Float32Array[][] = prompts.map(() => []);
          for (let b = 0; b < B; b++) {
            await plan.prefill(b, prompts[b]);
            got[b].push((await plan.logits()).slice(b * V, (b + 1) * V));
          }
          assert.deepEqual(
            plan.positions,
            prompts.map((p) => p.length),
          );
          for (let s = 0; s < feeds[0].length; s++) {
            await plan.step({ ids: feeds.map((fd) => fd[s]) });
            const lg = await plan.logits();
            for (let b = 0; b < B; b++) got[b].push(lg.slice(b * V, (b + 1) * V));
            const c = plan.lastStep!;
            assert.equal(c.readback_bytes, B * RECORD_WORDS * 4, 'one 64-byte record a row');
            assert.equal(c.uploads_bytes, 16 * B, 'position, draw, forced and input id: 16 bytes a row');
            assert.deepEqual([c.new_pipelines, c.new_bind_groups, c.new_buffers], [0, 0, 0]);
          }
          for (let b = 0; b < B; b++) {
            for (let s = 0; s < got[b].length; s++) {
              const d = rel(got[b][s], want[b][s]);
              assert.ok(
                d <= TOL,
                `row ${b} (at position ${prompts[b].length + s - 1}): ${d.toExponential(2)} × scale from the composite`,
              );
            }
          }
          assert.equal(tf.memory().numTensors, numTensors, 'the plan holds no tfjs tensors');
        } finally {
          plan.dispose();
          loaded.dispose();
        }
      });
    }
  });

  it('f16 storage equals f32 storage of the f16-rounded weights; bf16 words convert at build', async function () {
    const r = await runtimeOrSkip(this);
    const dir = fixtureDir('qwen2');
    if (!dir) this.skip();
    // f16 storage rounds the matrices only (norms and biases stay f32)
    const rounded = fixture(dir!, (_n, t) =>
      t.shape.length === 2 ? { ...t, data: f32ToF16ToF32(t.data as Float32Array) } : t,
    );
    const asBf16 = fixture(dir!, (_n, t) => ({ ...t, dtype: 'bf16', data: f32ToBf16(t.data as Float32Array) }));
    const plain = fixture(dir!);
    const ids = rounded.ref.cases[0].input_ids;
    const run = async (weights: WeightsProvider, dtype: 'f32' | 'f16'): Promise<Float32Array> => {
      const plan = await GpuDecodePlan.create({
        runtime: r,
        spec: plain.spec,
        weights,
        batch: 1,
        capacity: 16,
        prefillChunk: 4,
        dtype,
      });
      try {
        await plan.prefill(0, ids.slice(0, 9));
        return await plan.logits();
      } finally {
        plan.dispose();
      }
    };
    const f16 = await run(plain.weights, 'f16');
    const f32ofRounded = await run(rounded.weights, 'f32');
    const f32 = await run(plain.weights, 'f32');
    assert.ok(rel(f16, f32ofRounded) < 1e-5, `f16 storage vs f32 of rounded weights: ${rel(f16, f32ofRounded)}`);
    assert.ok(rel(f16, f32) > 1e-6, 'the f16 rounding is visible (the comparison above can fail)');
    // bf16 checkpoint words: converted at build, equal to an f32 plan over the bf16-rounded values
    const viaBf16 = await run(asBf16.weights, 'f32');
    const bf16Rounded = fixture(dir!, (_n, t) => ({ ...t, data: bf16ToF32(f32ToBf16(t.data as Float32Array)) }));
    const want = await run(bf16Rounded.weights, 'f32');
    assert.equal(rel(viaBf16, want), 0, 'bf16 words → f32 exactly');
    for (const f of [rounded, asBf16, plain, bf16Rounded]) f.close();
  });

  it('a matrix with values past ±65504 stays f32 under f16 storage, and the plan says so', async function () {
    const r = await runtimeOrSkip(this);
    const dir = fixtureDir('llama');
    if (!dir) this.skip();
    const big = (n: string, t: HostTensor): HostTensor => {
      if (n !== 'model.layers.1.mlp.down_proj.weight') return t;
      const data = Float32Array.from(t.data as Float32Array);
      data[3] = 70000;
      return { ...t, data };
    };
    const f = fixture(dir!, big);
    const plan16 = await GpuDecodePlan.create({
      runtime: r,
      spec: f.spec,
      weights: f.weights,
      batch: 1,
      capacity: 8,
      prefillChunk: 4,
      dtype: 'f16',
    });
    // the same values in f32 storage: matrices rounded to f16 as plan16 holds them, but layer 1's down_proj
    const g = fixture(dir!, (n, t) =>
      big(
        n,
        t.shape.length === 2 && n !== 'model.layers.1.mlp.down_proj.weight'
          ? { ...t, data: f32ToF16ToF32(t.data as Float32Array) }
          : t,
      ),
    );
    const plan32 = await GpuDecodePlan.create({
      runtime: r,
      spec: f.spec,
      weights: g.weights,
      batch: 1,
      capacity: 8,
      prefillChunk: 4,
    });
    f.close();
    g.close();
    try {
      assert.equal(plan16.notes.length, 1);
      assert.match(
        plan16.notes[0],
        /model\.layers\.1\.mlp\.down_proj\.weight: 1 value\(s\) outside f16's range .* kept in f32/,
      );
      await plan16.prefill(0, [1, 2, 3]);
      await plan32.prefill(0, [1, 2, 3]);
      const a = await plan16.logits();
      assert.ok(a.every(Number.isFinite), 'finite logits');
      assert.ok(
        rel(a, await plan32.logits()) < 1e-5,
        'equal to f32 storage of the same values (f16-rounded elsewhere)',
      );
    } finally {
      plan16.dispose();
      plan32.dispose();
    }
  });

  it("seeded sampling through the plan draws the composite sampler's token from the plan's own logits", async function () {
    const r = await runtimeOrSkip(this);
    const dir = fixtureDir('stories260K');
    if (!dir) this.skip();
    await initBackend({ backend: 'cpu' });
    const f = fixture(dir!);
    const plan = await GpuDecodePlan.create({
      runtime: r,
      spec: f.spec,
      weights: f.weights,
      batch: 2,
      capacity: 40,
      prefillChunk: 8,
      penalties: true,
    });
    f.close();
    try {
      const configs = [
        { temperature: 0.9, topP: 0.9, seed: 7, repetitionPenalty: 1.2 },
        { temperature: 1.2, topK: 12, minP: 0.02, seed: 8, frequencyPenalty: 0.5, logprobs: 2 },
      ];
      const prompts = [
        [1, 403, 407, 261, 378],
        [1, 403, 407],
      ];
      const rows = configs.map((c, b) => ({
        params: resolveSamplingParams(c),
        rng: createRng(c.seed),
        promptIds: prompts[b],
        generatedIds: [] as number[],
      }));
      configs.forEach((c, b) => plan.setRow(b, { sampling: c, mix: { mode: 'moi', beta: 1 } }));
      const first = [await plan.prefill(0, prompts[0]), await plan.prefill(1, prompts[1])];
      // the prefill's draw: one per row, as the composite's first sample
      const V = f.spec.vocabSize;
      const lg0 = await plan.logits();
      for (let b = 0; b < 2; b++) {
        const id = tf.tidy(
          () => sample(tf.tensor2d(lg0.slice(b * V, (b + 1) * V), [1, V]), [rows[b]]).ids.dataSync()[0],
        );
        assert.equal(first[b].token, id, `row ${b}, prefill`);
        rows[b].generatedIds.push(id);
      }
      for (let s = 0; s < 8; s++) {
        const recs = await plan.step();
        const lg = await plan.logits();
        const ids = tf.tidy(() => Array.from(sample(tf.tensor2d(lg, [2, V]), rows).ids.dataSync()));
        assert.deepEqual(
          recs.map((x) => x.token),
          ids,
          `step ${s}`,
        );
        rows.forEach((row, b) => row.generatedIds.push(ids[b]));
        assert.equal(recs[1].topLogprobs.length, 2);
        assert.equal(recs[0].topLogprobs.length, 0);
      }
    } finally {
      plan.dispose();
      await initBackend({ backend: 'wasm' });
    }
  });

  it("SmolLM2-135M shape: a decode step after warm-up meets issue 23's goals", async function () {
    const r = await runtimeOrSkip(this);
    const s = sharedDir();
    const cfgFile = s ? path.join(s, 'peer-bench', 'configs', 'smollm2-135m.json') : null;
    if (!cfgFile || !existsSync(cfgFile)) this.skip();
    const { spec } = specFromConfig(JSON.parse(readFileSync(cfgFile!, 'utf8')));
    // synthetic weights (the counters do not depend on their values): one small pseudo-random block per shape
    const blocks = new Map<string, Uint16Array>();
    const weights: WeightsProvider = (name) => {
      const shape = name.endsWith('norm.weight') ? [spec.hiddenSize] : undefined;
      const sh = shape ?? shapeOf(spec, name);
      if (!sh) return null;
      const key = sh.join('x');
      let data = blocks.get(key);
      if (!data) {
        const g = rng(sh.reduce((a, b) => a + b, 0));
        data = f32ToF16(Float32Array.from({ length: sh.reduce((a, b) => a * b, 1) }, () => (g() * 2 - 1) * 0.05));
        blocks.set(key, data);
      }
      return { data, dtype: 'f16', shape: sh };
    };
    const plan = await GpuDecodePlan.create({
      runtime: r,
      spec,
      weights,
      batch: 1,
      capacity: 64,
      prefillChunk: 4,
      dtype: 'f16',
    });
    try {
      plan.setRow(0, { mix: { mode: 'moi', beta: 1 } });
      await plan.prefill(0, [1, 2, 3, 4, 5, 6]);
      await plan.step(); // warm-up
      const rec = (await plan.step())[0];
      const c = plan.lastStep!;
      const L = spec.numLayers;
      const per = plan.dispatchesPerStep();
      console.log(
        `      [gpu_step] SmolLM2-135M shape, f16, batch 1, MoI: ${JSON.stringify({ ...c, dispatches_per_layer: per.perLayer, outside_layers: per.outsideLayers })}`,
      );
      assert.equal(c.dispatches, per.total);
      assert.ok(per.perLayer <= 10, `${per.perLayer} dispatches a layer`);
      assert.ok(c.dispatches <= 10 * L + 12, `${c.dispatches} dispatches`);
      assert.ok(c.dispatches - per.perLayer * L <= 12, 'embedding, head, mix and sampling: ≤ 12');
      assert.equal(c.readback_bytes, 64, 'one read of 64 bytes');
      assert.ok(c.uploads_bytes <= 1024, `${c.uploads_bytes} bytes uploaded`);
      assert.deepEqual([c.new_pipelines, c.new_bind_groups, c.new_buffers], [0, 0, 0]);
      assert.ok(rec.numCandidates >= 20 && rec.entropy >= 0 && rec.entropy <= 1);
    } finally {
      plan.dispose();
    }
  });

  describe('bad input', () => {
    let plan: GpuDecodePlan | null = null;
    let spec: GpuModelSpec;
    let weights: WeightsProvider;
    before(async function () {
      const r = await runtimeOrSkip(this);
      const dir = fixtureDir('stories260K');
      if (!dir) this.skip();
      const f = fixture(dir!);
      spec = f.spec;
      weights = f.weights;
      plan = await GpuDecodePlan.create({ runtime: r, spec, weights, batch: 1, capacity: 8, prefillChunk: 4 });
    });
    after(() => plan?.dispose());

    it('ids, rows, capacity and settings: UsageErrors naming them', async () => {
      const p = plan!;
      await assert.rejects(
        p.prefill(0, [1, 512]),
        (e: unknown) =>
          e instanceof UsageError &&
          e.code === 'E_GPU_PLAN' &&
          /token id 512 is outside the vocabulary \[0, 512\)/.test(e.message),
      );
      await assert.rejects(p.prefill(1, [1]), /row 1 is outside the plan's 1 rows/);
      await assert.rejects(
        p.prefill(0, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (e: unknown) => e instanceof UsageError && e.code === 'E_CONTEXT',
      );
      await assert.rejects(p.step({ ids: [1, 2] }), /2 ids for 1 rows/);
      assert.throws(() => p.setRow(0, { sampling: { logprobs: 6 } }), /logprobs must be an integer in \[0, 5\]/);
      assert.throws(
        () => p.setRow(0, { sampling: { repetitionPenalty: 1.2 } }),
        /penalties need a plan built with penalties: true/,
      );
      assert.throws(() => p.setRow(0, { mix: { mode: 'soft' as 'moi' } }), /mix mode 'soft' is not on the GPU tail/);
      assert.throws(() => p.setRow(0, { sampling: { topP: 0 } }), /topP must be in \(0, 1\]/);
      // a row at its capacity refuses one more step
      p.resetRow(0);
      await p.prefill(0, [1, 2, 3, 4, 5, 6, 7, 8]);
      await assert.rejects(p.step(), (e: unknown) => e instanceof UsageError && e.code === 'E_CONTEXT');
    });

    it('weights and shapes: ModelErrors naming the tensor', async function () {
      const r = await runtimeOrSkip(this);
      const missing: WeightsProvider = (n) => (n === 'model.layers.2.self_attn.k_proj.weight' ? null : weights(n));
      await assert.rejects(
        GpuDecodePlan.create({ runtime: r, spec, weights: missing, batch: 1, capacity: 8 }),
        (e: unknown) =>
          e instanceof ModelError &&
          e.code === 'E_MISSING_TENSORS' &&
          /model\.layers\.2\.self_attn\.k_proj\.weight/.test(e.message),
      );
      const wrong: WeightsProvider = (n) =>
        n === 'model.norm.weight' ? { data: new Float32Array(63), dtype: 'f32', shape: [63] } : weights(n);
      await assert.rejects(
        GpuDecodePlan.create({ runtime: r, spec, weights: wrong, batch: 1, capacity: 8 }),
        (e: unknown) =>
          e instanceof ModelError &&
          e.code === 'E_SHAPE' &&
          /model\.norm\.weight has shape \[63\] but the config implies \[64\]/.test(e.message),
      );
      await assert.rejects(
        GpuDecodePlan.create({ runtime: r, spec, weights, batch: 1, capacity: 513 }),
        (e: unknown) =>
          e instanceof ModelError && e.code === 'E_CONTEXT' && /exceeds max_position_embeddings 512/.test(e.message),
      );
    });
  });
});

/** f32 → f16 → f32 (what f16 storage holds) */
function f32ToF16ToF32(a: Float32Array): Float32Array {
  return f16ToF32(f32ToF16(a));
}

/** The HF shape of a graph tensor for a llama-style spec (synthetic weights). */
function shapeOf(s: GpuModelSpec, name: string): number[] | null {
  const H = s.hiddenSize,
    D = s.headDim,
    I = s.intermediateSize;
  if (name === 'model.embed_tokens.weight') return [s.vocabSize, H];
  if (name === 'lm_head.weight') return s.tieWordEmbeddings ? null : [s.vocabSize, H];
  const m = /^model\.layers\.\d+\.(.*)$/.exec(name);
  if (!m) return null;
  switch (m[1]) {
    case 'self_attn.q_proj.weight':
      return [s.numHeads * D, H];
    case 'self_attn.k_proj.weight':
    case 'self_attn.v_proj.weight':
      return [s.numKvHeads * D, H];
    case 'self_attn.o_proj.weight':
      return [H, s.numHeads * D];
    case 'mlp.gate_proj.weight':
    case 'mlp.up_proj.weight':
      return [I, H];
    case 'mlp.down_proj.weight':
      return [H, I];
    default:
      return null;
  }
}
