/**
 * The WGSL kernels of one layer (src/kernels/webgpu: norm, gather, rope, attention) on the local
 * adapter (lavapipe here), over odd sizes, each against its composite: RMSNorm + residual against a
 * float64 transcription; the gather against the table rows; q/k norm + RoPE + the KV append against
 * @moi/core's tfjs ops (rmsNorm, ropeTables, applyRope) for every rope scaling the models use, full
 * and partial rotary; decode and prefill attention against a float64 softmax over the positions a
 * query may see (GQA, sliding windows, rings, soft-cap, contexts past one 256-slot chunk).
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  applyRope,
  attentionKernel,
  f32ToF16,
  gatherGroups,
  gatherKernel,
  initBackend,
  normKernel,
  padK,
  rmsNorm,
  ropeKernel,
  ropeTable,
  ropeTables,
  type RopeSpec,
} from '../src/index.ts';
import { assertClose, randn, rng, roundF16, runOnce, runtimeOrSkip } from './webgpu-helpers.ts';

describe('webgpu: layer kernels against their composites', function () {
  this.timeout(300_000);

  before(async () => {
    await initBackend({ backend: 'cpu' });
  });
  after(async () => {
    await initBackend({ backend: 'wasm' });
  });

  for (const residual of [true, false]) {
    it(`rmsnorm${residual ? ' + residual' : ''}: M 3, H 45 (float64)`, async function () {
      const r = await runtimeOrSkip(this);
      const M = 3,
        H = 45,
        S = 48;
      const g = rng(11);
      const a = randn(M * S, g, 3);
      const w = randn(H, g);
      const h0 = randn(M * S, g);
      const out = await runOnce(
        r,
        normKernel({ M, H, eps: 1e-6, aStride: S, hStride: S, residual }),
        { a, nw: w, h: h0 },
        M,
        ['h'],
      );
      const got = new Float32Array(out.h, 0, M * S);
      const want = Float64Array.from(h0);
      for (let m = 0; m < M; m++) {
        let ss = 0;
        for (let k = 0; k < H; k++) ss += a[m * S + k] ** 2;
        const inv = 1 / Math.sqrt(ss / H + 1e-6);
        for (let k = 0; k < H; k++) want[m * S + k] = (residual ? h0[m * S + k] : 0) + a[m * S + k] * inv * w[k];
      }
      assertClose(got, want, 1e-6, 'rmsnorm');
    });
  }

  for (const dtype of ['f32', 'f16'] as const) {
    it(`gather (${dtype}, two blocks, scaled, marks prompt ids in the penalty state)`, async function () {
      const r = await runtimeOrSkip(this);
      const V = 23,
        H = 13,
        HP = padK(H),
        M = 4,
        B = 2;
      const g = rng(5);
      let table = randn(V * H, g);
      if (dtype === 'f16') table = roundF16(table);
      const padded = new Float32Array(V * HP);
      for (let v = 0; v < V; v++) padded.set(table.subarray(v * H, (v + 1) * H), v * HP);
      const blockRows = 16;
      const embed = { V, H, dtype, blockRows };
      const ids = [22, 0, 17, 17];
      const rows = [1, 1, 0, 1];
      const step = Uint32Array.from([...ids, ...rows]);
      const shape = { M, embed, scale: 2.5, hStride: 16, idsAt: 0, rowsAt: M, penalties: true };
      const block = (r0: number, n: number) =>
        dtype === 'f32' ? padded.slice(r0 * HP, (r0 + n) * HP) : f32ToF16(padded.slice(r0 * HP, (r0 + n) * HP));
      const out = await runOnce(
        r,
        gatherKernel(shape),
        { step, h: M * 16 * 4, pen: B * V * 4, e0: block(0, 16), e1: block(16, V - 16) },
        gatherGroups(shape),
        ['h', 'pen'],
      );
      const h = new Float32Array(out.h);
      for (let m = 0; m < M; m++) {
        const want = Array.from(table.subarray(ids[m] * H, (ids[m] + 1) * H), (v) => Math.fround(v * 2.5));
        assert.deepEqual(Array.from(h.subarray(m * 16, m * 16 + H)), want, `row ${m}`);
      }
      const pen = new Uint32Array(out.pen);
      const marked = [...pen.keys()].filter((i) => pen[i] !== 0).map((i) => [Math.floor(i / V), i % V]);
      assert.deepEqual(marked, [
        [0, 17],
        [1, 0],
        [1, 17],
        [1, 22],
      ]);
      assert.ok(marked.every(([b, v]) => pen[b * V + v] === 0x80000000));
    });
  }

  // ---- rope + KV append
  interface RopeCase {
    label: string;
    D: number;
    rot: number;
    nH: number;
    nKV: number;
    qkNorm: boolean;
    spec: RopeSpec;
    S: number;
  }
  const ropeCases: RopeCase[] = [
    {
      label: 'default, full rotary',
      D: 16,
      rot: 16,
      nH: 4,
      nKV: 2,
      qkNorm: false,
      spec: { dim: 16, base: 10000 },
      S: 40,
    },
    {
      label: 'partial rotary (rot 12 of 20), q/k norm',
      D: 20,
      rot: 12,
      nH: 3,
      nKV: 1,
      qkNorm: true,
      spec: { dim: 12, base: 500 },
      S: 40,
    },
    {
      label: 'linear scaling',
      D: 8,
      rot: 8,
      nH: 2,
      nKV: 2,
      qkNorm: true,
      spec: { dim: 8, base: 10000, scaling: { rope_type: 'linear', factor: 4 } },
      S: 40,
    },
    {
      label: 'llama3 scaling',
      D: 32,
      rot: 32,
      nH: 4,
      nKV: 1,
      qkNorm: false,
      S: 40,
      spec: {
        dim: 32,
        base: 500000,
        scaling: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8,
        },
      },
    },
    {
      label: 'dynamic (NTK) within max positions, ring of 7 slots',
      D: 8,
      rot: 8,
      nH: 2,
      nKV: 1,
      qkNorm: false,
      spec: { dim: 8, base: 10000, scaling: { rope_type: 'dynamic', factor: 2 }, maxPositionEmbeddings: 40 },
      S: 7,
    },
  ];
  for (const c of ropeCases) {
    it(`rope + append: ${c.label}`, async function () {
      const r = await runtimeOrSkip(this);
      const P = 40; // table positions (the plan's capacity)
      const M = 3,
        B = 2;
      const { D, nH, nKV, S } = c;
      const heads = nH + 2 * nKV;
      const g = rng(D * 7 + nH);
      const qkv = randn(M * heads * D, g, 2);
      const nw = randn(2 * D, g);
      const tokRows = [1, 0, 1];
      const pos = [33, 5, 34];
      const step = Uint32Array.from([...tokRows, ...pos]);
      const scale = 0.3;
      const kernel = ropeKernel(
        {
          M,
          D,
          nH,
          nKV,
          rot: c.rot,
          S,
          qkNorm: c.qkNorm ? { eps: 1e-6 } : null,
          qScale: scale,
          qkvStride: heads * D,
          qStride: nH * D,
          rowsAt: 0,
          posAt: M,
        },
        P,
      );
      const kc0 = randn(B * nKV * S * D, g);
      const inputs: Record<string, Float32Array | Uint32Array> = {
        qkv,
        tab: ropeTable(c.spec, P),
        step,
        q: new Float32Array(M * nH * D),
        kc: kc0,
        vc: new Float32Array(B * nKV * S * D),
        slots: new Uint32Array(B * S),
      };
      if (c.qkNorm) inputs.nw = nw;
      const out = await runOnce(r, kernel, inputs, [heads, M], ['q', 'kc', 'vc', 'slots']);
      // the composite: per token, heads [1, H, 1, D] → rmsNorm(·)·w → applyRope with ropeTables at its position
      const [q, k, v] = tf.tidy(() => {
        const x = tf.tensor4d(qkv, [M, heads, 1, D]);
        let qh: tf.Tensor = tf.slice(x, [0, 0, 0, 0], [M, nH, 1, D]);
        let kh: tf.Tensor = tf.slice(x, [0, nH, 0, 0], [M, nKV, 1, D]);
        const vh = tf.slice(x, [0, nH + nKV, 0, 0], [M, nKV, 1, D]);
        if (c.qkNorm) {
          qh = rmsNorm(qh, tf.tensor1d(nw.subarray(0, D)), 1e-6);
          kh = rmsNorm(kh, tf.tensor1d(nw.subarray(D)), 1e-6);
        }
        const { cos, sin } = ropeTables(
          c.spec,
          pos.map((p) => [p]),
        );
        return [tf.mul(applyRope(qh as tf.Tensor4D, cos, sin), scale), applyRope(kh as tf.Tensor4D, cos, sin), vh];
      });
      const qWant = await q.data();
      const kWant = await k.data();
      const vWant = await v.data();
      tf.dispose([q, k, v]);
      assertClose(new Float32Array(out.q, 0, M * nH * D), qWant, 2e-6, 'q');
      const kc = new Float32Array(out.kc, 0, kc0.length);
      const vc = new Float32Array(out.vc, 0, kc0.length);
      const slots = new Uint32Array(out.slots, 0, B * S);
      const kExp = Float32Array.from(kc0);
      const vExp = new Float32Array(kc0.length);
      const sExp = new Uint32Array(B * S);
      for (let m = 0; m < M; m++) {
        const slot = pos[m] % S;
        sExp[tokRows[m] * S + slot] = pos[m] + 1;
        for (let h = 0; h < nKV; h++) {
          const o = ((tokRows[m] * nKV + h) * S + slot) * D;
          kExp.set(kWant.subarray((m * nKV + h) * D, (m * nKV + h + 1) * D), o);
          vExp.set(vWant.subarray((m * nKV + h) * D, (m * nKV + h + 1) * D), o);
        }
      }
      assertClose(kc, kExp, 2e-6, 'k in the cache (the other slots untouched)');
      assert.deepEqual(Array.from(vc), Array.from(vExp), 'v copied into the cache');
      assert.deepEqual(Array.from(slots), Array.from(sExp), 'slot positions');
    });
  }

  // ---- attention
  interface AttnCase {
    label: string;
    D: number;
    nH: number;
    nKV: number;
    S: number;
    window: number | null;
    softcap: number | null;
    rows: number[];
    qpos: number[];
    written: number[];
    ring: boolean;
  }
  const attnCases: AttnCase[] = [
    {
      label: 'decode, GQA 6/2, D 16',
      D: 16,
      nH: 6,
      nKV: 2,
      S: 40,
      window: null,
      softcap: null,
      rows: [0, 1],
      qpos: [12, 30],
      written: [13, 31],
      ring: false,
    },
    {
      label: 'decode past one chunk (300 slots), soft-cap',
      D: 12,
      nH: 2,
      nKV: 1,
      S: 320,
      window: null,
      softcap: 5,
      rows: [0],
      qpos: [299],
      written: [300],
      ring: false,
    },
    {
      label: 'sliding window 5 on a ring of 9',
      D: 8,
      nH: 4,
      nKV: 4,
      S: 9,
      window: 5,
      softcap: null,
      rows: [1, 0],
      qpos: [20, 3],
      written: [4, 21],
      ring: true,
    },
    {
      label: 'prefill: 5 causal queries of one row, window 4, ring of 8',
      D: 20,
      nH: 3,
      nKV: 1,
      S: 8,
      window: 4,
      softcap: 2,
      rows: [0, 0, 0, 0, 0],
      qpos: [10, 11, 12, 13, 14],
      written: [15, 0],
      ring: true,
    },
    {
      label: 'prefill from position 0 (empty slots masked)',
      D: 8,
      nH: 2,
      nKV: 2,
      S: 16,
      window: null,
      softcap: null,
      rows: [1, 1, 1],
      qpos: [0, 1, 2],
      written: [0, 3],
      ring: false,
    },
  ];
  for (const c of attnCases) {
    it(`attention: ${c.label}`, async function () {
      const r = await runtimeOrSkip(this);
      const { D, nH, nKV, S } = c;
      const M = c.qpos.length;
      const B = 2;
      const G = nH / nKV;
      const g = rng(D + S);
      const q = randn(M * nH * D, g, 0.7);
      const kc = randn(B * nKV * S * D, g);
      const vc = randn(B * nKV * S * D, g);
      // slot s of row b holds the newest position ≡ s (mod S) written so far (positions 0 … written[b] − 1)
      const slots = new Uint32Array(B * S);
      for (let b = 0; b < B; b++)
        for (let p = 0; p < c.written[b]; p++) if (c.ring || p < S) slots[b * S + (p % S)] = p + 1;
      const step = Uint32Array.from([...c.rows, ...c.qpos]);
      const kernel = attentionKernel({
        M,
        D,
        nH,
        nKV,
        S,
        window: c.window,
        softcap: c.softcap,
        qStride: nH * D,
        oStride: nH * D + 4,
        rowsAt: 0,
        posAt: M,
      });
      const out = await runOnce(r, kernel, { q, kc, vc, slots, step, o: M * (nH * D + 4) * 4 }, [nH, M], ['o']);
      const got = new Float32Array(out.o);
      const want = new Float64Array(got.length);
      for (let m = 0; m < M; m++) {
        const b = c.rows[m];
        const p = c.qpos[m];
        for (let h = 0; h < nH; h++) {
          const kv = Math.floor(h / G);
          const scores: [number, number][] = [];
          for (let s = 0; s < S; s++) {
            const sp = slots[b * S + s] - 1;
            if (sp < 0 || sp > p || (c.window && p - sp >= c.window)) continue;
            let dot = 0;
            for (let d = 0; d < D; d++) dot += q[(m * nH + h) * D + d] * kc[((b * nKV + kv) * S + s) * D + d];
            scores.push([s, c.softcap ? Math.tanh(dot / c.softcap) * c.softcap : dot]);
          }
          assert.ok(scores.length > 0, 'every query sees at least itself');
          const mx = Math.max(...scores.map(([, v]) => v));
          const z = scores.reduce((a, [, v]) => a + Math.exp(v - mx), 0);
          for (let d = 0; d < D; d++) {
            let o = 0;
            for (const [s, v] of scores) o += (Math.exp(v - mx) / z) * vc[((b * nKV + kv) * S + s) * D + d];
            want[m * (nH * D + 4) + h * D + d] = o;
          }
        }
      }
      assertClose(got, want, 2e-6, 'attention');
    });
  }

  it('attention refuses a head_dim that is not a multiple of 4', () => {
    assert.throws(
      () =>
        attentionKernel({
          M: 1,
          D: 10,
          nH: 1,
          nKV: 1,
          S: 4,
          window: null,
          softcap: null,
          qStride: 10,
          oStride: 10,
          rowsAt: 0,
          posAt: 1,
        }),
      /multiple of 4/,
    );
  });
});
