/**
 * Loading a model folder: each user-caused failure is a typed ModelError (or, for the weights
 * files themselves, a SafetensorsError) with a stable code and a message that names the file,
 * field or tensor at fault; nothing is left allocated. Also the multimodal gemma3 layout (text
 * tower under text_config and `language_model` prefixes, vision weights dropped) and the
 * loader's progress reports and byte counts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  initBackend,
  ModelError,
  MoiError,
  SafetensorsError,
  SafetensorsFile,
  SHARED_MISSING,
  ThreadPool,
  type TensorInput,
} from '@moi/core';
import {
  familyFor,
  loadModel,
  readConfig,
  specFromConfig,
  SUPPORTED_MODEL_TYPES,
  type LoadProgress,
} from '../src/index.ts';
import {
  assertRowsClose,
  f32Input,
  fixturesRoot,
  fullLogits,
  makeTemp,
  readConfigJson,
  readReference,
  readTensors,
  rmTemp,
  tolFor,
  writeModel,
} from './helpers.ts';

/** What a failed load must throw: class, code, and patterns its message must contain. */
interface Expect {
  cls?: new (...a: any[]) => MoiError;
  code: string;
  mentions: Array<string | RegExp>;
}

async function assertLoadFails(dir: string, want: Expect): Promise<void> {
  const n0 = tf.memory().numTensors;
  await assert.rejects(loadModel(dir), (e: unknown) => {
    assert.ok(e instanceof (want.cls ?? ModelError), `expected ${(want.cls ?? ModelError).name}, got ${String(e)}`);
    assert.equal((e as MoiError).code, want.code, (e as Error).message);
    for (const m of want.mentions) {
      if (typeof m === 'string')
        assert.ok((e as Error).message.includes(m), `message should name ${m}: ${(e as Error).message}`);
      else assert.match((e as Error).message, m);
    }
    return true;
  });
  assert.equal(tf.memory().numTensors, n0, 'a failed load leaves no tensors');
}

