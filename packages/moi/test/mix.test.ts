import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, sharedDir, SHARED_MISSING, SafetensorsFile, UsageError } from '@moi/core';
import { mixInputs, moiMixer, type MixSettings, type MixDebugResult } from '../src/index.ts';

interface UnitCase {
  case: string;
  logits: number[];
  sampled: number;
  beta: number;
  mode: 'moi' | 'direct';
  ids: number[];
  weights: number[];
  entropy: number;
  mixed_embedding: number[];
}

const S = (
  mode: MixSettings['mode'],
  beta = 1,
  topK: MixSettings['topK'] = 3,
  prior: MixSettings['prior'] = 'raw',
): MixSettings => ({ mode, beta, topK, prior });

/** Plain float64 transcription of the rule, for cases with no fixture (ties broken by lower id). */
function refMix(scores: number[], y: number, s: MixSettings): { ids: number[]; w: number[]; H: number } {
  const order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
  const top = s.topK === 'all' ? order : order.slice(0, s.topK);
  const ids = top.filter((i) => scores[i] > -Infinity || i === y);
  if (!ids.includes(y)) ids.push(y);
  const fin = ids.map((i) => scores[i]).filter((v) => v > -Infinity);
  const m = fin.length ? Math.max(...fin) : 0;
  const e = ids.map((i) => Math.exp(scores[i] - m));
  const z = e.reduce((a, b) => a + b, 0);
  const p = e.map((v) => v / z);
  const n = ids.length;
  const H = n > 1 ? -p.reduce((a, v) => a + (v > 0 ? v * Math.log(v) : 0), 0) / Math.log(n) : 0;
  const w = ids.map((id, k) => {
    const hit = id === y ? 1 : 0;
    if (s.mode === 'moi') return (H * p[k] + (s.beta + 1 - H) * hit) / (s.beta + 1);
    return s.mode === 'direct' ? p[k] : hit;
  });
  return { ids, w, H };
}

function embedOf(E: number[][], ids: number[], w: number[]): number[] {
  return E[0].map((_, j) => ids.reduce((a, id, k) => a + w[k] * E[id][j], 0));
}

function assertClose(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((v, i) =>
    assert.ok(Math.abs(v - expected[i]) <= tol, `${what}[${i}]: ${v} vs ${expected[i]} (tol ${tol})`),
  );
}

/** Candidate id → weight of one row of a debug result. */
function candidates(r: MixDebugResult, row: number): Map<number, number> {
  const ids = (r.candidateIds.arraySync() as number[][])[row];
  const w = (r.weights.arraySync() as number[][])[row];
  const mask = (r.candidateMask.arraySync() as number[][])[row];
  const out = new Map<number, number>();
  ids.forEach((id, k) => {
    if (mask[k]) out.set(id, (out.get(id) ?? 0) + w[k]);
  });
  return out;
}

function disposeResult(r: object): void {
  tf.dispose(Object.values(r) as tf.Tensor[]);
}

/** One row's reference mixing checked against a debug result row. */
function checkRow(
  r: MixDebugResult,
  row: number,
  E: number[][],
  scores: number[],
  y: number,
  s: MixSettings,
  tol = 1e-6,
): void {
  const ref = refMix(scores, y, s);
  const got = candidates(r, row);
  assert.deepEqual(
    [...got.keys()].sort((a, b) => a - b),
    [...ref.ids].sort((a, b) => a - b),
    `row ${row} candidate ids`,
  );
  ref.ids.forEach((id, k) =>
    assert.ok(Math.abs(got.get(id)! - ref.w[k]) <= tol, `row ${row} weight of ${id}: ${got.get(id)} vs ${ref.w[k]}`),
  );
  assert.ok(Math.abs((r.entropy.arraySync() as number[])[row] - ref.H) <= tol, `row ${row} entropy`);
  assert.equal((r.numCandidates.arraySync() as number[])[row], ref.ids.length, `row ${row} numCandidates`);
  const wy = ref.w[ref.ids.indexOf(y)];
  assert.ok(Math.abs((r.weightOnSampled.arraySync() as number[])[row] - wy) <= tol, `row ${row} weightOnSampled`);
  assertClose((r.embeds.arraySync() as number[][])[row], embedOf(E, ref.ids, ref.w), 1e-5, `row ${row} embeds`);
}

