/**
 * Weights held in 16 and 8 bits (issue 15), end to end through the engine, against independent
 * expectations:
 * - bf16: every fixture rewritten as a BF16 checkpoint (f32 → bf16, round to nearest even) loads
 *   kept in 16 bits (auto) and must equal an F32 checkpoint of the same rounded values loaded in
 *   f32 (the folded f32 path): logits within 1e-5 × scale, greedy tokens and MoI (β = 1)
 *   trajectories equal, direct trajectories up to their float32 horizon (as in moi.test.ts); with
 *   the kernels on and off (the packed ops' composites).
 * - q8 on the real stories260K: the logit error against f32 must stay under a bound derived from
 *   the quantization alone (each weight's error ≤ d/2 of its block, each matmul input's ≤ d/2 of
 *   its 16-bit rounding), the greedy tokens may only
 *   part where the f32 margin is within that bound, and the perplexity of a held text
 *   (test/data/held-story.txt) moves by less than 1% (the issue's goal) and less than the bound
 *   implies. The observed figures are printed.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  bf16ToF32,
  f32ToBf16,
  initBackend,
  kernelsEnabled,
  Q8_BLOCK,
  quantizeQ8,
  SafetensorsFile,
  setKernelsEnabled,
  sharedDir,
  SHARED_MISSING,
  writeSafetensors,
  type TensorInput,
} from '@moi/core';
import { Engine } from '@moi/engine';
import { generateOne, type GenerateRequest } from '@moi/engine';

interface MoiRef {
  beta: number;
  mode: 'moi' | 'direct';
  input_ids: number[];
  tokens: number[];
}
interface Reference {
  cases: { name: string; input_ids: number[]; greedy: { n: number; tokens: number[] } }[];
  moi: MoiRef[];
}

const shared = sharedDir();
const fixturesRoot = shared ? path.join(shared, 'fixtures') : null;
const FIXTURES = fixturesRoot
  ? readdirSync(fixturesRoot)
      .filter((d) => existsSync(path.join(fixturesRoot, d, 'reference.json')))
      .sort()
  : [];

function readReference(dir: string): Reference {
  return JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
}

/** Logits [T][V] of one full forward over ids. */
function logitsOf(engine: Engine, ids: number[]): Float32Array[] {
  const out = engine.model.forward({ ids: [ids] });
  const [, T, V] = out.shape;
  const flat = out.dataSync() as Float32Array;
  out.dispose();
  return Array.from({ length: T }, (_, t) => flat.slice(t * V, (t + 1) * V));
}

const maxAbs = (row: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < row.length; i++) m = Math.max(m, Math.abs(row[i]));
  return m;
};
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
};

async function tokensOf(engine: Engine, request: GenerateRequest): Promise<number[]> {
  return (await generateOne(engine, request)).done.tokens;
}

/** Tokens and, per forward call, the logits of the last position (what the sampler saw). */
async function traced(
  engine: Engine,
  request: GenerateRequest,
): Promise<{ tokens: number[]; stepLogits: Float32Array[] }> {
  const model = engine.model;
  const original = model.forward;
  const stepLogits: Float32Array[] = [];
  model.forward = (input, opts) => {
    const out = original.call(model, input, opts);
    const [, T, V] = out.shape;
    const last = tf.slice(out, [0, T - 1, 0], [1, 1, V]);
    stepLogits.push(Float32Array.from(last.dataSync() as Float32Array));
    last.dispose();
    return out;
  };
  try {
    return { tokens: await tokensOf(engine, request), stepLogits };
  } finally {
    delete (model as { forward?: unknown }).forward;
  }
}

/** A copy of a fixture whose tensors are rounded to bf16: as a BF16 file, and as an F32 file of the same values. */
function writeRounded(src: string, bf16Dir: string, f32Dir: string): void {
  const f = SafetensorsFile.open(path.join(src, 'model.safetensors'));
  const half: [string, TensorInput][] = [];
  const wide: [string, TensorInput][] = [];
  try {
    for (const [name, info] of f.tensors) {
      const bits = f32ToBf16(f.readFloat32(name));
      half.push([name, { dtype: 'BF16', shape: info.shape, data: bits }]);
      wide.push([name, { dtype: 'F32', shape: info.shape, data: bf16ToF32(bits) }]);
    }
  } finally {
    f.close();
  }
  for (const [dir, tensors] of [
    [bf16Dir, half],
    [f32Dir, wide],
  ] as const) {
    mkdirSync(dir);
    copyFileSync(path.join(src, 'config.json'), path.join(dir, 'config.json'));
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  }
}

