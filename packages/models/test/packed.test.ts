/**
 * Packed 16/8-bit weights in the loader (issue 15): the dtype plan, tensors flat across load,
 * decode and dispose, the heap check's E_MEMORY (from a header only: a sparse file declaring huge
 * tensors), and other backends widening at load (cpu must give wasm's packed results).
 */
import assert from 'node:assert/strict';
import {
  closeSync,
  copyFileSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, SHARED_MISSING } from '@moi/core';
import {
  estimateHeap,
  loadModel,
  planDtype,
  POOL_MEMORY_BYTES,
  specFromConfig,
  WASM_HEAP_BYTES,
} from '../src/index.ts';
import { fixturesRoot, fullLogits, greedy, makeTemp, readConfigJson, readReference, rmTemp } from './helpers.ts';

describe('models: the dtype plan', () => {
  it('auto keeps a bf16/f16 checkpoint in 16 bits on wasm, f32 stays f32, mixed matrices stay f32', () => {
    assert.deepEqual(planDtype('auto', ['BF16', 'BF16'], 'wasm'), {
      dtype: 'bf16',
      values: 'bf16',
      kind: 'bf16',
      packed: true,
      note: 'bf16 checkpoint kept in 16 bits',
    });
    assert.equal(planDtype('auto', ['F16'], 'wasm').dtype, 'f16');
    // kernels off (MOI_KERNELS=0): auto widens at load; an explicit bf16 stays packed, with a note
    assert.deepEqual(
      [planDtype('auto', ['BF16'], 'wasm', false).dtype, planDtype('auto', ['BF16'], 'wasm', false).packed],
      ['f32', false],
    );
    assert.match(
      planDtype('auto', ['BF16'], 'wasm', false).note,
      /^wasm with MOI_KERNELS=0: 16\/8-bit weights widened/,
    );
    assert.equal(planDtype('bf16', ['BF16'], 'wasm', false).packed, true);
    assert.match(planDtype('q8', ['BF16'], 'wasm', false).note, /MOI_KERNELS=0: every packed matmul widens/);
    assert.deepEqual(planDtype('auto', ['F32'], 'wasm'), {
      dtype: 'f32',
      values: 'f32',
      kind: null,
      packed: false,
      note: 'f32 checkpoint in f32',
    });
    const mixed = planDtype('auto', ['BF16', 'F32'], 'wasm');
    assert.equal(mixed.dtype, 'f32');
    assert.match(mixed.note, /BF16, F32/);
  });
  it('f32, bf16 and q8 convert; q8 says Q8_0', () => {
    assert.equal(planDtype('f32', ['BF16'], 'wasm').note, 'bf16 checkpoint widened to f32 (exact)');
    assert.equal(
      planDtype('bf16', ['F32'], 'wasm').note,
      'f32 checkpoint rounded to bf16 at load (round to nearest even)',
    );
    assert.equal(planDtype('bf16', ['F16'], 'wasm').kind, 'bf16');
    const q = planDtype('q8', ['BF16'], 'wasm');
    assert.equal(q.dtype, 'q8');
    assert.match(q.note, /Q8_0, blocks of 32/);
  });
  it('other backends widen packed values to f32 at load, with the note', () => {
    for (const backend of ['cpu', 'webgpu', 'tensorflow']) {
      const p = planDtype('q8', ['F32'], backend);
      assert.equal(p.dtype, 'f32');
      assert.equal(p.values, 'q8');
      assert.equal(p.packed, false);
      assert.ok(p.note.startsWith(`${backend}: 16/8-bit weights widened to f32 at load`), p.note);
      assert.equal(planDtype('auto', ['BF16'], backend).dtype, 'f32');
    }
  });
});

