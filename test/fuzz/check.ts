/**
 * One fuzz case, in-process: load the folder through the public API (Engine.load) and generate
 * two tokens. The outcome is 'typed' (a MoiError), 'ok' (it loaded and generated, and the
 * log-softmax of the logits it sampled from is finite, checked here), 'garbage' (it generated although the
 * logits are not finite), 'untyped' (any other error), 'hang' (past the guard's limit) or 'leak'
 * (tensors left behind).
 */
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, MoiError } from '@moi/core';
import { Engine, generateOne } from '@moi/engine';
import { makeCase } from './cases.ts';

export type Outcome = 'typed' | 'ok' | 'untyped' | 'hang' | 'leak' | 'garbage';

export interface CaseResult {
  index: number;
  base: string;
  what: string;
  outcome: Outcome;
  /** the MoiError code, or the untyped error's name and message */
  detail: string;
  ms: number;
}

/** The backend every case runs on (wasm, as here and in CI). */
export async function prepareFuzz(): Promise<void> {
  await initBackend({ backend: 'wasm' });
}

async function loadAndGenerate(dir: string): Promise<string> {
  const engine = await Engine.load(dir, { backend: 'wasm' });
  try {
    const { events, done } = await generateOne(engine, {
      promptIds: [1, 2],
      maxTokens: 2,
      sampling: { temperature: 0, logprobs: 2 },
      ignoreEos: true,
    });
    // generation went through, so the logits it sampled from must have been finite: check that
    // apart from the engine's own check, through the log-softmax of those same logits (a NaN or
    // an Inf anywhere in a row makes its normalizer, hence every logprob, non-finite)
    const finite = (x: number | undefined) => x !== undefined && Number.isFinite(x);
    if (!events.every((e) => finite(e.logprobs?.logprob) && (e.logprobs?.top ?? []).every((t) => finite(t.logprob))))
      throw new Error('__garbage__');
    return `${done.tokens.length} tokens`;
  } finally {
    engine.dispose();
  }
}

/** Run case `index` of `seed` in `dir` (made fresh, removed after); a case past `limitMs` is a hang. */
export async function runCase(
  seed: number,
  index: number,
  fixtures: string,
  dir: string,
  limitMs = 10_000,
): Promise<CaseResult> {
  fs.rmSync(dir, { recursive: true, force: true });
  const c = await makeCase(seed, index, fixtures, dir);
  const n0 = tf.memory().numTensors;
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('__hang__')), limitMs);
  });
  let outcome: Outcome;
  let detail: string;
  try {
    detail = await Promise.race([loadAndGenerate(dir), guard]);
    outcome = 'ok';
  } catch (e) {
    if (e instanceof MoiError) {
      outcome = 'typed';
      detail = e.code;
    } else if (e instanceof Error && e.message === '__hang__') {
      outcome = 'hang';
      detail = `over ${limitMs} ms`;
    } else if (e instanceof Error && e.message === '__garbage__') {
      outcome = 'garbage';
      detail = 'generated from non-finite logits';
    } else {
      outcome = 'untyped';
      detail = `${(e as Error)?.name}: ${String((e as Error)?.message ?? e).slice(0, 300)}`;
    }
  } finally {
    clearTimeout(timer);
    await c.cleanup?.();
  }
  const ms = performance.now() - t0;
  if (outcome !== 'hang' && ms > limitMs) {
    outcome = 'hang';
    detail = `${ms.toFixed(0)} ms`;
  }
  let leaked = tf.memory().numTensors - n0;
  if (leaked !== 0 && (outcome === 'ok' || outcome === 'typed')) {
    // the first model of a shape fills the engine's constant caches (rope tables, scalars): a
    // leak is what a second identical run leaves
    const n1 = tf.memory().numTensors;
    await loadAndGenerate(dir).catch(() => {});
    leaked = tf.memory().numTensors - n1;
  }
  if (leaked !== 0 && (outcome === 'ok' || outcome === 'typed')) {
    outcome = 'leak';
    detail += ` (${leaked} tensors left)`;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return { index, base: c.base, what: c.what, outcome, detail, ms };
}
