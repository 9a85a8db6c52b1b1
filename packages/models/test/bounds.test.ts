/**
 * Config bounds and file checks, on the cases measured in issue 9: every size and count is
 * bounded before anything is allocated, every rope/norm/window parameter has its range, and a
 * bad value is a ModelError naming the field, the value and the range. Special files and index
 * entries outside the folder are typed errors, never EISDIR or a hang.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { initBackend, ModelError, MoiError, SafetensorsError } from '@moi/core';
import { LIMITS, loadModel, specFromConfig } from '../src/index.ts';
import { fixturesRoot, makeTemp, readConfigJson, rmTemp } from './helpers.ts';

describe('models: config bounds and file checks', function () {
  const root = fixturesRoot();
  let tmp: string | undefined;
  let n = 0;
  let stories: Record<string, unknown>;
  let gemma2: Record<string, unknown>;

  before(async function () {
    if (!root) this.skip();
    await initBackend({ backend: 'wasm' });
    tmp = makeTemp('bounds');
    stories = readConfigJson(path.join(root!, 'stories260K'));
    gemma2 = readConfigJson(path.join(root!, 'gemma2'));
  });
  after(() => rmTemp(tmp));

  /** specFromConfig must throw E_CONFIG naming the field, the value and the allowed range. */
  function refuses(config: Record<string, unknown>, field: string, value: string, range: RegExp): void {
    assert.throws(
      () => specFromConfig(config),
      (e: unknown) => {
        assert.ok(e instanceof ModelError, String(e));
        assert.equal(e.code, 'E_CONFIG');
        assert.ok(e.message.includes(`'${field}'`), e.message);
        assert.ok(e.message.includes(`(got ${value})`), e.message);
        assert.match(e.message, range);
        return true;
      },
    );
  }

  it("sizes and counts are bounded before allocation (the issue's OOM, RangeError and 4 GB cases)", () => {
    refuses({ ...stories, num_hidden_layers: 1_000_000_000 }, 'num_hidden_layers', '1000000000', /≤ 1024/);
    refuses({ ...stories, num_hidden_layers: 4294967296 }, 'num_hidden_layers', '4294967296', /≤ 1024/);
    refuses({ ...stories, head_dim: 1_000_000_000 }, 'head_dim', '1000000000', new RegExp(`≤ ${LIMITS.headDim}`));
    refuses(
      { model_type: 'gemma3', text_config: { num_hidden_layers: 10_000_000 } },
      'num_hidden_layers',
      '10000000',
      /text_config.*≤ 1024/,
    );
    refuses({ ...stories, vocab_size: 2 ** 22 + 1 }, 'vocab_size', String(2 ** 22 + 1), /≤ 4194304/);
    refuses({ ...stories, hidden_size: 65537 }, 'hidden_size', '65537', /≤ 65536/);
    // real shapes pass: Llama 3.1 405B, Gemma 3's vocabulary
    specFromConfig({
      ...stories,
      num_hidden_layers: 126,
      hidden_size: 16384,
      num_attention_heads: 128,
      num_key_value_heads: 8,
      intermediate_size: 53248,
      vocab_size: 262208,
    });
  });

  it('heads must divide the sizes they split', () => {
    assert.throws(
      () => specFromConfig({ ...stories, hidden_size: 65, head_dim: undefined }),
      /hidden_size \(65\) must be a multiple of num_attention_heads/,
    );
    assert.throws(() => specFromConfig({ ...stories, head_dim: 7 }), /head_dim \(7\) must be even/);
  });

  it('every rope, norm and window parameter has its range', () => {
    refuses({ ...stories, partial_rotary_factor: -1 }, 'partial_rotary_factor', '-1', /\(0, 1\]/);
    refuses({ ...stories, partial_rotary_factor: 0 }, 'partial_rotary_factor', '0', /\(0, 1\]/);
    refuses({ ...stories, partial_rotary_factor: 2 }, 'partial_rotary_factor', '2', /\(0, 1\]/);
    refuses({ ...stories, sliding_window: -1 }, 'sliding_window', '-1', /positive integer/);
    refuses({ ...stories, sliding_window: 1.5 }, 'sliding_window', '1.5', /positive integer/);
    refuses({ ...stories, rms_norm_eps: -1 }, 'rms_norm_eps', '-1', /\(0, 1\]/);
    refuses({ ...stories, rope_theta: 0 }, 'rope_theta', '0', /> 0/);
    refuses({ ...stories, rope_scaling: { rope_type: 'linear', factor: 0 } }, 'rope_scaling.factor', '0', /> 0/);
    refuses(
      {
        ...stories,
        rope_scaling: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 4,
          high_freq_factor: 1,
          original_max_position_embeddings: 8192,
        },
      },
      'rope_scaling.high_freq_factor',
      '1',
      /greater than low_freq_factor/,
    );
    refuses({ ...gemma2, query_pre_attn_scalar: -1 }, 'query_pre_attn_scalar', '-1', /> 0/);
    refuses({ ...gemma2, final_logit_softcapping: 0 }, 'final_logit_softcapping', '0', /> 0/);
    refuses({ ...gemma2, sliding_window: 0 }, 'sliding_window', '0', /positive integer/);
    // a partial rotary factor must rotate an even number of dimensions
    assert.throws(
      () => specFromConfig({ ...stories, partial_rotary_factor: 0.1 }),
      /rotary dimensions; it must be an even number/,
    );
  });

  /** A folder with stories260K's config and `weights` at model.safetensors (or nothing). */
  async function folderWith(
    make: (file: string) => Promise<(() => Promise<void>) | void> | void,
  ): Promise<{ dir: string; done: () => Promise<void> }> {
    const dir = path.join(tmp!, `f${n++}`);
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(stories));
    const cleanup = await make(path.join(dir, 'model.safetensors'));
    return { dir, done: cleanup ?? (async () => {}) };
  }

  async function rejectsTyped(dir: string, code: string, mention: RegExp): Promise<void> {
    await assert.rejects(loadModel(dir), (e: unknown) => {
      assert.ok(e instanceof MoiError, `untyped: ${String(e)}`);
      assert.equal(e.code, code, e.message);
      assert.match(e.message, mention);
      return true;
    });
  }

  it('a directory, FIFO or socket named model.safetensors is a typed error (no EISDIR, no hang)', async function () {
    const d = await folderWith((f) => {
      mkdirSync(f);
    });
    await rejectsTyped(d.dir, 'E_ST_OPEN', /is a directory, not a regular file/);
    if (spawnSync('mkfifo', ['--version']).status === 0) {
      const fifo = await folderWith((f) => {
        spawnSync('mkfifo', [f]);
      });
      await rejectsTyped(fifo.dir, 'E_ST_OPEN', /is a FIFO/);
    }
    const sock = await folderWith(async (f) => {
      const server = net.createServer();
      await new Promise<void>((r) => server.listen(f, () => r()));
      return () => new Promise<void>((r) => server.close(() => r()));
    });
    try {
      await rejectsTyped(sock.dir, 'E_ST_OPEN', /is a socket/);
    } finally {
      await sock.done();
    }
    const cfgDir = path.join(tmp!, `f${n++}`);
    mkdirSync(path.join(cfgDir, 'config.json'), { recursive: true });
    await rejectsTyped(cfgDir, 'E_CONFIG', /config\.json: cannot read it: it is a directory/);
  });

  it('index entries must name files in the model folder: ".", "..", paths and a directory shard are refused', async () => {
    for (const shard of ['.', '..', '../model.safetensors', '/etc/passwd', 'sub/x.safetensors']) {
      const d = await folderWith(() => {});
      writeFileSync(
        path.join(d.dir, 'model.safetensors.index.json'),
        JSON.stringify({ weight_map: { 'model.norm.weight': shard } }),
      );
      await assert.rejects(loadModel(d.dir), (e: unknown) => {
        assert.ok(e instanceof SafetensorsError && e.code === 'E_ST_INDEX', String(e));
        assert.ok(e.message.includes(JSON.stringify(shard)), e.message);
        assert.match(e.message, /is not a file name in this folder/);
        return true;
      });
    }
    const d = await folderWith(() => {});
    mkdirSync(path.join(d.dir, 'shard.safetensors'));
    writeFileSync(
      path.join(d.dir, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { 'model.norm.weight': 'shard.safetensors' } }),
    );
    await rejectsTyped(d.dir, 'E_ST_INDEX', /shard shard\.safetensors is a directory/);
    const loop = await folderWith((f) => {
      symlinkSync(f, f);
    });
    await rejectsTyped(loop.dir, 'E_ST_OPEN', /cannot be read \(ELOOP\)/);
  });
});
