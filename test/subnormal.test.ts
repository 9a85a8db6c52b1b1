/**
 * Subnormal-safe mixing (issue 21): on the flushing cpu backend (float32 subnormals read and
 * written as zero, as on a GPU) the mixers and the trace columns stay finite and give what plain
 * cpu gives. The old leanMix formula, −Σ p·log(max(p, 1e-38)), reproduced here, turns NaN there
 * (1e-38 is below 2^-126: the clamp is 0, and y's empty slot has p = 0, so 0·log 0) while staying
 * finite on plain cpu: the backend is what makes the failure visible. Logits spread over ~100
 * nats, so that exp underflows into the subnormal range inside the top-K.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { createRng, initBackend } from '@moi/core';
import { mixInputs, resolveMixSettings, softMix, startSoftRow, type MixSettings } from '@moi/moi';
import { traceColumns } from '@moi/engine';

const V = 64;
const H = 8;

/** Row r: logits falling from 0 by `step` nats per rank, in a scrambled order of ids. */
function logitRows(steps: number[]): number[][] {
  return steps.map((step, r) => Array.from({ length: V }, (_, i) => -step * ((i * 37 + r * 11) % V)));
}
const table = () =>
  tf.tensor2d(
    Array.from({ length: V * H }, (_, i) => Math.sin(i * 0.7) * 0.5),
    [V, H],
  );
const argmaxOf = (row: number[]) => row.indexOf(Math.max(...row));

/** Run `f` on plain cpu and on the flushing cpu; host copies of what it returns. */
async function onBoth(
  f: () => Record<string, tf.Tensor>,
): Promise<{ plain: Record<string, number[]>; flushed: Record<string, number[]> }> {
  const out: Record<string, number[]>[] = [];
  for (const flushSubnormals of [false, true]) {
    await initBackend({ backend: 'cpu', flushSubnormals });
    const before = tf.memory().numTensors;
    const r = f();
    out.push(Object.fromEntries(Object.entries(r).map(([k, t]) => [k, Array.from(t.dataSync())])));
    tf.dispose(Object.values(r));
    assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  }
  return { plain: out[0], flushed: out[1] };
}

describe('subnormal-safe mixing on the flushing cpu backend', () => {
  after(async () => {
    await initBackend({ backend: 'wasm' });
  });

  it('the old leanMix entropy, −Σ p·log(max(p, 1e-38)), is NaN on the flushing backend and finite on plain cpu', async () => {
    const { plain, flushed } = await onBoth(() =>
      tf.tidy(() => {
        // y inside the top-K: its extra slot is −∞, so p = 0 there (as leanMix made it)
        const slots = tf.tensor2d([[0, -1, -3, -95, -Infinity]]);
        const e = tf.exp(tf.sub(slots, tf.max(slots, 1, true)));
        const p = tf.div(e, tf.sum(e, 1, true));
        return { negEnt: tf.sum(tf.mul(p, tf.log(tf.maximum(p, 1e-38))), 1) };
      }),
    );
    assert.ok(Number.isFinite(plain.negEnt[0]), `plain cpu: ${plain.negEnt[0]}`);
    assert.ok(Number.isNaN(flushed.negEnt[0]), `flushing cpu: ${flushed.negEnt[0]}`);
  });

  it('mixInputs (lean and general paths, moi/direct/standard, y inside and outside the top-K): finite, and equal to plain cpu', async () => {
    const rows = logitRows([1.6, 3.1, 0.4, 1.6]);
    const sampled = [argmaxOf(rows[0]), argmaxOf(rows[1]), 5, argmaxOf(rows[3])];
    const settings: MixSettings[] = ['moi', 'direct', 'moi', 'standard'].map((mode) =>
      resolveMixSettings({ mode, beta: 1, topK: 20 }, {}),
    );
    for (const general of [false, true]) {
      const { plain, flushed } = await onBoth(() =>
        tf.tidy(() => {
          const r = mixInputs(
            { logits: tf.tensor2d(rows), sampled: tf.tensor1d(sampled, 'int32'), embedTable: table(), settings },
            { general },
          );
          return { embeds: r.embeds, entropy: r.entropy, weightOnSampled: r.weightOnSampled };
        }),
      );
      for (const k of Object.keys(plain)) {
        assert.ok(flushed[k].every(Number.isFinite), `${general ? 'general' : 'lean'} ${k} finite: ${flushed[k]}`);
        // a subnormal p on plain cpu is 0 flushed: below float32 resolution next to the other terms
        assert.deepEqual(flushed[k], plain[k], `${general ? 'general' : 'lean'} ${k}: flushed equals plain`);
      }
    }
  });

  it('a single candidate (K = 1, y on top): H = 0 and the input is E[y] exactly, on both paths', async () => {
    const rows = logitRows([2]);
    const y = argmaxOf(rows[0]);
    const settings = [resolveMixSettings({ mode: 'moi', beta: 1, topK: 1 }, {})];
    for (const general of [false, true]) {
      const { flushed } = await onBoth(() =>
        tf.tidy(() => {
          const E = table();
          const r = mixInputs(
            { logits: tf.tensor2d(rows), sampled: tf.tensor1d([y], 'int32'), embedTable: E, settings },
            { general },
          );
          return { embeds: r.embeds, entropy: r.entropy, row: tf.slice(E, [y, 0], [1, H]) };
        }),
      );
      assert.deepEqual(flushed.entropy, [0], `${general ? 'general' : 'lean'}: H`);
      assert.deepEqual(flushed.embeds, flushed.row, `${general ? 'general' : 'lean'}: E[y]`);
    }
  });

  it('trace columns: finite, and equal to plain cpu', async () => {
    const rows = logitRows([1.6, 3.1]);
    const sampled = [argmaxOf(rows[0]), 7];
    const settings = ['moi', 'direct'].map((mode) => resolveMixSettings({ mode, beta: 1, topK: 20 }, {}));
    const { plain, flushed } = await onBoth(() =>
      tf.tidy(() => ({ cols: traceColumns(tf.tensor2d(rows), undefined, tf.tensor1d(sampled, 'int32'), settings, 5) })),
    );
    assert.ok(flushed.cols.every(Number.isFinite), `finite: ${flushed.cols}`);
    assert.deepEqual(flushed.cols, plain.cols);
  });

  it('Soft Thinking, without noise, with Gumbel and with Dirichlet noise: finite, and within 1e-6 of plain cpu', async () => {
    const rows = logitRows([1.6, 1.6, 1.6]);
    const settings = (['none', 'gumbel', 'dirichlet'] as const).map((noise) =>
      resolveMixSettings(
        {
          mode: 'soft',
          topK: 10,
          soft: { temperature: 0.6, topK: 40, topP: 1, minP: 0, thinkEndId: V - 1, noise },
        },
        {},
        V,
      ),
    );
    const { plain, flushed } = await onBoth(() =>
      tf.tidy(() => {
        const states = settings.map((s) => startSoftRow(s, { makeRng: () => createRng(5) }));
        const r = softMix({
          logits: tf.tensor2d(rows),
          sampled: tf.tensor1d([0, 0, 0], 'int32'),
          embedTable: table(),
          settings,
          rowStates: states,
        });
        return { embeds: r.embeds, entropy: r.entropy, tokens: r.tokens! };
      }),
    );
    for (const k of Object.keys(plain)) {
      assert.ok(flushed[k].every(Number.isFinite), `${k} finite: ${flushed[k]}`);
      flushed[k].forEach((v, i) => assert.ok(Math.abs(v - plain[k][i]) <= 1e-6, `${k}[${i}]: ${v} vs ${plain[k][i]}`));
    }
  });
});
