/**
 * Issue 25, below the server:
 *
 * - the load-time weight check: NaN, ±Inf and |w| ≥ 2^64 written into a matrix or a norm vector
 *   of stories260K fail the load with E_NONFINITE_WEIGHTS naming the tensor and the counts, for
 *   every storage (f32, bf16, q8), before any forward; `checkTensors: false` loads the same file;
 *   scanBytes over hand-made bf16, f16, f32 and f64 words counts exactly what it should;
 * - a KV-cache row that gives up slots (truncate, reset) zeroes them, on both write paths, so a
 *   non-finite value written there by a failed request cannot reach the next request's attention
 *   (a mask cannot hide NaN: NaN · 0 = NaN), and a row truncated after NaN was written decodes the
 *   same logits as a fresh cache.
 */
import assert from 'node:assert/strict';
import { closeSync, cpSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, ModelError, requireShared, SafetensorsFile } from '@moi/core';
import { Engine } from '@moi/engine';
import { KVCache, loadModel } from '@moi/models';
import { HUGE_WEIGHT, scanBytes } from '../packages/models/src/finite.ts';

describe('load: non-finite weights fail with E_NONFINITE_WEIGHTS naming the tensor', function () {
  this.timeout(120_000);
  let tmp: string;
  let stories: string;

  /** A copy of stories260K with float32 `values` written at element offsets `at` of `tensor`. */
  function damaged(name: string, tensor: string, at: number[], values: number[]): string {
    const dir = path.join(tmp, name);
    cpSync(stories, dir, { recursive: true });
    const file = path.join(dir, 'model.safetensors');
    const f = SafetensorsFile.open(file);
    const info = f.info(tensor);
    f.close();
    const fd = openSync(file, 'r+');
    at.forEach((i, k) =>
      writeSync(fd, new Uint8Array(new Float32Array([values[k]]).buffer), 0, 4, info.offset + 4 * i),
    );
    closeSync(fd);
    return dir;
  }

  before(async function () {
    stories = path.join(requireShared(this), 'fixtures', 'stories260K');
    tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-nonfinite-weights-'));
    await initBackend({ backend: 'wasm' });
  });
  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('a matrix with NaN, +Inf, -Inf and 3e38: the tensor and both counts are named, in every storage', async () => {
    const tensor = 'model.layers.3.self_attn.v_proj.weight';
    const dir = damaged('matrix', tensor, [0, 17, 300, 2047], [Number.NaN, Infinity, -Infinity, 3e38]);
    for (const dtype of ['f32', 'bf16', 'q8'] as const) {
      const n0 = tf.memory().numTensors;
      await assert.rejects(loadModel(dir, { dtype }), (e: unknown) => {
        assert.ok(e instanceof ModelError && e.code === 'E_NONFINITE_WEIGHTS', `${dtype}: ${String(e)}`);
        assert.match(
          e.message,
          new RegExp(
            `tensor ${tensor.replaceAll('.', '\\.')} has 3 non-finite values \\(NaN or ±Inf\\) and 1 value of magnitude ≥ 2\\^64`,
          ),
        );
        assert.ok(e.message.includes(dir));
        assert.match(e.message, /--no-check-tensors/);
        return true;
      });
      assert.equal(tf.memory().numTensors, n0, `${dtype}: what was built before the failure is disposed`);
    }
  });

  it('a norm vector with one NaN (read whole, not streamed) fails the same way; 1e30 counts as huge', async () => {
    const nan = damaged('norm', 'model.norm.weight', [5], [Number.NaN]);
    await assert.rejects(
      loadModel(nan),
      /tensor model\.norm\.weight has 1 non-finite value \(NaN or ±Inf\) among its 64 values/,
    );
    const huge = damaged('embed', 'model.embed_tokens.weight', [1000], [1e30]);
    await assert.rejects(Engine.load(huge, { backend: 'wasm' }), (e: unknown) => {
      assert.ok(e instanceof ModelError && e.code === 'E_NONFINITE_WEIGHTS');
      assert.match(
        e.message,
        /tensor model\.embed_tokens\.weight has 1 value of magnitude ≥ 2\^64 \(their products overflow float32\) among its 32768 values/,
      );
      return true;
    });
  });

  it('checkTensors: false skips the check (the library option behind --no-check-tensors); an undamaged model loads either way', async () => {
    const dir = path.join(tmp, 'matrix');
    const m = await loadModel(dir, { checkTensors: false });
    m.dispose();
    for (const checkTensors of [true, false]) (await loadModel(stories, { checkTensors })).dispose();
  });

  it('scanBytes reads bit patterns: bf16, f16, f32 and f64 words counted by hand', () => {
    const bf16 = new Uint16Array([
      0x3f80 /* 1 */, 0x7f80 /* +Inf */, 0xff80 /* -Inf */, 0x7fc0 /* NaN */, 0x5f80 /* 2^64 */, 0x5f7f /* < 2^64 */,
      0xdf80 /* -2^64 */,
    ]);
    assert.deepEqual(scanBytes('BF16', new Uint8Array(bf16.buffer)), { nonFinite: 3, huge: 2 });
    const f16 = new Uint16Array([
      0x3c00 /* 1 */, 0x7bff /* 65504 */, 0x7c00 /* +Inf */, 0xfc00 /* -Inf */, 0x7e00 /* NaN */,
    ]);
    assert.deepEqual(scanBytes('F16', new Uint8Array(f16.buffer)), { nonFinite: 3, huge: 0 });
    const f32 = new Float32Array([1, -2.5e-40, 3.4e38, -HUGE_WEIGHT, HUGE_WEIGHT * 0.999, Number.NaN, Infinity, 0]);
    assert.deepEqual(scanBytes('F32', new Uint8Array(f32.buffer)), { nonFinite: 2, huge: 2 });
    const f64 = new Float64Array([1e300, -1e19, HUGE_WEIGHT, Number.NaN, -Infinity, 1e-310]);
    assert.deepEqual(scanBytes('F64', new Uint8Array(f64.buffer)), { nonFinite: 2, huge: 2 });
    assert.deepEqual(scanBytes('I32', new Uint8Array(new Int32Array([0x7f800000]).buffer)), { nonFinite: 0, huge: 0 });
  });
});