// Small vocabulary: V = 6, hidden 4, rows with distinct, non-trivial values.
const E6 = Array.from({ length: 6 }, (_, i) => [1 + i, -0.5 * i, 0.25 * i * i, i % 2 ? 1.5 : -2]);

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`mixInputs on ${backend}`, () => {
    let table6: tf.Tensor2D;
    before(async () => {
      await initBackend({ backend });
      assert.equal(tf.getBackend(), backend);
      table6 = tf.tensor2d(E6);
    });
    after(() => table6.dispose());

    function run(rows: number[][], ys: number[], settings: MixSettings[], processed?: number[][]): MixDebugResult {
      const logits = tf.tensor2d(rows);
      const sampled = tf.tensor1d(ys, 'int32');
      const proc = processed ? tf.tensor2d(processed) : undefined;
      try {
        return mixInputs(
          { logits, processedLogits: proc, sampled, embedTable: table6, settings },
          { returnWeights: true },
        );
      } finally {
        tf.dispose([logits, sampled, ...(proc ? [proc] : [])]);
      }
    }

    it('flat top-3 with y inside: p = 1/3, H = 1, w = 1/6, 2/3, 1/6 (by hand)', () => {
      const r = run([[1, 1, 1, 0, 0, 0]], [1], [S('moi')]);
      const got = candidates(r, 0);
      assert.deepEqual([...got.keys()].sort(), [0, 1, 2]);
      assertClose([got.get(0)!, got.get(1)!, got.get(2)!], [1 / 6, 2 / 3, 1 / 6], 1e-6, 'weights');
      assertClose(r.entropy.arraySync() as number[], [1], 1e-6, 'entropy');
      assertClose(r.weightOnSampled.arraySync() as number[], [2 / 3], 1e-6, 'weightOnSampled');
      const want = E6[0].map((_, j) => E6[0][j] / 6 + (2 / 3) * E6[1][j] + E6[2][j] / 6);
      assertClose((r.embeds.arraySync() as number[][])[0], want, 1e-6, 'embeds');
      disposeResult(r);
    });

    it('peaked top-3 (p = 4/7, 2/7, 1/7) with y at top-1', () => {
      const l = [Math.log(4), Math.log(2), 0, -3, -4, -5];
      const r = run([l], [0], [S('moi', 1)]);
      const p = [4 / 7, 2 / 7, 1 / 7];
      const H = -p.reduce((a, v) => a + v * Math.log(v), 0) / Math.log(3);
      const got = candidates(r, 0);
      assertClose(
        [got.get(0)!, got.get(1)!, got.get(2)!],
        [(H * p[0] + 2 - H) / 2, (H * p[1]) / 2, (H * p[2]) / 2],
        1e-6,
        'weights',
      );
      assertClose(r.entropy.arraySync() as number[], [H], 1e-6, 'entropy');
      disposeResult(r);
    });

    it('y outside the top-3 joins as a 4th candidate and the weights sum to 1', () => {
      const l = [3, 2, 1, 0, -1, -2];
      const r = run([l], [5], [S('moi', 1)]);
      checkRow(r, 0, E6, l, 5, S('moi', 1));
      const w = [...candidates(r, 0).values()];
      assert.ok(Math.abs(w.reduce((a, b) => a + b, 0) - 1) < 1e-6);
      assert.equal((r.numCandidates.arraySync() as number[])[0], 4);
      disposeResult(r);
    });

    it('beta = 1e9 gives E[y] within 1e-6', () => {
      const l = [0.3, 0.2, 0.1, 0, -0.1, -0.2];
      for (const y of [0, 2, 4]) {
        const r = run([l], [y], [S('moi', 1e9)]);
        assertClose((r.embeds.arraySync() as number[][])[0], E6[y], 1e-6, `E[${y}]`);
        disposeResult(r);
      }
    });

    it('direct mode ignores y: the prior mix, the same for any y inside the top-K', () => {
      const l = [2, 1.5, 1, -1, -2, -3];
      const a = run([l, l], [0, 2], [S('direct', 0), S('direct', 0)]);
      const ea = a.embeds.arraySync() as number[][];
      assert.deepEqual(ea[0], ea[1]);
      checkRow(a, 0, E6, l, 0, S('direct'));
      // weightOnSampled is p_y
      const p = [2, 1.5, 1].map((v) => Math.exp(v));
      const z = p[0] + p[1] + p[2];
      assertClose(a.weightOnSampled.arraySync() as number[], [p[0] / z, p[2] / z], 1e-6, 'p_y');
      disposeResult(a);
      // y outside: it is a candidate with its own prior mass
      const b = run([l], [5], [S('direct')]);
      checkRow(b, 0, E6, l, 5, S('direct'));
      disposeResult(b);
    });

    it('standard gives E[y] exactly, weight 1, and still reports the prior entropy', () => {
      const l = [2, 1.5, 1, -1, -2, -3];
      const r = run([l, l], [1, 4], [S('standard'), S('standard', 5, 'all')]);
      const e = r.embeds.arraySync() as number[][];
      assert.deepEqual(e[0], Array.from(new Float32Array(E6[1])));
      assert.deepEqual(e[1], Array.from(new Float32Array(E6[4])));
      assert.deepEqual(r.weightOnSampled.arraySync(), [1, 1]);
      const ref = refMix(l, 1, S('standard'));
      assertClose([(r.entropy.arraySync() as number[])[0]], [ref.H], 1e-6, 'entropy');
      assert.ok(ref.H > 0.5);
      disposeResult(r);
    });

    it("topK 'all' mixes over the whole vocabulary", () => {
      const l = [0.5, -1, 2, 0, 1, -0.5];
      const r = run([l, l], [3, 3], [S('moi', 0.5, 'all'), S('direct', 1, 'all')]);
      checkRow(r, 0, E6, l, 3, S('moi', 0.5, 'all'));
      checkRow(r, 1, E6, l, 3, S('direct', 1, 'all'));
      assert.deepEqual(r.numCandidates.arraySync(), [6, 6]);
      disposeResult(r);
    });

    it("prior 'processed': -Infinity entries are not candidates, y always is", () => {
      const raw = [3, 2, 1, 0, -1, -2];
      // temperature 0.5 then top-2 filtering
      const proc = [6, 4, -Infinity, -Infinity, -Infinity, -Infinity];
      const r = run(
        [raw, raw, raw],
        [1, 3, 0],
        [S('moi', 1, 3, 'processed'), S('moi', 1, 3, 'processed'), S('moi', 1, 'all', 'processed')],
        [proc, proc, proc],
      );
      checkRow(r, 0, E6, proc, 1, S('moi', 1, 3, 'processed'));
      assert.deepEqual([...candidates(r, 0).keys()].sort(), [0, 1]);
      // y = 3 was filtered: still a candidate, with prior 0
      checkRow(r, 1, E6, proc, 3, S('moi', 1, 3, 'processed'));
      assert.deepEqual([...candidates(r, 1).keys()].sort(), [0, 1, 3]);
      checkRow(r, 2, E6, proc, 0, S('moi', 1, 'all', 'processed'));
      assert.deepEqual(r.numCandidates.arraySync(), [2, 3, 2]);
      disposeResult(r);
      // every entry filtered (y too): y is the only candidate, H = 0, h = E[y]
      const none = raw.map(() => -Infinity);
      const q = run(
        [raw, raw],
        [2, 2],
        [S('moi', 1, 3, 'processed'), S('direct', 1, 'all', 'processed')],
        [none, none],
      );
      assert.deepEqual(q.numCandidates.arraySync(), [1, 1]);
      assert.deepEqual(q.entropy.arraySync(), [0, 0]);
      assert.deepEqual(q.weightOnSampled.arraySync(), [1, 1]);
      const e = q.embeds.arraySync() as number[][];
      assertClose(e[0], E6[2], 1e-6, 'row 0');
      assertClose(e[1], E6[2], 1e-6, 'row 1');
      disposeResult(q);
    });

    it('a mixed batch equals each row computed alone', () => {
      const rows = [
        [3, 2, 1, 0, -1, -2],
        [0.1, 0.5, -0.2, 2, 1, 0],
        [1, 2, 3, 4, 5, 6],
        [-1, 0.7, 0.2, 0.1, 3, -2],
        [0.2, 0.1, 0.4, 0.3, 0.6, 0.5],
        [5, -5, 0, 1, 2, -1],
      ];
      const ys = [5, 3, 0, 4, 1, 2];
      const settings = [
        S('moi', 1, 3),
        S('direct', 0, 2),
        S('standard', 1, 4),
        S('moi', 2, 'all'),
        S('moi', 0, 5, 'processed'),
        S('moi', 1e9, 1),
      ];
      const procRows = rows.map((l) => l.map((v, i) => (i % 3 === 2 ? -Infinity : v * 2)));
      const batch = run(rows, ys, settings, procRows);
      const be = batch.embeds.arraySync() as number[][];
      rows.forEach((l, i) => {
        const single = run([l], [ys[i]], [settings[i]], settings[i].prior === 'processed' ? [procRows[i]] : undefined);
        assertClose(be[i], (single.embeds.arraySync() as number[][])[0], 1e-6, `row ${i} embeds`);
        for (const k of ['entropy', 'weightOnSampled', 'numCandidates'] as const) {
          assertClose(
            [(batch[k].arraySync() as number[])[i]],
            single[k].arraySync() as number[],
            1e-6,
            `row ${i} ${k}`,
          );
        }
        const a = candidates(batch, i);
        const b = candidates(single, 0);
        assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `row ${i} ids`);
        for (const [id, w] of b) assert.ok(Math.abs(a.get(id)! - w) < 1e-6, `row ${i} weight ${id}`);
        checkRow(batch, i, E6, settings[i].prior === 'processed' ? procRows[i] : l, ys[i], settings[i]);
        disposeResult(single);
      });
      disposeResult(batch);
    });

    it('reads no tensor back to the host and leaks no tensors over 100 calls', () => {
      // Kernels may look at their own inputs (wasm's gather checks index bounds in its heap);
      // what must not happen is a read by mixInputs itself, which would sync the decode loop.
      const proto = tf.Tensor.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
      const methods = ['dataSync', 'data', 'arraySync', 'array', 'bufferSync', 'buffer'];
      const orig = new Map(methods.map((m) => [m, proto[m]]));
      const logits = tf.tensor2d([
        [3, 2, 1, 0, -1, -2],
        [0, 1, 2, 3, 4, 5],
      ]);
      const proc = tf.tensor2d([
        [3, 2, -Infinity, 0, -1, -2],
        [0, 1, 2, 3, 4, 5],
      ]);
      const sampled = tf.tensor1d([5, 0], 'int32');
      const batches: MixSettings[][] = [
        [S('moi'), S('direct', 0, 2)],
        [S('moi', 1, 'all', 'processed'), S('standard')],
        [S('moi', 1, 'all'), S('direct', 1, 'all')],
      ];
      const reads: string[] = [];
      for (const m of methods)
        proto[m] = function (this: unknown, ...a: unknown[]) {
          reads.push(m);
          return orig.get(m)!.apply(this, a);
        };
      const before = tf.memory().numTensors;
      try {
        for (let i = 0; i < 100; i++) {
          const settings = batches[i % batches.length];
          const args = { logits, processedLogits: proc, sampled, embedTable: table6, settings };
          disposeResult(i % 2 ? mixInputs(args, { returnWeights: true }) : moiMixer.mix(args));
        }
      } finally {
        for (const m of methods) proto[m] = orig.get(m)!;
      }
      assert.deepEqual(reads, [], 'tensor reads inside mixInputs');
      assert.equal(tf.memory().numTensors, before);
      tf.dispose([logits, proc, sampled]);
    });

    it('refuses bad arguments with E_MOI', () => {
      const logits = tf.tensor2d([[1, 2, 3, 4, 5, 6]]);
      const sampled = tf.tensor1d([0], 'int32');
      const before = tf.memory().numTensors;
      const bad = (args: Partial<Parameters<typeof mixInputs>[0]>, re: RegExp) =>
        assert.throws(
          () => mixInputs({ logits, sampled, embedTable: table6, settings: [S('moi')], ...args }),
          (e: unknown) => e instanceof UsageError && e.code === 'E_MOI' && re.test(e.message),
        );
      bad({ settings: [S('moi'), S('moi')] }, /one entry per row/);
      bad({ settings: [S('moi', 1, 7)] }, /topK 7 is larger than the vocabulary \(6\)/);
      bad({ settings: [S('moi', -1)] }, /settings\[0\]\.beta/);
      bad({ settings: [S('moi', 1, 3, 'processed')] }, /processedLogits/);
      bad({ sampled: tf.tensor1d([0, 1], 'int32') }, /sampled/);
      bad({ embedTable: tf.zeros([5, 4]) as tf.Tensor2D }, /embedTable/);
      assert.equal(tf.memory().numTensors, before + 2); // the two tensors built for the bad calls
      tf.dispose([logits, sampled]);
    });
  });
}

