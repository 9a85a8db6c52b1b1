// The bench on a tiny model: its JSON has the documented keys and sane values, its first ids are
// the model's own greedy continuation of the benchmark prompt, and no tensors are left behind.
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, requireShared } from '@moi/core';
import { loadModel } from '@moi/models';
import { benchPrompt, formatBench, runBench } from '../src/bench/bench.ts';

describe('bench: moi-gen bench on a tiny model', function () {
  it('peer-bench prompt definition', () => {
    assert.deepEqual(benchPrompt(151936, 4), [1000, 1000 + 7919, 1000 + 15838, 1000 + 23757]);
    assert.deepEqual(benchPrompt(512, 3), [0, 7919 % 512, 15838 % 512]);
  });

  it('reports the documented JSON keys, equal tensor counts, and the greedy first ids', async function () {
    this.timeout(300_000); // several model loads and runs: minutes on a loaded 2-core machine
    const dir = path.join(requireShared(this), 'fixtures', 'llama');
    const r = await runBench({ model: dir, backend: 'wasm', promptTokens: 8, genTokens: 6, repeat: 1, batches: [2] });
    for (const k of [
      'model',
      'backend',
      'dtype',
      'load_s',
      'load_gb_s',
      'prefill_tok_s',
      'decode_tok_s',
      'moi_overhead',
      'batch_decode_tok_s',
      'peak_rss_mb',
      'tensors_before',
      'tensors_after',
      'roofline',
    ]) {
      assert.ok(k in r, `missing key ${k}`);
    }
    assert.equal(r.backend, 'wasm');
    assert.ok(r.roofline, 'measured by default');
    for (const v of [
      r.load_s,
      r.load_gb_s,
      r.prefill_tok_s,
      r.decode_tok_s.standard,
      r.decode_tok_s.moi,
      r.decode_tok_s.direct,
      r.batch_decode_tok_s['2'],
      r.peak_rss_mb,
      r.roofline.bytes_per_token,
      r.roofline.bandwidth_gb_s,
      r.roofline.ratio,
    ]) {
      assert.ok(Number.isFinite(v) && v > 0, `not a positive number: ${v}`);
    }
    assert.ok(Math.abs(r.moi_overhead - r.decode_tok_s.moi / r.decode_tok_s.standard) < 1e-9);
    assert.equal(r.tensors_after, r.tensors_before);
    // an untied model reads every weight but the embedding table (one row of it) per token
    const m = await loadModel(dir);
    const s = m.spec;
    assert.equal(r.roofline.bytes_per_token, m.weightBytes - s.vocabSize * s.hiddenSize * 4 + s.hiddenSize * 4);
    // first ids: the model's own greedy continuation, by full recompute
    const ids = benchPrompt(s.vocabSize, 8);
    const want: number[] = [];
    for (let i = 0; i < r.first_ids.length; i++) {
      const logits = m.model.forward({ ids: [[...ids, ...want]] }, { lastOnly: true });
      want.push(tf.tidy(() => tf.argMax(tf.reshape(logits, [-1])).dataSync()[0]));
      logits.dispose();
    }
    m.dispose();
    assert.equal(r.first_ids.length, 7); // min(8, gen_tokens + 1): the first token comes from the prefill
    assert.deepEqual(r.first_ids, want);
    assert.match(formatBench(r), /decode moi .*of standard/);
    // our kernels ran, and the same figures with them off came from the same run
    assert.ok(r.step_profile.kernels > 0 && (r.step_profile.by_name.MoiDecodeAttention ?? 0) === m.spec.numLayers);
    assert.ok(r.kernels_off, 'kernels-off figures');
    assert.equal(r.kernels_off.step_profile.by_name.MoiDecodeAttention ?? 0, 0);
    assert.ok(r.kernels_off.step_profile.kernels > r.step_profile.kernels, 'the kernels dispatch fewer ops per step');
    for (const v of [
      r.kernels_off.prefill_tok_s,
      r.kernels_off.decode_tok_s.standard,
      r.kernels_off.decode_tok_s.moi,
      r.decode_cpu_ms_per_tok.standard,
    ]) {
      assert.ok(Number.isFinite(v) && v > 0, `not a positive number: ${v}`);
    }
    // the weights live in the thread pool (wasm, every thread count): per step one matmul job for
    // each of a layer's four matrices (fused qkv, o, fused gate|up, down), the head's, and the
    // embedding row's gather; their wall time is the GEMV share
    assert.equal(r.step_profile.pool_jobs, 4 * m.spec.numLayers + 2);
    assert.ok(r.step_profile.ms.gemv > 0, `GEMV time ${r.step_profile.ms.gemv}`);
    assert.match(formatBench(r), /kernels \/ decode step +\d+ \+ \d+ pool jobs \(profiled time: GEMV \d+%/);
  });

  before(async () => {
    await initBackend({ backend: 'wasm' });
  });
});