describe('dtype: weights held in 16 and 8 bits (issue 15)', function () {
  let tmp: string | undefined;
  const savedKernels = kernelsEnabled();
  const savedBeta = process.env.MIXINPUTS_BETA;

  before(async function () {
    if (!fixturesRoot) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    delete process.env.MIXINPUTS_BETA;
    await initBackend({ backend: 'wasm' });
    tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-dtype-'));
    for (const name of FIXTURES)
      writeRounded(path.join(fixturesRoot!, name), path.join(tmp, `${name}-bf16`), path.join(tmp, `${name}-rounded`));
  });
  after(() => {
    setKernelsEnabled(savedKernels);
    if (savedBeta !== undefined) process.env.MIXINPUTS_BETA = savedBeta;
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  for (const kernels of [true, false]) {
    describe(`bf16 kept equals f32 on the same rounded weights (kernels ${kernels ? 'on' : 'off'})`, function () {
      before(() => setKernelsEnabled(kernels));
      after(() => setKernelsEnabled(savedKernels));
      for (const name of FIXTURES) {
        it(`${name}: logits ≤ 1e-5 × scale, greedy tokens and MoI trajectories equal`, async function () {
          const ref = readReference(path.join(fixturesRoot!, name));
          // (auto keeps bf16 with the kernels on; with them off it would widen, so ask for bf16)
          const kept = await Engine.load(path.join(tmp!, `${name}-bf16`), {
            backend: 'wasm',
            ...(kernels ? {} : { dtype: 'bf16' as const }),
          });
          const wide = await Engine.load(path.join(tmp!, `${name}-rounded`), { backend: 'wasm', dtype: 'f32' });
          try {
            assert.equal(kept.loaded.dtype, 'bf16');
            assert.match(kept.loaded.dtypeNote, /^bf16 checkpoint kept in 16 bits/);
            assert.equal(wide.loaded.dtype, 'f32');
            let worst = 0;
            for (const c of ref.cases) {
              const a = logitsOf(kept, c.input_ids);
              const b = logitsOf(wide, c.input_ids);
              for (let t = 0; t < b.length; t++)
                worst = Math.max(worst, maxAbsDiff(a[t], b[t]) / Math.max(1, maxAbs(b[t])));
              const greedy: GenerateRequest = {
                promptIds: c.input_ids,
                maxTokens: c.greedy.n,
                sampling: { temperature: 0 },
                ignoreEos: true,
                mix: { mode: 'standard' },
              };
              assert.deepEqual(
                await tokensOf(kept, greedy),
                await tokensOf(wide, greedy),
                `${name} ${c.name}: greedy tokens`,
              );
            }
            assert.ok(worst <= 1e-5, `${name}: logits differ by ${worst.toExponential(2)} × scale > 1e-5`);
            for (const t of ref.moi) {
              const r: GenerateRequest = {
                promptIds: t.input_ids,
                maxTokens: t.tokens.length,
                sampling: { temperature: 0 },
                ignoreEos: true,
                mix: { mode: t.mode, beta: t.beta },
              };
              if (t.mode === 'moi') {
                assert.deepEqual(
                  await tokensOf(kept, r),
                  await tokensOf(wide, r),
                  `${name}: moi β=${t.beta} trajectory`,
                );
                continue;
              }
              // direct has no anchor on the sampled token: float32 rounding grows ~4× a step, so (as in
              // moi.test.ts) it must agree up to the float32 horizon: the first step where the same f32
              // weights on wasm and on cpu part by more than 1e-5 × scale.
              const a = await traced(kept, r);
              const b = await traced(wide, r);
              const cpu = await Engine.load(path.join(tmp!, `${name}-rounded`), { backend: 'cpu', dtype: 'f32' });
              let c: Awaited<ReturnType<typeof traced>>;
              try {
                c = await traced(cpu, r);
              } finally {
                cpu.dispose();
                await initBackend({ backend: 'wasm' });
              }
              let h = 0;
              while (
                h < t.tokens.length &&
                maxAbsDiff(b.stepLogits[h], c.stepLogits[h]) <= 1e-5 * Math.max(1, maxAbs(b.stepLogits[h]))
              )
                h++;
              assert.ok(h >= 1, `${name}: direct float32 horizon is 0 steps`);
              // within it, the float32 engine tolerance of shared/README (1e-4 × scale), as moi.test.ts
              // holds direct trajectories to the reference (here the unfolded norms and the folded ones
              // round differently, and the difference grows as fast as wasm vs cpu)
              for (let s = 0; s < h; s++) {
                const d = maxAbsDiff(a.stepLogits[s], b.stepLogits[s]) / Math.max(1, maxAbs(b.stepLogits[s]));
                assert.ok(d <= 1e-4, `${name} direct step ${s}: logits differ by ${d.toExponential(2)} × scale`);
              }
              assert.deepEqual(
                a.tokens.slice(0, h),
                b.tokens.slice(0, h),
                `${name}: direct trajectory within its float32 horizon (${h} steps)`,
              );
            }
          } finally {
            kept.dispose();
            wide.dispose();
          }
        });
      }
    });
  }

  describe('q8 on the real stories260K', function () {
    const dir = () => path.join(fixturesRoot!, 'stories260K');

    /**
     * The relative logit error bound, from the quantization alone. A Q8_0 weight is off by at most
     * d/2 (its block's scale), so a row of W is off by at most e = √(Σ_blocks n_b (d_b/2)²) in L2,
     * and x·W_row by at most ‖x‖·e: relative to ‖x‖·‖W_row‖, δ = e / ‖W_row‖ (worst row, per matrix).
     * Each matmul also rounds its input to 16 bits per block of 32 (roundActivations16: an element
     * moves by at most max|block|/65534, a row by at most δx = √32/65534 of its L2 norm), so a
     * matmul stage is off by at most (1 + δ)(1 + δx) − 1; the embedding lookup by δ alone.
     * Propagated loosely, to first order with unit gain per stage: the relative errors of the stages
     * a token's logits pass through add up (the embedding row, then q/k/v, o, gate/up and down of
     * every layer, then the head), and the logits' error is that sum times their scale (max |logit|).
     */
    function relativeBound(): { bound: number; perMatrix: Map<string, number> } {
      const f = SafetensorsFile.open(path.join(dir(), 'model.safetensors'));
      const perMatrix = new Map<string, number>();
      try {
        for (const [name, info] of f.tensors) {
          if (info.shape.length !== 2) continue;
          const [R, C] = info.shape;
          const x = f.readFloat32(name);
          const { d } = quantizeQ8(x, R, C);
          const nb = Math.ceil(C / Q8_BLOCK);
          let worst = 0;
          for (let r = 0; r < R; r++) {
            let e2 = 0;
            let w2 = 0;
            for (let b = 0; b < nb; b++)
              e2 += (Math.min(C, (b + 1) * Q8_BLOCK) - b * Q8_BLOCK) * (d[r * nb + b] / 2) ** 2;
            for (let c = 0; c < C; c++) w2 += x[r * C + c] ** 2;
            if (w2 > 0) worst = Math.max(worst, Math.sqrt(e2 / w2));
          }
          perMatrix.set(name, worst);
        }
      } finally {
        f.close();
      }
      const dx = Math.sqrt(32) / 65534;
      const lookup = (n: string) => {
        const v = perMatrix.get(n);
        assert.ok(v !== undefined, `no matrix ${n}`);
        return v;
      };
      const at = (n: string) => (1 + lookup(n)) * (1 + dx) - 1;
      const config = JSON.parse(readFileSync(path.join(dir(), 'config.json'), 'utf8')) as {
        num_hidden_layers: number;
        tie_word_embeddings: boolean;
      };
      let bound =
        lookup('model.embed_tokens.weight') +
        (config.tie_word_embeddings ? at('model.embed_tokens.weight') : at('lm_head.weight'));
      for (let i = 0; i < config.num_hidden_layers; i++) {
        const p = `model.layers.${i}.`;
        bound += Math.max(
          at(`${p}self_attn.q_proj.weight`),
          at(`${p}self_attn.k_proj.weight`),
          at(`${p}self_attn.v_proj.weight`),
        );
        bound += at(`${p}self_attn.o_proj.weight`);
        bound += Math.max(at(`${p}mlp.gate_proj.weight`), at(`${p}mlp.up_proj.weight`));
        bound += at(`${p}mlp.down_proj.weight`);
      }
      return { bound, perMatrix };
    }

    it('logit error, greedy agreement and held-text perplexity within the quantization bound (figures printed)', async function () {
      const ref = readReference(dir());
      const { bound } = relativeBound();
      const f32 = await Engine.load(dir(), { backend: 'wasm' });
      const q8 = await Engine.load(dir(), { backend: 'wasm', dtype: 'q8' });
      try {
        assert.equal(q8.loaded.dtype, 'q8');
        assert.match(q8.loaded.dtypeNote, /Q8_0, blocks of 32/);
        assert.ok(
          q8.loaded.weightBytes < 0.35 * f32.loaded.weightBytes,
          `q8 holds ${q8.loaded.weightBytes} bytes (f32: ${f32.loaded.weightBytes})`,
        );

        // 1. logits over the reference prompts and their 48-token f32 greedy continuations
        const rel: number[] = [];
        let agreeing = 0;
        let prefix = -1;
        for (const c of ref.cases) {
          const greedy: GenerateRequest = {
            promptIds: c.input_ids,
            maxTokens: 48,
            sampling: { temperature: 0 },
            ignoreEos: true,
            mix: { mode: 'standard' },
          };
          const tA = await tokensOf(f32, greedy);
          const tB = await tokensOf(q8, greedy);
          const seq = [...c.input_ids, ...tA];
          const a = logitsOf(f32, seq);
          const b = logitsOf(q8, seq);
          for (let t = 0; t < a.length; t++) {
            const scale = maxAbs(a[t]);
            const r = maxAbsDiff(a[t], b[t]) / scale;
            rel.push(r);
            assert.ok(
              r <= bound,
              `${c.name} position ${t}: relative logit error ${r.toExponential(2)} over the bound ${bound.toExponential(2)}`,
            );
          }
          agreeing = tA.filter((y, i) => tB[i] === y).length;
          prefix = tA.findIndex((y, i) => tB[i] !== y);
          if (prefix < 0) prefix = tA.length;
          else {
            // the first disagreement must be at a step whose f32 top-2 margin is within twice the error bound
            const row = a[c.input_ids.length - 1 + prefix];
            const sorted = Float32Array.from(row).sort().reverse();
            assert.ok(
              sorted[0] - sorted[1] <= 2 * bound * maxAbs(row),
              `greedy parted at step ${prefix} with an f32 margin ${sorted[0] - sorted[1]} over 2 × the bound`,
            );
          }
        }
        const mean = rel.reduce((s, x) => s + x, 0) / rel.length;

        // 2. perplexity of the held text (windows of the context length)
        const text = readFileSync(path.join(import.meta.dirname, 'data', 'held-story.txt'), 'utf8');
        const ids = f32.tokenizer!.encode(text);
        const window = f32.spec.maxPositionEmbeddings;
        const nll = (e: Engine) => {
          let sum = 0;
          let n = 0;
          let slack = 0; // Σ 2·ε_t: |Δ log-softmax| ≤ 2 ‖Δ logits‖∞ per position
          for (let s = 0; s + 1 < ids.length; s += window - 1) {
            const chunk = ids.slice(s, s + window);
            const rows = logitsOf(e, chunk);
            for (let t = 0; t + 1 < chunk.length; t++) {
              const row = rows[t];
              const m = maxAbs(row);
              let z = 0;
              const top = Math.max(...row);
              for (let v = 0; v < row.length; v++) z += Math.exp(row[v] - top);
              sum += top + Math.log(z) - row[chunk[t + 1]];
              slack += 2 * bound * m;
              n++;
            }
          }
          return { mean: sum / n, n, slack: slack / n };
        };
        const pa = nll(f32);
        const pb = nll(q8);
        const pplA = Math.exp(pa.mean);
        const pplB = Math.exp(pb.mean);
        const dppl = (pplB - pplA) / pplA;
        console.log(
          `      [q8 stories260K] logit error vs f32 (× max|logit|): max ${Math.max(...rel).toExponential(2)}, mean ${mean.toExponential(2)} ` +
            `over ${rel.length} positions (derived bound ${bound.toExponential(2)}); greedy: ${agreeing} of the first 48 tokens agree ` +
            `(first ${prefix} identical); held text (${pa.n} tokens): perplexity f32 ${pplA.toFixed(4)}, q8 ${pplB.toFixed(4)} (${(100 * dppl).toFixed(3)}%)`,
        );
        assert.ok(
          Math.abs(pb.mean - pa.mean) <= pa.slack,
          `Δ mean NLL ${Math.abs(pb.mean - pa.mean)} over the bound ${pa.slack}`,
        );
        assert.ok(Math.abs(dppl) < 0.01, `q8 perplexity moves by ${(100 * dppl).toFixed(3)}% (issue 15: under 1%)`);
      } finally {
        f32.dispose();
        q8.dispose();
      }
    });
  });
});
