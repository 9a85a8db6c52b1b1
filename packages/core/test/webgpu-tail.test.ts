/**
 * The GPU tail (src/kernels/webgpu/tail.ts: stats, sample, mix) on the local adapter, against
 * independent expectations:
 * - the MoI / direct mixing cases of fixtures/llama/moi_unit.json (float64 weights, entropy and
 *   mixed embedding from the reference implementation, over the fixture's real embedding rows);
 * - greedy ties (the lower id), forced tokens, raw logprobs against float64 log-softmax;
 * - seeded sampling (temperature, top-k, top-p, min-p, their combinations, tie-heavy logits) and
 *   the penalties, against @moi/core's composite sampler `sample()` given the same uniform draws:
 *   the same token ids, draw after draw;
 * - the penalty state counts the chosen token.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  Checkpoint,
  createRng,
  initBackend,
  NO_TOKEN,
  packRowParams,
  padK,
  RECORD_WORDS,
  resolveSamplingParams,
  sample,
  sharedDir,
  TAIL_SCRATCH_WORDS,
  tailKernels,
  uniformOpenClosed24,
  type GpuRuntime,
  type SamplingParams,
  type TailRowParams,
} from '../src/index.ts';
import { randn, rng, runtimeOrSkip } from './webgpu-helpers.ts';

interface TailRun {
  rec: Uint32Array;
  recF: Float32Array;
  next: Float32Array;
  pen: Uint32Array;
}

const ROW: TailRowParams = {
  temperature: 0,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  mode: 'standard',
  beta: 1,
  mixK: 20,
  logprobs: 0,
};

/** One step's tail over B rows of logits: stats, the sampler, mix; returns the records, the next inputs and the penalty state. */
async function runTail(
  r: GpuRuntime,
  o: {
    V: number;
    H: number;
    logits: Float32Array;
    rows: TailRowParams[];
    u?: number[];
    forced?: number[];
    table: Float32Array;
    scale?: number | null;
    pen?: Uint32Array;
  },
): Promise<TailRun> {
  const B = o.rows.length;
  const HP = padK(o.H);
  const padded = new Float32Array(o.V * HP);
  for (let v = 0; v < o.V; v++) padded.set(o.table.subarray(v * o.H, (v + 1) * o.H), v * HP);
  const shape = {
    B,
    V: o.V,
    H: o.H,
    embed: { V: o.V, H: o.H, dtype: 'f32' as const, blockRows: o.V },
    hStride: HP,
    scale: o.scale ?? null,
    penalties: !!o.pen,
  };
  const ks = tailKernels(shape);
  const step = new Uint32Array(4 * B);
  const sf = new Float32Array(step.buffer);
  for (let b = 0; b < B; b++) {
    step[b] = b;
    sf[2 * B + b] = o.u?.[b] ?? 1;
    step[3 * B + b] = o.forced?.[b] ?? NO_TOKEN;
  }
  const params = new Uint32Array(B * 16);
  o.rows.forEach((p, b) => params.set(packRowParams(p), b * 16));
  const bufs: Record<string, GPUBuffer> = {
    logits: r.upload('logits', o.logits),
    params: r.upload('params', params),
    step: r.upload('step', step),
    pen: o.pen ? r.upload('pen', o.pen) : r.buffer('pen', 16),
    scratch: r.buffer('scratch', B * TAIL_SCRATCH_WORDS * 4),
    next: r.buffer('next', B * HP * 4),
    rec: r.buffer('rec', B * RECORD_WORDS * 4),
    e0: r.upload('e0', padded),
  };
  const enc = r.begin('tail');
  const made: GPUBuffer[] = [];
  for (const k of [ks.stats, ks.sample, ks.mix]) {
    const p = await r.pipeline(k);
    const dims = r.dimsBuffer(k);
    made.push(dims);
    enc.dispatch(p, r.bindGroup(k, p, { ...bufs, dims }), B);
  }
  enc.finish();
  const rec = await r.readBuffer(bufs.rec, B * RECORD_WORDS * 4);
  const next = new Float32Array(await r.readBuffer(bufs.next, B * HP * 4));
  const pen = new Uint32Array(await r.readBuffer(bufs.pen));
  for (const b of [...Object.values(bufs), ...made]) b.destroy();
  const nextRows = new Float32Array(B * o.H);
  for (let b = 0; b < B; b++) nextRows.set(next.subarray(b * HP, b * HP + o.H), b * o.H);
  return { rec: new Uint32Array(rec), recF: new Float32Array(rec), next: nextRows, pen };
}

/** The composite sampler's ids for these rows (one draw of each row's generator). */
function compositeIds(
  logits: Float32Array,
  V: number,
  params: SamplingParams[],
  rngs: ReturnType<typeof createRng>[],
  history: { prompt: number[]; generated: number[] }[],
): number[] {
  const B = params.length;
  const res = tf.tidy(() => {
    const out = sample(
      tf.tensor2d(logits, [B, V]),
      params.map((p, b) => ({
        params: p,
        rng: rngs[b],
        promptIds: history[b].prompt,
        generatedIds: history[b].generated,
      })),
    );
    return out.ids;
  });
  const ids = Array.from(res.dataSync());
  res.dispose();
  return ids;
}