describe("KV cache: slots a row gives up are zeroed (a failed request's NaN cannot reach the next one)", function () {
  this.timeout(60_000);
  before(async () => {
    await initBackend({ backend: 'wasm' });
  });

  /** The row's key and value entries at `slots`, as numbers. */
  function slotValues(c: KVCache, row: number, slots: number[]): number[] {
    const k = c.keys.arraySync() as number[][][][];
    const v = c.valuesT.arraySync() as number[][][][];
    const out: number[] = [];
    for (let h = 0; h < c.kvHeads; h++) {
      for (const s of slots) {
        out.push(...k[row][h][s]);
        for (let d = 0; d < c.headDim; d++) out.push(v[row][h][d][s]);
      }
    }
    return out;
  }

  for (const noInPlace of [false, true]) {
    it(`truncate and reset zero the emptied slots of that row only${noInPlace ? ' (scatter fallback)' : ''}`, () => {
      const c = new KVCache({ batch: 2, kvHeads: 2, headDim: 4, capacity: 16, noInPlace });
      try {
        const nan = tf.fill([2, 2, 5, 4], Number.NaN) as tf.Tensor4D;
        c.append(nan, nan, [0, 1]);
        nan.dispose();
        assert.ok(slotValues(c, 0, [0, 4]).every(Number.isNaN));
        assert.equal(c.truncate(0, 2), true);
        assert.ok(
          slotValues(c, 0, [2, 3, 4]).every((x) => x === 0),
          'emptied slots of row 0 are zero',
        );
        assert.ok(slotValues(c, 0, [0, 1]).every(Number.isNaN), 'kept slots keep their values');
        assert.ok(slotValues(c, 1, [0, 1, 2, 3, 4]).every(Number.isNaN), 'row 1 untouched');
        c.reset([1]);
        assert.ok(slotValues(c, 1, [0, 1, 2, 3, 4]).every((x) => x === 0));
        assert.deepEqual(c.offset, [2, 0]);
      } finally {
        c.dispose();
      }
    });
  }

  it('a row truncated after NaN was written past the kept prefix decodes as a fresh cache does', async function () {
    const m = await loadModel(path.join(requireShared(this), 'fixtures', 'stories260K'));
    try {
      const prompt = [1, 403, 407, 261, 378];
      const last = (t: tf.Tensor3D) => {
        const a = t.arraySync();
        t.dispose();
        return a[0].at(-1)!;
      };
      const fresh = m.model.makeCache(1, 64);
      const want = last(m.model.forward({ ids: [prompt] }, { cache: fresh, lastOnly: true }));
      const cache = m.model.makeCache(1, 64);
      // the prompt, then three positions whose keys and values are NaN (as a failed MoI row left them)
      m.model.forward({ ids: [prompt.slice(0, 3)] }, { cache }).dispose();
      for (const c of cache) {
        const nan = tf.fill([1, c.kvHeads, 3, c.headDim], Number.NaN) as tf.Tensor4D;
        c.append(nan, nan, [0]);
        nan.dispose();
      }
      for (const c of cache) assert.equal(c.truncate(0, 3), true);
      const got = last(m.model.forward({ ids: [prompt.slice(3)] }, { cache, lastOnly: true }));
      assert.ok(got.every(Number.isFinite), 'finite logits after the truncate');
      const diff = Math.max(...got.map((x, i) => Math.abs(x - want[i])));
      assert.ok(diff < 1e-4, `max |Δ| ${diff}`);
      for (const c of [...fresh, ...cache]) c.dispose();
    } finally {
      m.dispose();
    }
  });
});