describe('models: packed weights (wasm)', function () {
  const root = fixturesRoot();
  let tmp: string | undefined;
  before(async function () {
    if (!root) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
    tmp = makeTemp('packed');
  });
  after(() => rmTemp(tmp));

  for (const dtype of ['bf16', 'q8'] as const) {
    it(`${dtype}: tensors flat across load, decode steps and dispose`, async function () {
      for (const name of ['qwen2', 'gemma3_text', 'llama_tied']) {
        const dir = path.join(root!, name);
        const ids = readReference(dir).cases[0].input_ids;
        {
          const warm = await loadModel(dir, { dtype });
          greedy(warm.model, ids, 3);
          warm.dispose();
        } // caches of first use
        const n0 = tf.memory().numTensors;
        const m = await loadModel(dir, { dtype });
        assert.equal(m.dtype, dtype);
        const n1 = tf.memory().numTensors;
        greedy(m.model, ids, 2);
        const n2 = tf.memory().numTensors;
        greedy(m.model, ids, 6);
        assert.equal(tf.memory().numTensors, n2, `${name}: tensors grow with decode steps`);
        assert.equal(n2, n1, `${name}: a decode leaves tensors`);
        m.dispose();
        assert.equal(tf.memory().numTensors, n0, `${name}: dispose leaves tensors`);
      }
    });
  }

  it('onProgress (packed): every tensor once, increasing bytes, built as read, ending at totalBytes', async function () {
    const dir = path.join(root!, 'qwen2');
    const { SafetensorsFile } = await import('@moi/core');
    const f = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    const infos = [...f.tensors.values()];
    f.close();
    const fileBytes = infos.reduce((s, t) => s + t.byteLength, 0);
    const all: { bytes: number; totalBytes: number; builtBytes: number; tensor: string; phase: string }[] = [];
    const m = await loadModel(dir, { dtype: 'q8', onProgress: (p) => all.push({ ...p }) });
    m.dispose();
    const last = all.pop()!;
    assert.deepEqual([last.phase, last.bytes, last.builtBytes, last.tensor], ['done', fileBytes, fileBytes, '']);
    assert.deepEqual(all.map((p) => p.tensor).sort(), infos.map((t) => t.name).sort());
    let prev = 0;
    for (const p of all) {
      assert.equal(p.phase, 'read');
      assert.equal(p.totalBytes, fileBytes);
      assert.equal(p.builtBytes, p.bytes);
      assert.equal(p.bytes - prev, infos.find((t) => t.name === p.tensor)!.byteLength, p.tensor);
      prev = p.bytes;
    }
    assert.equal(prev, fileBytes);
  });

  it('weightBytes and the heap estimate agree with what the weights hold', async function () {
    for (const name of ['llama', 'llama_tied', 'qwen3']) {
      const dir = path.join(root!, name);
      const { spec } = specFromConfig(readConfigJson(dir));
      for (const dtype of ['bf16', 'q8'] as const) {
        for (const threadedWeights of ['never', 'auto'] as const) {
          const m = await loadModel(dir, { dtype, threadedWeights });
          // the model holds the estimate's bytes plus the small extras the decoder keeps (q/k norm
          // rows, q's scale; in the pool also the norm vectors, which stay tfjs tensors)
          const est = estimateHeap(spec, dtype, m.threads.pooled ? 'pool' : 'heap').weights;
          assert.equal(m.threads.pooled, threadedWeights === 'auto');
          assert.ok(
            m.weightBytes >= est && m.weightBytes <= est * 1.02 + 4096,
            `${name} ${dtype} ${threadedWeights}: weightBytes ${m.weightBytes} vs estimate ${est}`,
          );
          m.dispose();
        }
      }
    }
  });

  it('E_MEMORY before any weight is read when the estimate exceeds the wasm heap, with the figures and a smaller dtype', async function () {
    // qwen2.5-1.5b-like sizes, scaled so f32 and bf16 do not fit and q8 does: the file is sparse
    const config = {
      model_type: 'qwen2',
      vocab_size: 151936,
      hidden_size: 2048,
      intermediate_size: 11008,
      num_hidden_layers: 36,
      num_attention_heads: 16,
      num_key_value_heads: 2,
      max_position_embeddings: 4096,
      rms_norm_eps: 1e-6,
      tie_word_embeddings: true,
    };
    const dir = path.join(tmp!, 'huge');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    const { spec } = specFromConfig(config);
    const { expectedTensors } = await import('../src/weights.ts');
    const header: Record<string, unknown> = {};
    let off = 0;
    for (const [name, shape] of expectedTensors(spec)) {
      const bytes = shape.reduce((a, b) => a * b, 1) * 2;
      header[name] = { dtype: 'BF16', shape, data_offsets: [off, off + bytes] };
      off += bytes;
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const file = path.join(dir, 'model.safetensors');
    const fd = openSync(file, 'w');
    try {
      writeSync(fd, len);
      writeSync(fd, Buffer.from(json));
      ftruncateSync(fd, 8 + json.length + off); // sparse: nothing is written
    } finally {
      closeSync(fd);
    }
    const bf16 = estimateHeap(spec, 'bf16');
    const bf16Pool = estimateHeap(spec, 'bf16', 'pool');
    assert.ok(
      bf16.total > WASM_HEAP_BYTES && estimateHeap(spec, 'q8').total < WASM_HEAP_BYTES,
      'the config is sized for the test',
    );
    assert.ok(
      bf16Pool.total > POOL_MEMORY_BYTES && estimateHeap(spec, 'q8', 'pool').total < POOL_MEMORY_BYTES,
      'the config is sized for the test (pool)',
    );
    const n0 = tf.memory().numTensors;
    // tfjs's heap, and the thread pool's memory (the default on wasm)
    for (const [threadedWeights, est, where] of [
      ['never', bf16, 'the wasm heap'],
      ['auto', bf16Pool, "the thread pool's memory"],
    ] as const) {
      await assert.rejects(
        loadModel(dir, { threadedWeights }),
        (e: any) =>
          e.code === 'E_MEMORY' &&
          e.message.includes(dir) &&
          e.message.includes(`${(est.weights / 1e9).toFixed(2)} GB in bf16`) &&
          e.message.includes(`over ${where}`) &&
          /try --dtype q8/.test(e.message),
      );
      await assert.rejects(
        loadModel(dir, { dtype: 'f32', threadedWeights }),
        (e: any) => e.code === 'E_MEMORY' && /in f32/.test(e.message),
      );
    }
    assert.equal(tf.memory().numTensors, n0);
  });

  /**
   * wasm's q8 matmuls round their input to 16 bits per block of 32 (roundActivations16): each
   * element moves by at most d/2 = max|block|/65534, so an input row by at most √32/65534 of its
   * L2 norm. cpu holds the dequantized values in f32 and multiplies unrounded inputs. Propagated as
   * in test/dtype.test.ts (first order, unit gain per stage), the logits part by at most that times
   * the stages a token passes through (q/k/v, o, gate/up and down per layer, the head), times their
   * scale.
   */
  const ROUND16 = Math.sqrt(32) / 65534;

  it('cpu widens bf16 and q8 at load and gives the packed wasm logits (within 1e-5 × scale; q8: plus its 16-bit input rounding)', async function () {
    for (const name of ['llama', 'gemma2', 'qwen3']) {
      const dir = path.join(root!, name);
      const ids = readReference(dir).cases[0].input_ids;
      for (const dtype of ['bf16', 'q8'] as const) {
        await initBackend({ backend: 'wasm' });
        // tfjs's packed kernels (the pool's q8 multiplies int8 activations: threads-engine.test.ts)
        const w = await loadModel(dir, { dtype, threadedWeights: 'never' });
        const a = fullLogits(w.model, ids);
        w.dispose();
        await initBackend({ backend: 'cpu' });
        try {
          const c = await loadModel(dir, { dtype });
          assert.equal(c.dtype, 'f32');
          assert.match(c.dtypeNote, /^cpu: 16\/8-bit weights widened to f32 at load/);
          const b = fullLogits(c.model, ids);
          c.dispose();
          let worst = 0;
          let scale = 1;
          for (let t = 0; t < a.length; t++)
            for (let v = 0; v < a[t].length; v++) {
              worst = Math.max(worst, Math.abs(a[t][v] - b[t][v]));
              scale = Math.max(scale, Math.abs(b[t][v]));
            }
          const layers = (
            JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as { num_hidden_layers: number }
          ).num_hidden_layers;
          const tol = 1e-5 + (dtype === 'q8' ? (4 * layers + 1) * ROUND16 : 0);
          assert.ok(
            worst <= tol * scale,
            `${name} ${dtype}: cpu vs wasm differ by ${worst} (scale ${scale}, tolerance ${tol} × scale)`,
          );
        } finally {
          await initBackend({ backend: 'wasm' });
        }
      }
    }
  });

  it('packing a row chunk at a time gives the bytes of packing whole matrices (fused parts, odd chunk sizes)', async function () {
    const { Checkpoint, widenPacked, disposePacked } = await import('@moi/core');
    const { packMatrices } = await import('../src/packed-weights.ts');
    const ck = Checkpoint.open(path.join(root!, 'stories260K')); // intermediate 172: a short last q8 block
    try {
      const src = {
        info: (n: string) => ck.info(n),
        readRange: (n: string, s: number, l: number) => ck.readBytesRange(n, s, l),
        readFloat32: (n: string) => ck.readFloat32(n),
      };
      const groups = [
        ['model.layers.0.mlp.gate_proj.weight', 'model.layers.0.mlp.up_proj.weight'],
        ['model.layers.1.mlp.down_proj.weight'],
        ['model.embed_tokens.weight'],
      ];
      for (const kind of ['bf16', 'q8'] as const) {
        for (const names of groups) {
          const whole = packMatrices(src, names, kind);
          const bits = await whole.data.data();
          const scales = whole.scales ? await whole.scales.data() : null;
          for (const chunk of [1, 700, 5000]) {
            const part = packMatrices(src, names, kind, chunk);
            assert.deepEqual(await part.data.data(), bits, `${kind} ${names.join('+')} in ${chunk}-byte chunks`);
            if (scales) assert.deepEqual(await part.scales!.data(), scales);
            disposePacked(part);
          }
          // and the values are the parts' rows, one after the other
          // and the values are the parts' rows one after the other, each within its format's rounding
          const widened = widenPacked(whole);
          const C = whole.cols;
          const nb = Math.ceil(C / 32);
          let off = 0;
          for (const n of names) {
            const x = ck.readFloat32(n);
            for (let i = 0; i < x.length; i++) {
              const r = (off + i - (i % C)) / C;
              const tol =
                kind === 'bf16'
                  ? 2 ** -8 * Math.abs(x[i])
                  : (scales![r * nb + Math.floor((i % C) / 32)] / 2) * (1 + 1e-6);
              assert.ok(
                Math.abs(widened[off + i] - x[i]) <= tol,
                `${kind} ${n}[${i}]: ${widened[off + i]} vs ${x[i]} (tolerance ${tol})`,
              );
            }
            off += x.length;
          }
          disposePacked(whole);
        }
      }
    } finally {
      ck.close();
    }
  });

  it('auto keeps an F16 checkpoint in f16, equal to its exact widening', async function () {
    // f16: the words are kept (no re-rounding): the logits equal a bf16-free f32 load of the widened words
    const src = path.join(root!, 'qwen2');
    const dir = path.join(tmp!, 'qwen2-f16');
    mkdirSync(dir);
    copyFileSync(path.join(src, 'config.json'), path.join(dir, 'config.json'));
    const { SafetensorsFile, writeSafetensors, f32ToF16 } = await import('@moi/core');
    const f = SafetensorsFile.open(path.join(src, 'model.safetensors'));
    const entries: [string, { dtype: 'F16'; shape: number[]; data: Uint16Array }][] = [];
    for (const [n, info] of f.tensors)
      entries.push([n, { dtype: 'F16', shape: info.shape, data: f32ToF16(f.readFloat32(n)) }]);
    f.close();
    writeSafetensors(path.join(dir, 'model.safetensors'), entries);
    const kept = await loadModel(dir);
    const wide = await loadModel(dir, { dtype: 'f32' });
    assert.equal(kept.dtype, 'f16');
    assert.equal(kept.dtypeNote, 'f16 checkpoint kept in 16 bits');
    const ids = readReference(src).cases[0].input_ids;
    const a = fullLogits(kept.model, ids);
    const b = fullLogits(wide.model, ids);
    kept.dispose();
    wide.dispose();
    let worst = 0;
    let scale = 1;
    for (let t = 0; t < a.length; t++)
      for (let v = 0; v < a[t].length; v++) {
        worst = Math.max(worst, Math.abs(a[t][v] - b[t][v]));
        scale = Math.max(scale, Math.abs(b[t][v]));
      }
    assert.ok(worst <= 1e-5 * scale, `f16 kept vs widened: ${worst} (scale ${scale})`);
  });
});
