/**
 * The kernels module (src/kernels/wasm): kernels.wat rebuilds from source into a valid module, and
 * each kernel equals its composite fallback and an independent float64 transcription over odd
 * sizes, on the wasm backend, without leaking tensors.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import {
  activeKernels,
  assembleWat,
  decodeAttention,
  kernelsCachePath,
  fusedRmsNorm,
  ropeDecode,
  initBackend,
  initKernels,
  kernelDispatches,
  kernelsBinary,
  kernelsEnabled,
  kernelsSource,
  MASKED,
  positionMask,
  resetKernelDispatches,
  rotateHalfMatrix,
  scalar,
  setKernelsEnabled,
  slotTable,
} from '../src/index.ts';
import { randn, rng, slotsOf } from './kernel-data.ts';

interface AttnCase {
  label: string;
  B: number;
  Bc: number;
  nH: number;
  nKV: number;
  D: number;
  S: number;
  rows: number[];
  qPos: number[];
  slotPos: number[][];
  window: number | null;
  softcap: number | null;
}

/** Float64 transcription of decode attention: softmax over the seen slots of softcap(q·k), ·v. */
function reference(c: AttnCase, q: Float32Array, k: Float32Array, vT: Float32Array): Float64Array {
  const { B, nH, nKV, D, S } = c;
  const G = nH / nKV;
  const out = new Float64Array(B * nH * D);
  for (let b = 0; b < B; b++) {
    const r = c.rows[b];
    const p = c.qPos[b];
    for (let hq = 0; hq < nH; hq++) {
      const h = Math.floor(hq / G);
      const scores: number[] = [];
      for (let j = 0; j < S; j++) {
        const pos = c.slotPos[r][j];
        if (!(pos >= 0 && pos <= p && (!c.window || p - pos < c.window))) {
          scores.push(-Infinity);
          continue;
        }
        let s = 0;
        for (let d = 0; d < D; d++) s += q[(b * nH + hq) * D + d] * k[((r * nKV + h) * S + j) * D + d];
        if (c.softcap) s = c.softcap * Math.tanh(s / c.softcap);
        scores.push(s);
      }
      const m = Math.max(...scores);
      const e = scores.map((s) => (s === -Infinity ? 0 : Math.exp(s - m)));
      const sum = e.reduce((a, x) => a + x, 0);
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let j = 0; j < S; j++) acc += e[j] * vT[((r * nKV + h) * D + d) * S + j];
        out[(b * nH + hq) * D + d] = acc / sum;
      }
    }
  }
  return out;
}

/** Slot positions of a row holding `n` tokens: plain (slot = position) or rotating over S slots. */
function makeCase(
  label: string,
  o: Omit<AttnCase, 'label' | 'slotPos' | 'qPos' | 'rows'> & { tokens: number[]; rows?: number[]; rotating?: boolean },
): AttnCase {
  const rows = o.rows ?? Array.from({ length: o.B }, (_, i) => i);
  const held = Array.from({ length: o.Bc }, (_, r) => o.tokens[r] ?? 1);
  return {
    label,
    B: o.B,
    Bc: o.Bc,
    nH: o.nH,
    nKV: o.nKV,
    D: o.D,
    S: o.S,
    rows,
    window: o.window,
    softcap: o.softcap,
    qPos: rows.map((r) => held[r] - 1),
    slotPos: held.map((n) => slotsOf(n, o.S, !!o.rotating)),
  };
}

