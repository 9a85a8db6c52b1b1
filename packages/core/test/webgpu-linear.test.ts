/**
 * The WGSL linear layers (src/kernels/webgpu/linear.ts) on the local adapter (Mesa's lavapipe
 * here): GEMV and tiled GEMM, f32 and f16 storage, with every epilogue (fused RMSNorm, bias,
 * SwiGLU / GeGLU(tanh) pairs, soft-cap, residual add, row maps), over odd sizes, against a
 * float64 transcription of the composite (rmsNorm, then x·Wᵀ, …) on the same stored weights.
 */
import {
  autoSplitK,
  gemvGroups,
  gemmGroups,
  gemmKernel,
  gemvKernel,
  linearKernels,
  padK,
  splitScratchWords,
  type Act,
  type LinearShape,
} from '../src/index.ts';
import assert from 'node:assert/strict';
import { assertClose, randn, rng, roundF16, runOnce, runtimeOrSkip } from './webgpu-helpers.ts';
import { f32ToF16 } from '../src/index.ts';

interface Case {
  M: number;
  K: number;
  N: number;
  w: 'f32' | 'f16';
  norm?: boolean;
  bias?: boolean;
  pair?: Act;
  softcap?: number;
  residual?: boolean;
  rowMap?: boolean;
  splitK?: number;
}

function gelu(g: number): number {
  return 0.5 * g * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (g + 0.044715 * g ** 3)));
}

/** float64: y[m, j] = epilogue(Σ_k x̂[m, k] W[j, k]), x̂ = rmsNorm(x)·w_norm when fused. */
function reference(
  c: Case,
  x: Float32Array,
  W: Float32Array,
  nw: Float32Array,
  bias: Float32Array,
  y0: Float32Array,
  xs: number,
  ys: number,
  xRows: number[],
  yRows: number[],
): Float64Array {
  const out = Float64Array.from(y0);
  const P = c.pair ? 2 : 1;
  for (let m = 0; m < c.M; m++) {
    const xr = xRows[m];
    let inv = 1;
    if (c.norm) {
      let ss = 0;
      for (let k = 0; k < c.K; k++) ss += x[xr * xs + k] ** 2;
      inv = 1 / Math.sqrt(ss / c.K + 1e-5);
    }
    for (let j = 0; j < c.N; j++) {
      const v: number[] = [];
      for (let p = 0; p < P; p++) {
        let s = 0;
        for (let k = 0; k < c.K; k++) s += x[xr * xs + k] * inv * (c.norm ? nw[k] : 1) * W[(j + p * c.N) * c.K + k];
        if (c.bias) s += bias[j + p * c.N];
        v.push(s);
      }
      let g = v[0];
      if (c.pair) g = (c.pair === 'silu' ? g / (1 + Math.exp(-g)) : gelu(g)) * v[1];
      if (c.softcap) g = Math.tanh(g / c.softcap) * c.softcap;
      const o = yRows[m] * ys + j;
      out[o] = c.residual ? out[o] + g : g;
    }
  }
  return out;
}

async function check(ctx: Mocha.Context, c: Case, kind: 'gemv' | 'gemm' | 'split', seed: number): Promise<void> {
  const r = await runtimeOrSkip(ctx);
  const gen = rng(seed);
  const KP = padK(c.K);
  const P = c.pair ? 2 : 1;
  const xs = KP + 8; // a wider x row than KP, as a plan's activation buffers may have
  const xRowsN = c.rowMap ? c.M + 3 : c.M;
  const ys = c.N + 5;
  const yRowsN = c.rowMap ? c.M + 2 : c.M;
  const xRows = Array.from({ length: c.M }, (_, m) => (c.rowMap ? xRowsN - 1 - m : m));
  const yRows = Array.from({ length: c.M }, (_, m) => (c.rowMap ? (m * 3 + 1) % yRowsN : m));
  const x = new Float32Array(xRowsN * xs);
  for (let m = 0; m < xRowsN; m++) x.set(randn(c.K, gen), m * xs);
  let W = randn(P * c.N * c.K, gen, 0.5);
  if (c.w === 'f16') W = roundF16(W);
  const nw = randn(c.K, gen, 1);
  const bias = randn(P * c.N, gen, 0.3);
  const y0 = randn(yRowsN * ys, gen);
  // W rows padded to KP with zeros
  const Wp = new Float32Array(P * c.N * KP);
  for (let j = 0; j < P * c.N; j++) Wp.set(W.subarray(j * c.K, (j + 1) * c.K), j * KP);
  const nwp = new Float32Array(KP);
  nwp.set(nw);
  const shape: LinearShape = {
    M: c.M,
    K: c.K,
    N: c.N,
    w: c.w,
    xStride: xs,
    yStride: ys,
    norm: c.norm ? { eps: 1e-5 } : null,
    bias: c.bias,
    pair: c.pair ?? null,
    softcap: c.softcap ?? null,
    residual: c.residual,
    rowMap: c.rowMap ? { xRowAt: 0, yRowAt: c.M } : null,
    splitK: c.splitK,
  };
  const inputs: Record<string, Float32Array | Uint32Array | Uint16Array> = {
    x,
    w: c.w === 'f16' ? f32ToF16(Wp) : Wp,
    y: y0,
  };
  if (c.norm) inputs.nw = nwp;
  if (c.bias) inputs.bias = bias;
  if (c.rowMap) inputs.step = Uint32Array.from([...xRows, ...yRows]);
  const want = reference(c, x, W, nw, bias, y0, xs, ys, xRows, yRows);
  if (kind === 'split') {
    // the partial sums, then the reduction with the epilogue: two dispatches over one scratch
    const [partial, reduce] = linearKernels(shape);
    const bufs: Record<string, GPUBuffer> = { part: r.buffer('part', splitScratchWords(shape) * 4) };
    for (const [k, v] of Object.entries(inputs)) bufs[k] = r.upload(k, v);
    const step = r.begin('split');
    const made: GPUBuffer[] = [];
    for (const d of [partial, reduce]) {
      const p = await r.pipeline(d.kernel);
      const dims = r.dimsBuffer(d.kernel);
      made.push(dims);
      const g = typeof d.groups === 'number' ? [d.groups, 1] : d.groups;
      step.dispatch(p, r.bindGroup(d.kernel, p, { ...bufs, dims }), g[0], g[1]);
    }
    step.finish();
    const got = new Float32Array(await r.readBuffer(bufs.y), 0, yRowsN * ys);
    for (const b of [...Object.values(bufs), ...made]) b.destroy();
    assertClose(got, want, 2e-5, `${partial.kernel.label} split ${c.splitK}`);
    return;
  }
  const kernel = kind === 'gemv' ? gemvKernel(shape) : gemmKernel(shape);
  const out = await runOnce(r, kernel, inputs, kind === 'gemv' ? gemvGroups(shape) : gemmGroups(shape), ['y']);
  const got = new Float32Array(out.y, 0, yRowsN * ys);
  assertClose(got, want, 2e-5, `${kernel.label}`);
}