function toTail(p: SamplingParams): TailRowParams {
  return {
    ...ROW,
    temperature: p.temperature,
    topK: p.topK,
    topP: p.topP,
    minP: p.minP,
    repetitionPenalty: p.repetitionPenalty,
    presencePenalty: p.presencePenalty,
    frequencyPenalty: p.frequencyPenalty,
  };
}

describe('webgpu: the sampling and mixing tail', function () {
  this.timeout(600_000);

  before(async () => {
    await initBackend({ backend: 'cpu' });
  });
  after(async () => {
    await initBackend({ backend: 'wasm' });
  });

  it('mixes as fixtures/llama/moi_unit.json (MoI β 0.5/1/2, direct; y at top-1, inside, outside the top-20)', async function () {
    const r = await runtimeOrSkip(this);
    const shared = sharedDir();
    if (!shared) this.skip();
    const dir = path.join(shared!, 'fixtures', 'llama');
    const unit = JSON.parse(readFileSync(path.join(dir, 'moi_unit.json'), 'utf8')) as {
      cases: {
        beta: number;
        mode: 'moi' | 'direct';
        sampled: number;
        case: string;
        logits: number[];
        ids: number[];
        weights: number[];
        entropy: number;
        mixed_embedding: number[];
      }[];
    };
    const ck = Checkpoint.open(dir);
    const table = ck.readFloat32('model.embed_tokens.weight');
    const [V, H] = ck.info('model.embed_tokens.weight').shape;
    ck.close();
    const cases = unit.cases;
    const logits = new Float32Array(cases.length * V);
    cases.forEach((c, b) => logits.set(c.logits, b * V));
    const out = await runTail(r, {
      V,
      H,
      logits,
      table,
      rows: cases.map((c) => ({ ...ROW, mode: c.mode, beta: c.mode === 'moi' ? c.beta : 1, mixK: 20 })),
      forced: cases.map((c) => c.sampled),
    });
    cases.forEach((c, b) => {
      const o = b * RECORD_WORDS;
      const wY = c.ids.reduce((a, id, i) => a + (id === c.sampled ? c.weights[i] : 0), 0);
      assert.equal(out.rec[o], c.sampled, `${c.case}: the forced token`);
      assert.equal(out.rec[o + 3], c.ids.length, `${c.case}: candidates`);
      assert.ok(Math.abs(out.recF[o + 1] - c.entropy) < 2e-6, `${c.case}: entropy ${out.recF[o + 1]} vs ${c.entropy}`);
      assert.ok(Math.abs(out.recF[o + 2] - wY) < 2e-6, `${c.case}: weight on y ${out.recF[o + 2]} vs ${wY}`);
      let worst = 0;
      let scale = 0;
      for (let k = 0; k < H; k++) {
        worst = Math.max(worst, Math.abs(out.next[b * H + k] - c.mixed_embedding[k]));
        scale = Math.max(scale, Math.abs(c.mixed_embedding[k]));
      }
      assert.ok(
        worst / scale < 2e-6,
        `${c.case} (${c.mode} β ${c.beta}): mixed embedding off by ${worst} over ${scale}`,
      );
    });
  });

  it('greedy takes the lower id on ties, a forced id wins, standard rows pass E[y]·scale, logprobs are the raw log-softmax', async function () {
    const r = await runtimeOrSkip(this);
    const V = 300,
      H = 6;
    const g = rng(3);
    const logits = randn(3 * V, g, 2);
    for (const b of [0, 1, 2]) {
      logits[b * V + 9] = 7;
      logits[b * V + 41] = 7;
      logits[b * V + 200] = 6.5;
      logits[b * V + 17] = 6.5;
    }
    const table = randn(V * H, g);
    const out = await runTail(r, {
      V,
      H,
      logits,
      table,
      scale: 1.5,
      rows: [
        { ...ROW, logprobs: 5 },
        { ...ROW, temperature: 0 },
        { ...ROW, logprobs: 3 },
      ],
      forced: [NO_TOKEN, NO_TOKEN, 123],
    });
    assert.equal(out.rec[0], 9, 'tie: the lower id');
    assert.equal(out.rec[RECORD_WORDS], 9);
    assert.equal(out.rec[2 * RECORD_WORDS], 123, 'forced');
    for (let k = 0; k < H; k++) assert.equal(out.next[2 * H + k], Math.fround(table[123 * H + k] * 1.5), 'E[y]·scale');
    for (const [b, y, n] of [
      [0, 9, 5],
      [2, 123, 3],
    ]) {
      const row = Array.from(logits.subarray(b * V, (b + 1) * V));
      const mx = Math.max(...row);
      const lse = mx + Math.log(row.reduce((a, x) => a + Math.exp(x - mx), 0));
      const o = b * RECORD_WORDS;
      assert.ok(Math.abs(out.recF[o + 4] - (row[y] - lse)) < 1e-5, `row ${b}: y's logprob`);
      assert.equal(out.rec[o + 5], n);
      const order = row
        .map((x, i) => [x, i])
        .sort((a, c) => c[0] - a[0] || a[1] - c[1])
        .slice(0, n);
      for (let j = 0; j < n; j++) {
        assert.equal(out.rec[o + 6 + 2 * j], order[j][1], `row ${b}: top ${j} id`);
        assert.ok(Math.abs(out.recF[o + 7 + 2 * j] - (order[j][0] - lse)) < 1e-5, `row ${b}: top ${j} logprob`);
      }
    }
  });

  it("seeded sampling draws the composite sampler's ids (temperature, top-k, top-p, min-p, ties)", async function () {
    const r = await runtimeOrSkip(this);
    const V = 257,
      H = 4;
    const configs: Partial<SamplingParams>[] = [
      { temperature: 0.7 },
      { temperature: 1, topK: 5 },
      { temperature: 1.3, topP: 0.8 },
      { temperature: 0.9, minP: 0.1 },
      { temperature: 1, topK: 20, topP: 0.9, minP: 0.05 },
      { temperature: 1.1, topP: 0.35 },
      { temperature: 1, topK: 3 }, // on the tie-heavy row
      { temperature: 0.5, topP: 0.6 }, // on the tie-heavy row
    ];
    const params = configs.map((c) => resolveSamplingParams({ ...c, seed: 0 }));
    const B = params.length;
    const table = randn(V * H, rng(1));
    let agreed = 0;
    for (let round = 0; round < 6; round++) {
      const g = rng(100 + round);
      const logits = randn(B * V, g, 3);
      // tie-heavy rows: a plateau of equal values across the top-k / top-p boundaries
      for (const b of [6, 7]) for (const i of [2, 4, 7, 11, 60, 61, 200]) logits[b * V + i] = 5;
      const seeds = params.map((_, b) => 1000 * round + b);
      const gpuRngs = seeds.map((s) => createRng(s));
      const u = gpuRngs.map((x) => uniformOpenClosed24(x));
      const out = await runTail(r, { V, H, logits, table, rows: params.map(toTail), u });
      const want = compositeIds(
        logits,
        V,
        params,
        seeds.map((s) => createRng(s)),
        params.map(() => ({ prompt: [], generated: [] })),
      );
      for (let b = 0; b < B; b++) {
        assert.equal(out.rec[b * RECORD_WORDS], want[b], `round ${round}, ${JSON.stringify(configs[b])}: u = ${u[b]}`);
        agreed++;
      }
    }
    assert.equal(agreed, 6 * B);
  });

  it("penalties: the composite's ids (greedy and sampled), and the state counts the chosen token", async function () {
    const r = await runtimeOrSkip(this);
    const V = 97,
      H = 4;
    const g = rng(9);
    const logits = randn(4 * V, g, 2);
    // make penalized tokens the leaders, so the penalties decide
    const history = [
      { prompt: [3, 5, 5], generated: [7, 7, 7] },
      { prompt: [10], generated: [11, 12, 11] },
      { prompt: [20, 21], generated: [21] },
      { prompt: [], generated: [30, 30, 31] },
    ];
    history.forEach((h, b) => {
      for (const id of [...h.prompt, ...h.generated]) logits[b * V + id] = 4 + (id % 3) * 0.1;
    });
    const configs: Partial<SamplingParams>[] = [
      { temperature: 0, repetitionPenalty: 1.8 },
      { temperature: 0, presencePenalty: 1.5, frequencyPenalty: 0.4 },
      { temperature: 0.8, repetitionPenalty: 1.3, frequencyPenalty: 0.2 },
      { temperature: 1.2, topK: 6, presencePenalty: -0.5, frequencyPenalty: 0.6 },
    ];
    const params = configs.map((c) => resolveSamplingParams(c));
    const pen = new Uint32Array(4 * V);
    history.forEach((h, b) => {
      for (const id of h.prompt) pen[b * V + id] |= 0x80000000;
      for (const id of h.generated) pen[b * V + id] += 1;
    });
    const seeds = [1, 2, 3, 4];
    const u = seeds.map((s) => uniformOpenClosed24(createRng(s)));
    const out = await runTail(r, {
      V,
      H,
      logits,
      table: randn(V * H, g),
      rows: params.map(toTail),
      u,
      pen: Uint32Array.from(pen),
    });
    const want = compositeIds(
      logits,
      V,
      params,
      seeds.map((s) => createRng(s)),
      history,
    );
    for (let b = 0; b < 4; b++) {
      const y = out.rec[b * RECORD_WORDS];
      assert.equal(y, want[b], `row ${b} ${JSON.stringify(configs[b])}`);
      const expect = Uint32Array.from(pen.subarray(b * V, (b + 1) * V));
      expect[y] += 1;
      assert.deepEqual(
        Array.from(out.pen.subarray(b * V, (b + 1) * V)),
        Array.from(expect),
        `row ${b}: the chosen token counted once`,
      );
    }
  });
});