const CASES: AttnCase[] = [
  makeCase('D64 MHA 1 kv head, S 5', {
    B: 1,
    Bc: 1,
    nH: 1,
    nKV: 1,
    D: 64,
    S: 5,
    tokens: [5],
    window: null,
    softcap: null,
  }),
  makeCase('D64 GQA 3 kv heads × 3, context 37 of 41', {
    B: 1,
    Bc: 1,
    nH: 9,
    nKV: 3,
    D: 64,
    S: 41,
    tokens: [37],
    window: null,
    softcap: null,
  }),
  makeCase('D80 2 kv × 7, batched rows at 3, 29, 11', {
    B: 3,
    Bc: 3,
    nH: 14,
    nKV: 2,
    D: 80,
    S: 30,
    tokens: [3, 29, 11],
    window: null,
    softcap: null,
  }),
  makeCase('D128 8 kv heads, subset rows [2, 0] of 3', {
    B: 2,
    Bc: 3,
    nH: 8,
    nKV: 8,
    D: 128,
    S: 19,
    tokens: [7, 2, 19],
    rows: [2, 0],
    window: null,
    softcap: null,
  }),
  makeCase('D256 GQA 1 kv × 4, softcap 50', {
    B: 2,
    Bc: 2,
    nH: 4,
    nKV: 1,
    D: 256,
    S: 13,
    tokens: [13, 6],
    window: null,
    softcap: 50,
  }),
  makeCase('D64 window 7 on a rotating buffer of 7, past the window', {
    B: 2,
    Bc: 2,
    nH: 4,
    nKV: 2,
    D: 64,
    S: 7,
    tokens: [23, 4],
    window: 7,
    softcap: null,
    rotating: true,
  }),
  makeCase('D80 window 6 over a full-size buffer of 33, softcap 20', {
    B: 2,
    Bc: 2,
    nH: 6,
    nKV: 3,
    D: 80,
    S: 33,
    tokens: [31, 9],
    window: 6,
    softcap: 20,
  }),
  makeCase('odd head_dim 6 (scalar tails), 5 kv heads', {
    B: 1,
    Bc: 1,
    nH: 10,
    nKV: 5,
    D: 6,
    S: 3,
    tokens: [3],
    window: null,
    softcap: null,
  }),
];

describe('kernels: the WebAssembly module', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
  });

  it('rebuilds from kernels.wat into a valid module that exports each kernel, the same bytes every time', async function () {
    const fresh = await assembleWat(kernelsSource());
    assert.ok(WebAssembly.validate(fresh as BufferSource), 'assembled bytes validate');
    const exports = WebAssembly.Module.exports(new WebAssembly.Module(fresh as BufferSource)).map((e) => e.name);
    assert.deepEqual(exports, [
      'decode_attention',
      'rms_norm',
      'rope',
      'gather_rows',
      'first_above',
      'prefill_attention',
      'prefill_qk',
    ]);
    const imports = WebAssembly.Module.imports(new WebAssembly.Module(fresh as BufferSource));
    assert.deepEqual(
      imports.map((i) => `${i.module}.${i.name}:${i.kind}`),
      ['env.memory:memory'],
      'imports only the backend heap',
    );
    assert.deepEqual(Buffer.from(await kernelsBinary()), Buffer.from(fresh), 'the cached build equals a rebuild');
    assert.deepEqual(readFileSync(kernelsCachePath()), Buffer.from(fresh), 'the disk cache equals a rebuild');
  });

  it('MOI_KERNELS=0 turns the kernels off; on by default', async function () {
    try {
      await initKernels({ MOI_KERNELS: '0' });
      assert.equal(kernelsEnabled(), false);
      assert.equal(activeKernels(), null);
      await initKernels({});
      assert.equal(kernelsEnabled(), true);
      assert.notEqual(activeKernels(), null);
    } finally {
      setKernelsEnabled(true);
    }
  });
});