describe('webgpu: linear kernels (GEMV, tiled GEMM) against float64', function () {
  this.timeout(300_000);
  const cases: Case[] = [
    { M: 1, K: 37, N: 29, w: 'f32' },
    { M: 1, K: 37, N: 29, w: 'f16' },
    { M: 3, K: 64, N: 45, w: 'f32', norm: true, bias: true },
    { M: 2, K: 101, N: 33, w: 'f16', norm: true },
    { M: 5, K: 40, N: 17, w: 'f32', pair: 'silu', norm: true },
    { M: 1, K: 200, N: 23, w: 'f16', pair: 'gelu_tanh', bias: true },
    { M: 8, K: 24, N: 70, w: 'f32', residual: true },
    { M: 1, K: 48, N: 131, w: 'f32', norm: true, softcap: 2.5 },
    { M: 1, K: 48, N: 61, w: 'f16', norm: true, rowMap: true },
  ];
  for (const [i, c] of cases.entries()) {
    it(`gemv M${c.M} K${c.K} N${c.N} ${c.w}${c.norm ? ' norm' : ''}${c.bias ? ' bias' : ''}${c.pair ? ` ${c.pair}` : ''}${c.softcap ? ' softcap' : ''}${c.residual ? ' residual' : ''}${c.rowMap ? ' rowmap' : ''}`, async function () {
      await check(this, c, 'gemv', 100 + i);
    });
  }
  const splits: Case[] = [
    { M: 1, K: 2000, N: 9, w: 'f16', norm: true, splitK: 3 },
    { M: 3, K: 530, N: 21, w: 'f32', pair: 'silu', bias: true, norm: true, splitK: 2 },
    { M: 2, K: 333, N: 17, w: 'f32', residual: true, rowMap: true, softcap: 4, splitK: 5 },
  ];
  for (const [i, c] of splits.entries()) {
    it(`gemv split-K ${c.splitK}: M${c.M} K${c.K} N${c.N} ${c.w}${c.norm ? ' norm' : ''}${c.bias ? ' bias' : ''}${c.pair ? ` ${c.pair}` : ''}${c.softcap ? ' softcap' : ''}${c.residual ? ' residual' : ''}${c.rowMap ? ' rowmap' : ''}`, async function () {
      await check(this, c, 'split', 300 + i);
    });
  }
  it('autoSplitK splits only narrow outputs with a long K', () => {
    const shape = (N: number, K: number): LinearShape => ({ M: 1, K, N, w: 'f16', xStride: padK(K), yStride: N });
    assert.equal(autoSplitK(shape(576, 576)), 1, 'SmolLM2 o_proj: K too short');
    assert.equal(autoSplitK(shape(49152, 576)), 1, 'a head fills the GPU');
    assert.equal(autoSplitK(shape(3584, 18944)), 2, 'Qwen2.5-7B down_proj: 896 groups, long K');
    assert.equal(autoSplitK(shape(64, 8192)), 4, 'narrow and long: capped by K per slice');
    assert.equal(autoSplitK({ ...shape(64, 8192), M: 16 }), 1, 'the GEMM never splits');
  });

  const gemm: Case[] = [
    { M: 13, K: 37, N: 29, w: 'f32' },
    { M: 70, K: 45, N: 130, w: 'f32', norm: true, bias: true },
    { M: 33, K: 51, N: 66, w: 'f16', norm: true },
    { M: 65, K: 24, N: 20, w: 'f16', pair: 'silu', norm: true, bias: true },
    { M: 9, K: 72, N: 40, w: 'f32', pair: 'gelu_tanh', residual: true },
    { M: 17, K: 16, N: 9, w: 'f32', softcap: 3, rowMap: true },
  ];
  for (const [i, c] of gemm.entries()) {
    it(`gemm M${c.M} K${c.K} N${c.N} ${c.w}${c.norm ? ' norm' : ''}${c.bias ? ' bias' : ''}${c.pair ? ` ${c.pair}` : ''}${c.softcap ? ' softcap' : ''}${c.residual ? ' residual' : ''}${c.rowMap ? ' rowmap' : ''}`, async function () {
      await check(this, c, 'gemm', 200 + i);
    });
  }
});