describe('models: loading errors and layouts (wasm)', function () {
  const root = fixturesRoot();
  let tmp: string | undefined;
  let count = 0;
  let llama: string;

  /** A new folder holding `config` (an object, or raw text) and, unless `weights` is null, the weights. */
  function folder(config: unknown, weights: 'link' | null | Iterable<[string, TensorInput]>, from = llama): string {
    const dir = path.join(tmp!, `m${count++}`);
    mkdirSync(dir);
    if (config !== undefined)
      writeFileSync(path.join(dir, 'config.json'), typeof config === 'string' ? config : JSON.stringify(config));
    if (weights === 'link') symlinkSync(path.join(from, 'model.safetensors'), path.join(dir, 'model.safetensors'));
    else if (weights) writeModel(dir, config, weights);
    return dir;
  }

  /** The fixture's tensors, with `edit` applied to the [name, tensor] list. */
  function tensorsOf(dir: string, edit: (list: Array<[string, TensorInput]>) => Array<[string, TensorInput]>) {
    return edit([...readTensors(dir)].map(([n, t]) => [n, f32Input(t.shape, t.data)]));
  }

  before(async function () {
    if (!root) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
    tmp = makeTemp('errors');
    llama = path.join(root!, 'llama');
  });

  after(() => rmTemp(tmp));

  describe('config.json', function () {
    it('missing config.json: E_NO_CONFIG naming the file', async function () {
      const dir = folder(undefined, 'link');
      await assertLoadFails(dir, { code: 'E_NO_CONFIG', mentions: [path.join(dir, 'config.json'), 'not found'] });
    });

    it('invalid JSON: E_CONFIG naming the file', async function () {
      const dir = folder('{"model_type": "llama",', 'link');
      await assertLoadFails(dir, { code: 'E_CONFIG', mentions: [path.join(dir, 'config.json'), 'not valid JSON'] });
      const arr = folder('[1, 2]', 'link');
      await assertLoadFails(arr, { code: 'E_CONFIG', mentions: [path.join(arr, 'config.json'), 'JSON object'] });
    });

    it('unknown model_type: E_UNKNOWN_ARCH listing every supported type', async function () {
      const dir = folder({ ...readConfigJson(llama), model_type: 'mamba' }, 'link');
      await assertLoadFails(dir, {
        code: 'E_UNKNOWN_ARCH',
        mentions: [path.join(dir, 'config.json'), "'mamba'", ...SUPPORTED_MODEL_TYPES],
      });
      assert.deepEqual([...SUPPORTED_MODEL_TYPES].sort(), [
        'gemma',
        'gemma2',
        'gemma3',
        'gemma3_text',
        'llama',
        'mistral',
        'qwen2',
        'qwen3',
      ]);
    });

    it('missing model_type: E_CONFIG naming the field', async function () {
      const { model_type: _, ...rest } = readConfigJson(llama);
      const dir = folder(rest, 'link');
      await assertLoadFails(dir, {
        code: 'E_CONFIG',
        mentions: ["'model_type'", path.join(dir, 'config.json'), 'qwen3'],
      });
      assert.throws(
        () => familyFor(42),
        (e: unknown) => e instanceof ModelError && e.code === 'E_CONFIG',
      );
    });

    const bad: Array<[string, string, unknown, string]> = [
      ['missing', 'hidden_size', undefined, 'a number'],
      ['a string', 'num_hidden_layers', '4', 'a number'],
      ['not an integer', 'num_attention_heads', 2.5, 'a positive integer'],
      ['zero', 'intermediate_size', 0, 'a positive integer'],
      ['not a boolean', 'tie_word_embeddings', 'yes', 'true or false'],
      ['not an object', 'rope_scaling', 'linear', 'an object'],
    ];
    for (const [how, field, value, want] of bad) {
      it(`a required field ${how} (${field}): E_CONFIG naming it`, async function () {
        const config: Record<string, unknown> = { ...readConfigJson(llama), [field]: value };
        if (value === undefined) delete config[field];
        const dir = folder(config, 'link');
        await assertLoadFails(dir, { code: 'E_CONFIG', mentions: [`'${field}'`, want, path.join(dir, 'config.json')] });
      });
    }

    it('heads not a multiple of kv heads: E_CONFIG naming both', function () {
      assert.throws(
        () => specFromConfig({ ...readConfigJson(llama), num_key_value_heads: 3 }),
        (e: unknown) => {
          assert.ok(e instanceof ModelError && e.code === 'E_CONFIG');
          assert.match(e.message, /num_attention_heads \(4\).*num_key_value_heads \(3\)/);
          return true;
        },
      );
    });

    it('an unsupported rope type fails at load: E_CONFIG naming rope_scaling, the type and the file', async function () {
      const dir = folder({ ...readConfigJson(llama), rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'link');
      await assertLoadFails(dir, {
        code: 'E_CONFIG',
        mentions: ['rope_scaling', "'yarn'", 'llama3', path.join(dir, 'config.json')],
      });
      // a supported type missing a parameter it needs
      const rope3 = readConfigJson(path.join(root!, 'llama_rope3'));
      const { low_freq_factor: _, ...scaling } = rope3.rope_scaling as Record<string, unknown>;
      const dir2 = folder({ ...rope3, rope_scaling: scaling }, 'link', path.join(root!, 'llama_rope3'));
      await assertLoadFails(dir2, {
        code: 'E_CONFIG',
        mentions: ['rope_scaling.low_freq_factor', path.join(dir2, 'config.json')],
      });
    });

    it('an unsupported activation: E_CONFIG naming it', async function () {
      const dir = folder({ ...readConfigJson(llama), hidden_act: 'relu2' }, 'link');
      await assertLoadFails(dir, { code: 'E_CONFIG', mentions: ["'relu2'"] });
    });

    it('readConfig returns the parsed object', function () {
      assert.deepEqual(readConfig(llama), readConfigJson(llama));
    });
  });

  describe('checkpoint tensors', function () {
    it('a missing tensor: E_MISSING_TENSORS naming it', async function () {
      const gone = 'model.layers.2.mlp.up_proj.weight';
      const dir = folder(
        readConfigJson(llama),
        tensorsOf(llama, (l) => l.filter(([n]) => n !== gone)),
      );
      await assertLoadFails(dir, { code: 'E_MISSING_TENSORS', mentions: [gone, dir] });
    });

    it('an untied config over a tied checkpoint: E_MISSING_TENSORS naming lm_head.weight', async function () {
      const tied = path.join(root!, 'llama_tied');
      const dir = folder({ ...readConfigJson(tied), tie_word_embeddings: false }, 'link', tied);
      await assertLoadFails(dir, { code: 'E_MISSING_TENSORS', mentions: ['lm_head.weight'] });
    });

    it('an unexpected extra tensor: E_UNEXPECTED_TENSORS naming it', async function () {
      const extra = 'model.layers.0.self_attn.extra_proj.weight';
      const dir = folder(
        readConfigJson(llama),
        tensorsOf(llama, (l) => [...l, [extra, f32Input([2, 2], new Float32Array(4))]]),
      );
      await assertLoadFails(dir, { code: 'E_UNEXPECTED_TENSORS', mentions: [extra, dir] });
    });

    it('fewer layers in the config than the checkpoint: E_UNEXPECTED_TENSORS naming the extra layer', async function () {
      const dir = folder({ ...readConfigJson(llama), num_hidden_layers: 3 }, 'link');
      await assertLoadFails(dir, {
        code: 'E_UNEXPECTED_TENSORS',
        mentions: ['model.layers.3.self_attn.q_proj.weight'],
      });
    });

    it('a wrong shape: E_SHAPE naming the tensor and both shapes', async function () {
      const name = 'model.layers.1.self_attn.k_proj.weight';
      const dir = folder(
        readConfigJson(llama),
        tensorsOf(llama, (l) => l.map(([n, t]) => [n, n === name ? { ...t, shape: [64, 32] } : t])),
      );
      await assertLoadFails(dir, { code: 'E_SHAPE', mentions: [name, '[64, 32]', '[32, 64]', dir] });
    });

    it('a config whose sizes disagree with the weights: E_SHAPE naming the first tensor', async function () {
      const dir = folder({ ...readConfigJson(llama), intermediate_size: 96 }, 'link');
      await assertLoadFails(dir, {
        code: 'E_SHAPE',
        mentions: ['model.layers.0.mlp.gate_proj.weight', '[128, 64]', '[96, 64]'],
      });
    });

    it('no weights file: a SafetensorsError naming the folder', async function () {
      const dir = folder(readConfigJson(llama), null);
      await assertLoadFails(dir, { cls: SafetensorsError, code: 'E_ST_NO_FILES', mentions: [dir] });
    });

    it('a rotary inv_freq buffer and a saved tied head are ignored', async function () {
      const tied = path.join(root!, 'llama_tied');
      const list = tensorsOf(tied, (l) => {
        const embed = l.find(([n]) => n === 'model.embed_tokens.weight')![1];
        return [
          ...l,
          ['model.layers.0.self_attn.rotary_emb.inv_freq', f32Input([8], new Float32Array(8))],
          ['lm_head.weight', embed],
        ];
      });
      const dir = folder(readConfigJson(tied), list);
      const m = await loadModel(dir);
      try {
        const c = readReference(tied).cases[0];
        assertRowsClose(fullLogits(m.model, c.input_ids), c.logits, tolFor(c.logits), 'llama_tied with extras');
      } finally {
        m.dispose();
      }
    });
  });

  describe('multimodal gemma3 folder (text tower)', function () {
    const layouts = [
      {
        label: 'language_model.model.* (transformers < 4.52)',
        prefix: 'language_model.',
        vision: 'vision_tower.vision_model.x.weight',
      },
      {
        label: 'model.language_model.* (transformers >= 4.52)',
        prefix: '',
        vision: 'model.vision_tower.vision_model.x.weight',
      },
    ];
    for (const { label, prefix, vision } of layouts) {
      it(`${label}: loads and gives gemma3_text's logits`, async function () {
        const textDir = path.join(root!, 'gemma3_text');
        const text = readConfigJson(textDir);
        const config = {
          model_type: 'gemma3',
          architectures: ['Gemma3ForConditionalGeneration'],
          text_config: text,
          vision_config: { hidden_size: 8 },
        };
        const rename = (n: string) => (prefix ? `${prefix}${n}` : n.replace(/^model\./, 'model.language_model.'));
        const list = tensorsOf(textDir, (l) => [
          ...l.map(([n, t]): [string, TensorInput] => [rename(n), t]),
          [vision, f32Input([4, 4], new Float32Array(16).fill(1))],
          ['multi_modal_projector.mm_input_projection_weight', f32Input([4, 64], new Float32Array(256))],
        ]);
        assert.ok(
          list.some(([n]) =>
            n.startsWith(prefix ? 'language_model.model.layers.0.' : 'model.language_model.layers.0.'),
          ),
        );
        const dir = folder(config, list);
        const progress: LoadProgress[] = [];
        const mm = await loadModel(dir, { onProgress: (p) => progress.push(p) });
        const plain = await loadModel(textDir);
        try {
          assert.equal(mm.spec.modelType, 'gemma3_text');
          assert.deepEqual(mm.spec, plain.spec);
          // vision tensors are neither read nor counted
          assert.equal(mm.checkpointBytes, plain.checkpointBytes);
          assert.ok(progress.every((p) => !/vision|projector/.test(p.tensor)));
          const ref = readReference(textDir);
          for (const c of ref.cases) {
            const got = fullLogits(mm.model, c.input_ids);
            assertRowsClose(got, fullLogits(plain.model, c.input_ids), 0, `${c.name}: multimodal vs text`);
            assertRowsClose(got, c.logits, tolFor(c.logits), `${c.name}: multimodal vs reference`);
          }
        } finally {
          mm.dispose();
          plain.dispose();
        }
      });
    }
  });

  describe('loadModel progress and sizes', function () {
    it('onProgress reports increasing bytes, one tensor at a time, ending at totalBytes', async function () {
      const f = SafetensorsFile.open(path.join(llama, 'model.safetensors'));
      const infos = [...f.tensors.values()];
      f.close();
      const fileBytes = infos.reduce((s, t) => s + t.byteLength, 0);
      const all: LoadProgress[] = [];
      const m = await loadModel(llama, { onProgress: (p) => all.push({ ...p }) });
      // one report per tensor read, then one when the weights are laid out, packed and built
      const last = all[all.length - 1];
      assert.deepEqual([last.phase, last.bytes, last.builtBytes, last.tensor], ['done', fileBytes, fileBytes, '']);
      const progress = all.slice(0, -1);
      try {
        assert.ok(
          progress.every(
            (p, i) =>
              p.phase === 'read' && p.builtBytes <= p.bytes && (i === 0 || p.builtBytes >= progress[i - 1].builtBytes),
          ),
        );
        assert.ok(
          progress.some((p) => p.builtBytes < p.bytes),
          'building lags reading',
        );
        assert.equal(progress.length, infos.length);
        assert.deepEqual(progress.map((p) => p.tensor).sort(), infos.map((t) => t.name).sort());
        let prev = 0;
        for (const p of progress) {
          assert.equal(p.totalBytes, fileBytes);
          assert.equal(p.bytes - prev, infos.find((t) => t.name === p.tensor)!.byteLength, p.tensor);
          assert.ok(p.bytes > prev);
          prev = p.bytes;
        }
        assert.equal(prev, fileBytes);
        assert.equal(m.checkpointBytes, fileBytes);
        assert.ok(m.loadSeconds >= 0);
      } finally {
        m.dispose();
      }
    });

    for (const name of ['llama', 'llama_tied', 'gemma2', 'qwen2']) {
      it(`${name}: weightBytes is what the weights hold in tensor memory (tfjs's kernels) or in tensors plus the pool's blocks`, async function () {
        const pool = await ThreadPool.create({ threads: 1 });
        try {
          for (const held of ['tensors', 'pool'] as const) {
            const b0 = tf.memory().numBytes;
            const u0 = pool.heap.used;
            const m = await loadModel(
              path.join(root!, name),
              held === 'pool' ? { pool } : { threadedWeights: 'never' },
            );
            try {
              assert.equal(m.threads.pooled, held === 'pool');
              assert.equal(tf.memory().numBytes - b0 + (pool.heap.used - u0), m.weightBytes, held);
              if (held === 'pool')
                assert.ok(pool.heap.used - u0 > 0.9 * m.checkpointBytes, 'the matrices are in the pool');
              // no copy beyond the one a tied head may need (norm vectors may be folded away)
              const { vocabSize: V, hiddenSize: H } = m.spec;
              const most = m.checkpointBytes + (m.spec.tieWordEmbeddings ? V * H * 4 : 0);
              // the pool pads rows and columns to multiples of 32
              const slack = held === 'pool' ? 1.5 : 1;
              assert.ok(
                m.weightBytes <= most * slack && m.weightBytes >= 0.9 * m.checkpointBytes,
                `${held}: ${m.weightBytes} bytes in memory for a ${m.checkpointBytes}-byte f32 checkpoint`,
              );
            } finally {
              m.dispose();
            }
            assert.equal(pool.heap.used, u0, `${held}: dispose frees the pool's blocks`);
          }
        } finally {
          await pool.dispose();
        }
      });
    }

    it('dispose frees every weight tensor', async function () {
      const n0 = tf.memory().numTensors;
      const m = await loadModel(path.join(root!, 'gemma2'));
      assert.ok(tf.memory().numTensors > n0);
      m.dispose();
      assert.equal(tf.memory().numTensors, n0);
    });
  });
});

describe('weight dtypes', () => {
  it('refuses an unknown dtype choice (E_DTYPE, naming it and the choices)', async function () {
    const dir = path.join(fixturesRoot() ?? '', 'llama');
    if (!fixturesRoot()) {
      console.log('shared/ missing (skipping)');
      this.skip();
    }
    await assert.rejects(
      loadModel(dir, { dtype: 'fp8' as never }),
      (e: any) => e.code === 'E_DTYPE' && e.message.includes('"fp8"') && e.message.includes('auto, f32, bf16, q8'),
    );
  });
  it('refuses a weight stored as integers, naming the tensor (E_DTYPE)', async function () {
    const { sharedDir } = await import('@moi/core');
    const shared = sharedDir();
    if (!shared) {
      console.log('shared/ missing (skipping)');
      this.skip();
    }
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const core = await import('@moi/core');
    const models = await import('@moi/models');
    const src = path.join(shared!, 'fixtures', 'llama');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moi-int-'));
    try {
      fs.copyFileSync(path.join(src, 'config.json'), path.join(dir, 'config.json'));
      const st = core.SafetensorsFile.open(path.join(src, 'model.safetensors'));
      const entries: [string, TensorInput][] = [];
      for (const [name, info] of st.tensors) {
        const f = st.readFloat32(name);
        entries.push(
          name === 'model.norm.weight'
            ? [name, { dtype: 'I32', shape: info.shape, data: Int32Array.from(f, (x) => Math.round(x)) }]
            : [name, { dtype: 'F32', shape: info.shape, data: f }],
        );
      }
      st.close();
      core.writeSafetensors(path.join(dir, 'model.safetensors'), entries);
      await assert.rejects(
        models.loadModel(dir),
        (e: any) => e.code === 'E_DTYPE' && /model\.norm\.weight/.test(e.message) && /I32/.test(e.message),
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
