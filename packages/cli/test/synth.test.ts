/**
 * Synthetic models: the folder loads in our graph and gives finite logits, holds exactly the
 * tensors the graph expects, is reproducible from (seed, name), and has the promised scales.
 * The generator's raw draws are checked against xoshiro128**'s C reference (values below were
 * printed by Vigna's reference next() compiled with gcc).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initBackend, ModelError, SafetensorsFile, UsageError } from '@moi/core';
import { expectedTensors, loadModel, specFromConfig } from '@moi/models';
import { fillNoise, synthesizeModel } from '../src/synth.ts';

const tinyLlama = {
  model_type: 'llama',
  architectures: ['LlamaForCausalLM'],
  vocab_size: 256,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
  torch_dtype: 'bfloat16',
};
const tinyGemma3 = {
  model_type: 'gemma3_text',
  vocab_size: 256,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 16,
  max_position_embeddings: 128,
  query_pre_attn_scalar: 16,
  sliding_window: 8,
  layer_types: ['sliding_attention', 'full_attention'],
  bos_token_id: 2,
  eos_token_id: [1, 106],
};

function stats(x: Float32Array): { mean: number; std: number; maxAbsDev: number } {
  let s = 0;
  for (const v of x) s += v;
  const mean = s / x.length;
  let ss = 0;
  let maxAbsDev = 0;
  for (const v of x) {
    ss += (v - mean) ** 2;
    maxAbsDev = Math.max(maxAbsDev, Math.abs(v - mean));
  }
  return { mean, std: Math.sqrt(ss / x.length), maxAbsDev };
}

describe('cli: synthetic models', function () {
  let tmp: string;
  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-synth-'));
    await initBackend({ backend: 'wasm' });
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));
  const dir = (name: string) => path.join(tmp, name);
  const fileOf = (d: string) => path.join(d, 'model.safetensors');

  it('noise generator: raw xoshiro128** draws match the C reference', function () {
    // With mean 0 and std equal to the sum's own std, each value is (sum of the three 10-bit
    // fields of one draw) − 1534.5, exactly.
    const unit = Math.sqrt((1024 * 1024 - 1) / 4);
    const sums = (state: number[], n: number) => {
      const out = new Float32Array(n);
      fillNoise(out, Uint32Array.from(state), 0, unit);
      return [...out].map((v) => v + 1534.5);
    };
    assert.deepEqual(sums([1, 2, 3, 4], 6), [834, 0, 456, 1785, 1763, 1458]);
    assert.deepEqual(sums([0x80000001, 0xdeadbeef, 0xffffffff, 0x7fffffff], 4), [600, 2611, 1672, 1594]);
    // the state advances in place: two calls of 3 equal one call of 6
    const s = Uint32Array.from([1, 2, 3, 4]);
    const a = new Float32Array(3);
    const b = new Float32Array(3);
    fillNoise(a, s, 0, unit);
    fillNoise(b, s, 0, unit);
    assert.deepEqual(
      [...a, ...b].map((v) => v + 1534.5),
      [834, 0, 456, 1785, 1763, 1458],
    );
  });

  it('tiny llama (f32): exactly the expected tensors, loads, finite logits [1, T, V]', async function () {
    const out = dir('llama-f32');
    const r = synthesizeModel({ config: tinyLlama, out, dtype: 'f32', seed: 1 });
    const want = expectedTensors(specFromConfig(tinyLlama).spec);
    const f = SafetensorsFile.open(fileOf(out));
    try {
      assert.deepEqual(new Set(f.tensors.keys()), new Set(want.keys()));
      for (const [name, shape] of want) {
        assert.deepEqual(f.info(name).shape, shape, name);
        assert.equal(f.info(name).dtype, 'F32', name);
      }
      assert.equal(f.metadata.format, 'pt');
    } finally {
      f.close();
    }
    assert.equal(r.tensors, want.size);
    assert.equal(
      r.params,
      [...want.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0),
    );

    const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
    assert.deepEqual(cfg, { ...tinyLlama, torch_dtype: 'float32' });
    const gen = JSON.parse(readFileSync(path.join(out, 'generation_config.json'), 'utf8'));
    assert.equal(gen.bos_token_id, 1);
    assert.equal(gen.eos_token_id, 2);

    const m = await loadModel(out);
    try {
      const ids = [[3, 17, 200, 5, 99]];
      const logits = m.model.forward({ ids });
      assert.deepEqual(logits.shape, [1, 5, 256]);
      const v = logits.dataSync() as Float32Array;
      logits.dispose();
      assert.ok(v.every(Number.isFinite), 'logits are finite');
      // not degenerate: logits vary across the vocabulary, and stay at a sane scale
      const s = stats(v.subarray(0, 256));
      assert.ok(s.std > 0.05 && s.std < 10, `logit std ${s.std}`);
    } finally {
      m.dispose();
    }
  });

  it('tiny gemma3_text (bf16): BF16 header, norms stored as w−1 ≈ 0, loads, finite logits', async function () {
    const out = dir('gemma3-bf16');
    synthesizeModel({ config: tinyGemma3, out, dtype: 'bf16', seed: 7 });
    const spec = specFromConfig(tinyGemma3).spec;
    assert.equal(spec.normUnitOffset, true);
    const f = SafetensorsFile.open(fileOf(out));
    try {
      assert.deepEqual(new Set(f.tensors.keys()), new Set(expectedTensors(spec).keys()));
      assert.ok(!f.tensors.has('lm_head.weight'), 'gemma3 ties its head');
      for (const t of f.tensors.values()) assert.equal(t.dtype, 'BF16', t.name);
      const norm = stats(f.readFloat32('model.layers.1.post_feedforward_layernorm.weight'));
      assert.ok(Math.abs(norm.mean) < 0.005 && norm.std > 0.005 && norm.std < 0.015, JSON.stringify(norm));
    } finally {
      f.close();
    }
    assert.equal(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
    assert.deepEqual(JSON.parse(readFileSync(path.join(out, 'generation_config.json'), 'utf8')).eos_token_id, [1, 106]);

    const m = await loadModel(out);
    try {
      const logits = m.model.forward({ ids: [[2, 10, 11, 12]] });
      assert.deepEqual(logits.shape, [1, 4, 256]);
      const v = logits.dataSync() as Float32Array;
      logits.dispose();
      assert.ok(v.every(Number.isFinite));
      assert.ok(stats(v.subarray(0, 256)).std > 0.05);
    } finally {
      m.dispose();
    }
  });

  it('reproducible: same seed → identical bytes; other seed → different; values depend only on (seed, name)', function () {
    const a = dir('seed1-a');
    const b = dir('seed1-b');
    const c = dir('seed2');
    synthesizeModel({ config: tinyLlama, out: a, dtype: 'f32', seed: 1 });
    synthesizeModel({ config: tinyLlama, out: b, dtype: 'f32', seed: 1 });
    synthesizeModel({ config: tinyLlama, out: c, dtype: 'f32', seed: 2 });
    const bytesA = readFileSync(fileOf(a));
    assert.ok(bytesA.equals(readFileSync(fileOf(b))), 'same seed, same bytes');
    assert.ok(!bytesA.equals(readFileSync(fileOf(c))), 'other seed, other bytes');

    // A one-layer model with the same seed shares its tensors' values with the two-layer one,
    // and two tensors of the same shape differ from each other.
    const one = dir('one-layer');
    synthesizeModel({ config: { ...tinyLlama, num_hidden_layers: 1 }, out: one, dtype: 'f32', seed: 1 });
    const fa = SafetensorsFile.open(fileOf(a));
    const f1 = SafetensorsFile.open(fileOf(one));
    const fc = SafetensorsFile.open(fileOf(c));
    try {
      for (const name of ['model.embed_tokens.weight', 'model.layers.0.mlp.down_proj.weight', 'lm_head.weight']) {
        assert.deepEqual(f1.readBytes(name), fa.readBytes(name), name);
        assert.notDeepEqual(fc.readBytes(name), fa.readBytes(name), name);
      }
      assert.notDeepEqual(
        fa.readBytes('model.layers.0.mlp.gate_proj.weight'),
        fa.readBytes('model.layers.0.mlp.up_proj.weight'),
      );
    } finally {
      fa.close();
      f1.close();
      fc.close();
    }
  });

  it('scales: matrices mean 0 / std 0.02, norms 1 ± 0.01 (llama); bf16 is the f32 values rounded', function () {
    const f32 = dir('seed1-a'); // written by the previous test
    const bf = dir('llama-bf16');
    synthesizeModel({ config: tinyLlama, out: bf, dtype: 'bf16', seed: 1 });
    const f = SafetensorsFile.open(fileOf(f32));
    const g = SafetensorsFile.open(fileOf(bf));
    try {
      const emb = f.readFloat32('model.embed_tokens.weight'); // 16384 values
      const s = stats(emb);
      assert.ok(Math.abs(s.mean) < 0.0005, `mean ${s.mean}`);
      assert.ok(Math.abs(s.std - 0.02) < 0.0005, `std ${s.std}`);
      assert.ok(s.maxAbsDev <= 3 * 0.02 + 1e-6, `bounded noise: ${s.maxAbsDev}`);
      assert.ok(s.maxAbsDev > 2 * 0.02, 'tails reach past 2σ');
      const norm = stats(f.readFloat32('model.layers.0.input_layernorm.weight'));
      assert.ok(Math.abs(norm.mean - 1) < 0.005 && norm.std > 0.005 && norm.std < 0.015, JSON.stringify(norm));

      const rounded = g.readFloat32('model.embed_tokens.weight');
      for (let i = 0; i < emb.length; i++) {
        // bf16 keeps 8 significant bits: round-to-nearest error ≤ 2^-9 relative
        assert.ok(
          Math.abs(rounded[i] - emb[i]) <= Math.abs(emb[i]) * 2 ** -8,
          `element ${i}: ${rounded[i]} vs ${emb[i]}`,
        );
      }
    } finally {
      f.close();
      g.close();
    }
  });

  it('reads a config.json path or its folder; typed errors for bad options', function () {
    const out = dir('from-path');
    const r = synthesizeModel({ config: path.join(dir('seed1-a'), 'config.json'), out, dtype: 'f32', seed: 1 });
    assert.ok(readFileSync(fileOf(out)).equals(readFileSync(fileOf(dir('seed1-a')))));
    assert.equal(r.modelType, 'llama');
    synthesizeModel({ config: dir('seed1-a'), out, dtype: 'f32', seed: 1 });

    const code = (c: string) => (e: unknown) => e instanceof UsageError && e.code === c;
    assert.throws(
      () => synthesizeModel({ config: tinyLlama, out, dtype: 'f16' as 'f32', seed: 1 }),
      code('E_SYNTH_DTYPE'),
    );
    assert.throws(() => synthesizeModel({ config: tinyLlama, out, dtype: 'f32', seed: -1 }), code('E_SYNTH_SEED'));
    assert.throws(() => synthesizeModel({ config: tinyLlama, out, dtype: 'f32', seed: 1.5 }), code('E_SYNTH_SEED'));
    assert.throws(
      () => synthesizeModel({ config: { ...tinyLlama, model_type: 'gpt2' }, out, dtype: 'f32', seed: 1 }),
      (e: unknown) => e instanceof ModelError && /gpt2/.test((e as Error).message),
    );
    assert.throws(
      () => synthesizeModel({ config: path.join(tmp, 'nope.json'), out, dtype: 'f32', seed: 1 }),
      (e: unknown) => e instanceof ModelError && e.code === 'E_NO_CONFIG' && /nope\.json/.test((e as Error).message),
    );
  });
});