describe('kernels: decode attention equals the composite and a float64 transcription (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
    setKernelsEnabled(true);
  });
  after(() => setKernelsEnabled(true));

  for (const [i, c] of CASES.entries()) {
    it(c.label, function () {
      const r = rng(100 + i);
      const qd = randn(r, c.B * c.nH * c.D, 0.5);
      const kd = randn(r, c.Bc * c.nKV * c.S * c.D, 0.5);
      const vd = randn(r, c.Bc * c.nKV * c.D * c.S);
      const want = reference(c, qd, kd, vd);
      if (c.softcap) {
        scalar(c.softcap);
        scalar(1 / c.softcap);
      } // the composite's kept constants
      const before = tf.memory().numTensors;
      const q = tf.tensor3d(qd, [c.B, c.nH, c.D]);
      const keys = tf.tensor4d(kd, [c.Bc, c.nKV, c.S, c.D]);
      const valuesT = tf.tensor4d(vd, [c.Bc, c.nKV, c.D, c.S]);
      const run = (on: boolean): Float32Array => {
        setKernelsEnabled(on);
        resetKernelDispatches();
        const out = tf.tidy(() =>
          decodeAttention(q, keys, valuesT, {
            rows: c.rows,
            window: c.window,
            softcap: c.softcap,
            slots: () => slotTable(c.rows, c.qPos, c.slotPos),
            mask: () =>
              positionMask(
                c.qPos.map((p) => [p]),
                c.rows.map((row) => c.slotPos[row]),
                c.window,
              ),
          }),
        );
        assert.equal(kernelDispatches().MoiDecodeAttention ?? 0, on ? 1 : 0, 'dispatched the kernel only when on');
        assert.deepEqual(out.shape, [c.B, c.nH * c.D]);
        const d = out.dataSync() as Float32Array;
        out.dispose();
        return d;
      };
      const kernel = run(true);
      const composite = run(false);
      q.dispose();
      keys.dispose();
      valuesT.dispose();
      assert.equal(tf.memory().numTensors, before, 'no tensors left');
      let worstK = 0;
      let worstC = 0;
      for (let j = 0; j < want.length; j++) {
        worstK = Math.max(worstK, Math.abs(kernel[j] - want[j]));
        worstC = Math.max(worstC, Math.abs(composite[j] - want[j]));
      }
      assert.ok(worstK < 2e-6, `kernel vs float64: ${worstK}`);
      assert.ok(worstC < 2e-6, `composite vs float64: ${worstC}`);
    });
  }

  it('a masked-out slot holding huge values changes nothing (it is skipped, not merely down-weighted)', function () {
    const c = makeCase('masked', { B: 1, Bc: 1, nH: 2, nKV: 1, D: 8, S: 6, tokens: [4], window: null, softcap: null });
    const r = rng(7);
    const kd = randn(r, c.S * c.D);
    const vd = randn(r, c.D * c.S);
    const qd = randn(r, c.nH * c.D);
    const out = (kdata: Float32Array) =>
      tf.tidy(() =>
        Array.from(
          decodeAttention(tf.tensor3d(qd, [1, 2, 8]), tf.tensor4d(kdata, [1, 1, 6, 8]), tf.tensor4d(vd, [1, 1, 8, 6]), {
            rows: [0],
            window: null,
            softcap: null,
            slots: () => slotTable([0], c.qPos, c.slotPos),
            mask: () => positionMask([c.qPos], c.slotPos, null),
          }).dataSync(),
        ),
      );
    const base = out(kd);
    const loud = kd.slice();
    for (let d = 0; d < 8; d++) loud[5 * 8 + d] = 1e4; // slot 5 is empty (−1)
    assert.deepEqual(out(loud), base);
    assert.ok(MASKED < -1e8);
  });

  it('refuses a cache row outside the cache with a typed error', function () {
    const before = tf.memory().numTensors;
    const q = tf.zeros([1, 2, 4]);
    const k = tf.zeros([1, 1, 3, 4]);
    const v = tf.zeros([1, 1, 4, 3]);
    assert.throws(
      () =>
        decodeAttention(q, k, v, {
          rows: [1],
          window: null,
          softcap: null,
          slots: () => slotTable([0], [0], [[0, -1, -1]]),
          mask: () => tf.zeros([1, 1, 1, 3]),
        }),
      (e: Error) => e.name === 'ModelError' && /cache row 1/.test(e.message),
    );
    tf.dispose([q, k, v]);
    assert.equal(tf.memory().numTensors, before);
  });
});

