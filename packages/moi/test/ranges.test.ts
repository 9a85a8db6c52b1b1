/**
 * The ends of the settings' ranges keep the mixers finite in float32, on logits far wider than a
 * model's (spread ±1e4): Soft Thinking at soft-phase temperatures 1e-5 and 100 with Gumbel τ and
 * Dirichlet α at 1e-3 and 1e3 (top-k on and off), and MoI at β = 0 and 1e9 over the raw and the
 * temperature-1e-5 processed prior. Every weight and every mixed input is finite, and a soft row's
 * weights sum to 1. Just past the ends, the settings are refused, the range stated.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, SAMPLING_RANGES, UsageError } from '@moi/core';
import {
  DIRICHLET_ALPHA_RANGE,
  GUMBEL_TAU_RANGE,
  MAX_BETA,
  mixInputs,
  resolveMixSettings,
  softMix,
  startSoftRow,
  type MixSettings,
  type NoiseRng,
} from '../src/index.ts';

const V = 64;
const H = 6;

/** A test-only generator (mulberry32). */
function testRng(seed: number): NoiseRng {
  let a = seed >>> 0;
  return {
    nextUint32() {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    },
  };
}

/** Logits spread over ±scale, with one clear maximum and ties. */
function logitsRow(scale: number, seed: number): number[] {
  const rng = testRng(seed);
  return Array.from({ length: V }, (_, i) =>
    i === seed % V ? scale : (rng.nextUint32() / 2 ** 32) * 2 * scale - scale,
  );
}

function allFinite(values: ArrayLike<number>, what: string): void {
  for (let i = 0; i < values.length; i++) assert.ok(Number.isFinite(values[i]), `${what}[${i}] = ${values[i]}`);
}

describe('mixers at the ends of the settings ranges (float32)', function () {
  let table: tf.Tensor2D;
  before(async () => {
    await initBackend({ backend: 'wasm' });
    table = tf.tensor2d(Array.from({ length: V }, (_, i) => Array.from({ length: H }, (_, j) => Math.sin(i * 7 + j))));
  });
  after(() => table.dispose());

  const tMin = SAMPLING_RANGES.temperature[1].min;
  const tMax = SAMPLING_RANGES.temperature[1].max;
  const [tau, alpha] = [GUMBEL_TAU_RANGE[0], DIRICHLET_ALPHA_RANGE[0]];

  for (const scale of [30, 1e4]) {
    for (const temperature of [tMin, tMax]) {
      for (const [noise, values] of [
        ['gumbel', [tau.min, tau.max]],
        ['dirichlet', [alpha.min, alpha.max]],
      ] as const) {
        for (const value of values) {
          for (const topK of [0, 30]) {
            it(`soft: logits ±${scale}, temperature ${temperature}, ${noise} ${value}, top-k ${topK || 'off'}`, () => {
              const settings: MixSettings = resolveMixSettings(
                {
                  mode: 'soft',
                  topK: 'all',
                  soft: {
                    thinkEndId: 1,
                    temperature,
                    topK,
                    topP: 1,
                    minP: 0,
                    noise,
                    ...(noise === 'gumbel' ? { gumbelTau: value } : { dirichletAlpha: value }),
                  },
                },
                {},
                V,
              );
              const rows = [logitsRow(scale, 3), logitsRow(scale, 5)];
              const states = rows.map((_, r) => startSoftRow(settings, { makeRng: () => testRng(11 + r) }));
              const logits = tf.tensor2d(rows);
              const y = tf.tensor1d([0, 0], 'int32');
              const r = softMix(
                { logits, sampled: y, embedTable: table, settings: [settings, settings], rowStates: states },
                { returnWeights: true },
              );
              try {
                allFinite(r.embeds.dataSync(), 'embeds');
                const w = r.weights.arraySync() as number[][];
                for (const row of w) {
                  allFinite(row, 'weights');
                  assert.ok(
                    Math.abs(row.reduce((a, x) => a + x, 0) - 1) < 1e-5,
                    `weights sum ${row.reduce((a, x) => a + x, 0)}`,
                  );
                }
                allFinite(r.weightOnSampled.dataSync(), 'weightOnSampled');
              } finally {
                tf.dispose([
                  logits,
                  y,
                  r.embeds,
                  r.entropy,
                  r.weightOnSampled,
                  r.numCandidates,
                  r.tokens!,
                  r.extra!,
                  r.candidateIds,
                  r.weights,
                ]);
              }
            });
          }
        }
      }
    }
  }

  for (const beta of [0, MAX_BETA]) {
    for (const prior of ['raw', 'processed'] as const) {
      it(`moi: logits ±1e4, β ${beta}, ${prior} prior at temperature ${tMin}`, () => {
        const settings: MixSettings = resolveMixSettings({ mode: 'moi', beta, prior, topK: 'all' }, {}, V);
        const rows = [logitsRow(1e4, 7), logitsRow(1e4, 9)];
        const logits = tf.tensor2d(rows);
        const processed = tf.tensor2d(rows.map((row) => row.map((x) => Math.fround(x / tMin))));
        const y = tf.tensor1d([7, 2], 'int32');
        const r = mixInputs({
          logits,
          processedLogits: processed,
          sampled: y,
          embedTable: table,
          settings: [settings, settings],
        });
        try {
          allFinite(r.embeds.dataSync(), 'embeds');
          allFinite(r.entropy.dataSync(), 'entropy');
          allFinite(r.weightOnSampled.dataSync(), 'weightOnSampled');
        } finally {
          tf.dispose([logits, processed, y, r.embeds, r.entropy, r.weightOnSampled, r.numCandidates]);
        }
      });
    }
  }

  it('just past the ends, the settings are refused with the range stated', () => {
    const refused = (f: () => unknown, re: RegExp) =>
      assert.throws(f, (e: unknown) => e instanceof UsageError && re.test(e.message));
    refused(
      () => resolveMixSettings({ mode: 'soft', soft: { thinkEndId: 1, gumbelTau: 9e-4 } }, {}, V),
      /gumbelTau must be in \[1e-3, 1e3\], got 0\.0009/,
    );
    refused(
      () => resolveMixSettings({ mode: 'soft', soft: { thinkEndId: 1, dirichletAlpha: 1001 } }, {}, V),
      /dirichletAlpha must be in \[1e-3, 1e3\], got 1001/,
    );
    refused(
      () => resolveMixSettings({ mode: 'soft', soft: { thinkEndId: 1, temperature: 5e-6 } }, {}, V),
      /thinking\.temperature must be 0 or in \[1e-5, 100\]/,
    );
    refused(
      () => resolveMixSettings({ mode: 'moi', beta: MAX_BETA * 2 }, {}, V),
      /beta must be in \[0, 1e9\] in moi mode/,
    );
    refused(
      () => resolveMixSettings({}, { MIXINPUTS_BETA: '1e12' }, V),
      /MIXINPUTS_BETA \(environment\) must be in \[0, 1e9\]/,
    );
  });
});
