/**
 * A prompt prefilled in chunks through the KV cache gives the same logits, bit for bit, as the
 * same prompt prefilled at once, with our kernels on and off: the continuous-batching scheduler
 * prefills in chunks, and "a request in the pool equals the request alone" rests on it. (The
 * prefill attention kernel reads the cache's prefix and the new tokens by different routes; they
 * must add the same terms in the same order.)
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  initBackend,
  kernelDispatches,
  PREFILL_ATTENTION,
  resetKernelDispatches,
  setKernelsEnabled,
  sharedDir,
  SHARED_MISSING,
} from '@moi/core';
import { loadModel, PREFILL_KERNEL_MAX_END, type LoadedModel } from '@moi/models';

// Full-attention models. With a sliding window the cache rotates and a chunk's prefix is read in
// slot order, not position order (so Gemma 2/3 are not bitwise invariant, kernels on or off), and
// a one-token chunk runs the decode path (the scheduler never makes one: a one-token remainder
// joins the chunk before it).
const FIXTURES = ['llama', 'llama_tied', 'qwen2', 'qwen3', 'stories260K'];

/** Prefill `chunks` then one decode step; `extra` > 0 says the prompt goes on that many tokens past its last chunk. */
function run(m: LoadedModel, chunks: number[][], next: number, extra = 0): Float32Array[] {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const cache = m.model.makeCache(1, n + 2);
  try {
    let last: tf.Tensor | null = null;
    let left = n + extra;
    for (const c of chunks) {
      last?.dispose();
      last = m.model.forward({ ids: [c] }, { cache, lastOnly: true, ...(extra ? { prefillTokensLeft: left } : {}) });
      left -= c.length;
    }
    const afterPrompt = last!.dataSync() as Float32Array;
    last!.dispose();
    const step = m.model.forward({ ids: [[next]] }, { cache, lastOnly: true });
    const afterStep = step.dataSync() as Float32Array;
    step.dispose();
    return [afterPrompt, afterStep];
  } finally {
    for (const c of cache) c.dispose();
  }
}

describe('prefill in chunks equals one prefill, bit for bit', function () {
  this.timeout(120_000);
  const shared = sharedDir();
  before(async function () {
    if (!shared) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
  });
  after(() => setKernelsEnabled(true));

  for (const kernels of [true, false]) {
    for (const name of FIXTURES) {
      it(`${name}, kernels ${kernels ? 'on' : 'off'}: 23 tokens as 23, as 5 + 18 and as 9 + 2 + 12`, async function () {
        setKernelsEnabled(kernels);
        const m = await loadModel(path.join(shared!, 'fixtures', name));
        try {
          const V = m.spec.vocabSize;
          const prompt = Array.from({ length: 23 }, (_, i) => (i * 37 + 11) % V);
          const whole = run(m, [prompt], 5 % V);
          for (const cut of [[5], [9, 11]]) {
            const chunks: number[][] = [];
            let at = 0;
            for (const c of [...cut, prompt.length]) {
              chunks.push(prompt.slice(at, c));
              at = c;
            }
            const got = run(m, chunks, 5 % V);
            assert.deepEqual(
              got[0],
              whole[0],
              `logits after the prompt (chunks ${chunks.map((c) => c.length).join(' + ')})`,
            );
            assert.deepEqual(got[1], whole[1], 'logits after one decode step');
          }
        } finally {
          m.dispose();
        }
      });
    }
  }

  it(`a prefill ending past position ${PREFILL_KERNEL_MAX_END} runs attention on the composite, in every chunk (chunked still equals one prefill)`, async function () {
    setKernelsEnabled(true);
    const m = await loadModel(path.join(shared!, 'fixtures', 'llama'));
    try {
      const V = m.spec.vocabSize;
      const prompt = Array.from({ length: 23 }, (_, i) => (i * 37 + 11) % V);
      const prefills = () => kernelDispatches()[PREFILL_ATTENTION] ?? 0;
      resetKernelDispatches();
      run(m, [prompt.slice(0, 9), prompt.slice(9)], 5 % V);
      assert.equal(prefills(), 2 * m.spec.numLayers, 'a short prompt: the kernel, in both chunks, every layer');
      // the same chunks, told the prompt ends past the limit (as generate and the scheduler say
      // of a long prompt's first chunks): the composite in every chunk, as one prefill of it
      const extra = PREFILL_KERNEL_MAX_END;
      resetKernelDispatches();
      const whole = run(m, [prompt], 5 % V, extra);
      const got = run(m, [prompt.slice(0, 9), prompt.slice(9, 11), prompt.slice(11)], 5 % V, extra);
      assert.equal(prefills(), 0, 'no chunk ran the prefill kernel');
      assert.deepEqual(got[0], whole[0], 'logits after the prompt');
      assert.deepEqual(got[1], whole[1], 'logits after one decode step');
    } finally {
      m.dispose();
    }
  });
});