describe('kernels: fused RMSNorm (+ residual, + weight) equals the composite and float64 (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
    scalar(1e-6); // the composite's kept constant
  });
  after(() => setKernelsEnabled(true));

  const cases: { label: string; shape: number[]; residual: boolean; weightLen: number | null }[] = [
    { label: 'H 576, residual, no weight, 3 rows', shape: [3, 576], residual: true, weightLen: null },
    { label: 'H 7 (scalar tail), weight', shape: [2, 7], residual: false, weightLen: 7 },
    {
      label: 'per-head q/k norm: [2, 5 heads, 80] with a [5·80] weight',
      shape: [2, 5, 80],
      residual: false,
      weightLen: 400,
    },
    { label: 'H 256, residual and weight, 1 row', shape: [1, 256], residual: true, weightLen: 256 },
  ];
  for (const [ci, c] of cases.entries()) {
    it(c.label, function () {
      const r = rng(300 + ci);
      const size = c.shape.reduce((a, b) => a * b, 1);
      const H = c.shape[c.shape.length - 1];
      const xd = randn(r, size, 3);
      const rd = randn(r, size, 2);
      const wd = c.weightLen ? randn(r, c.weightLen) : null;
      // float64 transcription
      const wantY = new Float64Array(size);
      const wantSum = new Float64Array(size);
      for (let n = 0; n < size / H; n++) {
        let ss = 0;
        for (let i = 0; i < H; i++) {
          const v = xd[n * H + i] + (c.residual ? rd[n * H + i] : 0);
          wantSum[n * H + i] = v;
          ss += v * v;
        }
        const inv = 1 / Math.sqrt(ss / H + 1e-6);
        for (let i = 0; i < H; i++)
          wantY[n * H + i] = wantSum[n * H + i] * inv * (wd ? wd[(n * H + i) % wd.length] : 1);
      }
      const before = tf.memory().numTensors;
      const x = tf.tensor(xd, c.shape);
      const res = tf.tensor(rd, c.shape);
      const w = wd ? tf.tensor1d(wd) : null;
      for (const on of [true, false]) {
        setKernelsEnabled(on);
        resetKernelDispatches();
        const { y, sum } = fusedRmsNorm(x, 1e-6, { residual: c.residual ? res : undefined, weight: w });
        assert.equal(kernelDispatches().MoiRmsNorm ?? 0, on ? 1 : 0);
        assert.deepEqual(y.shape, c.shape);
        const yd = y.dataSync();
        for (let i = 0; i < size; i++)
          assert.ok(
            Math.abs(yd[i] - wantY[i]) <= 2e-6 * Math.max(1, Math.abs(wantY[i])),
            `${on ? 'kernel' : 'composite'} y[${i}] ${yd[i]} vs ${wantY[i]}`,
          );
        if (c.residual) {
          const sd = sum!.dataSync();
          for (let i = 0; i < size; i++)
            assert.ok(Math.abs(sd[i] - wantSum[i]) <= 1e-6 * Math.max(1, Math.abs(wantSum[i])), `sum[${i}]`);
        } else {
          assert.equal(sum, null);
        }
        tf.dispose([y, sum ?? []].flat());
      }
      tf.dispose([x, res, ...(w ? [w] : [])]);
      assert.equal(tf.memory().numTensors, before, 'no tensors left');
    });
  }
});

describe('kernels: decode RoPE equals the composite bit for bit, and float64 (wasm)', function () {
  before(async () => {
    await initBackend({ backend: 'wasm' });
  });
  after(() => setKernelsEnabled(true));

  for (const [B, heads, D] of [
    [1, 12, 64],
    [3, 5, 80],
    [2, 3, 256],
    [2, 2, 6],
  ]) {
    it(`B ${B}, ${heads} heads, D ${D}, rows at different positions`, function () {
      const r = rng(B * 1000 + D);
      const xd = randn(r, B * heads * D, 2);
      const pos = Array.from({ length: B }, (_, b) => 3 + 17 * b);
      const cd = new Float32Array(B * D);
      const sd = new Float32Array(B * D);
      for (let b = 0; b < B; b++) {
        for (let i = 0; i < D; i++) {
          const f = pos[b] / 10000 ** ((2 * (i % (D / 2))) / D);
          cd[b * D + i] = Math.cos(f);
          sd[b * D + i] = Math.sin(f);
        }
      }
      rotateHalfMatrix(D); // the composite's kept constant
      const before = tf.memory().numTensors;
      const x = tf.tensor3d(xd, [B, heads, D]);
      const cos = tf.tensor3d(cd, [B, 1, D]);
      const sin = tf.tensor3d(sd, [B, 1, D]);
      const got: Float32Array[] = [];
      for (const on of [true, false]) {
        setKernelsEnabled(on);
        resetKernelDispatches();
        const y = ropeDecode(x, cos, sin);
        assert.equal(kernelDispatches().MoiRope ?? 0, on ? 1 : 0);
        got.push(y.dataSync() as Float32Array);
        y.dispose();
      }
      tf.dispose([x, cos, sin]);
      assert.equal(tf.memory().numTensors, before, 'no tensors left');
      assert.deepEqual(got[0], got[1], 'kernel and composite round identically');
      const half = D / 2;
      for (let b = 0; b < B; b++)
        for (let h = 0; h < heads; h++)
          for (let i = 0; i < D; i++) {
            const o = (b * heads + h) * D;
            const rot = i < half ? -xd[o + i + half] : xd[o + i - half];
            const want = xd[o + i] * cd[b * D + i] + rot * sd[b * D + i];
            assert.ok(Math.abs(got[0][o + i] - want) <= 1e-6 * Math.max(1, Math.abs(want)), `[${b},${h},${i}]`);
          }
    });
  }
});