describe('mixInputs against the reference fixture (llama moi_unit.json)', () => {
  const shared = sharedDir();
  let cases: UnitCase[] = [];
  let E: number[][] = [];

  before(function () {
    if (!shared) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    const dir = path.join(shared!, 'fixtures', 'llama');
    cases = JSON.parse(readFileSync(path.join(dir, 'moi_unit.json'), 'utf8')).cases;
    const st = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    const info = st.info('model.embed_tokens.weight');
    const flat = st.readFloat32('model.embed_tokens.weight');
    st.close();
    assert.deepEqual(info.shape, [512, 64]);
    E = Array.from({ length: 512 }, (_, i) => Array.from(flat.subarray(i * 64, (i + 1) * 64)));
  });

  for (const backend of ['wasm', 'cpu'] as const) {
    it(`every case, alone and as one batch, on ${backend}`, async () => {
      await initBackend({ backend });
      const table = tf.tensor2d(E);
      const settings = cases.map((c) => S(c.mode, c.beta, 20));
      const check = (r: MixDebugResult, row: number, c: UnitCase) => {
        const what = `${c.case} (${c.mode}, beta ${c.beta}, y ${c.sampled})`;
        const got = candidates(r, row);
        assert.deepEqual(
          [...got.keys()].sort((a, b) => a - b),
          [...c.ids].sort((a, b) => a - b),
          `${what}: ids`,
        );
        c.ids.forEach((id, k) =>
          assert.ok(
            Math.abs(got.get(id)! - c.weights[k]) <= 1e-6,
            `${what}: weight of ${id}: ${got.get(id)} vs ${c.weights[k]}`,
          ),
        );
        assert.ok(Math.abs((r.entropy.arraySync() as number[])[row] - c.entropy) <= 1e-6, `${what}: entropy`);
        assert.equal((r.numCandidates.arraySync() as number[])[row], c.ids.length, `${what}: count`);
        const wy = c.weights[c.ids.indexOf(c.sampled)];
        assert.ok(Math.abs((r.weightOnSampled.arraySync() as number[])[row] - wy) <= 1e-6, `${what}: weight on y`);
        assertClose((r.embeds.arraySync() as number[][])[row], c.mixed_embedding, 1e-5, `${what}: embedding`);
      };
      try {
        cases.forEach((c, i) => {
          const logits = tf.tensor2d([c.logits]);
          const sampled = tf.tensor1d([c.sampled], 'int32');
          const r = mixInputs({ logits, sampled, embedTable: table, settings: [settings[i]] }, { returnWeights: true });
          check(r, 0, c);
          disposeResult(r);
          tf.dispose([logits, sampled]);
        });
        const logits = tf.tensor2d(cases.map((c) => c.logits));
        const sampled = tf.tensor1d(
          cases.map((c) => c.sampled),
          'int32',
        );
        const r = mixInputs({ logits, sampled, embedTable: table, settings }, { returnWeights: true });
        cases.forEach((c, i) => check(r, i, c));
        disposeResult(r);
        tf.dispose([logits, sampled]);
      } finally {
        table.dispose();
      }
    });
  }

  it('covers y at top-1, inside and outside the top-20, peaked, flat and direct', () => {
    const names = new Set(cases.map((c) => c.case));
    for (const n of ['top1', 'inside', 'outside', 'peaked', 'flat']) assert.ok(names.has(n), n);
    assert.ok(cases.some((c) => c.mode === 'direct'));
    assert.ok(cases.some((c) => c.ids.length === 21));
  });
});
