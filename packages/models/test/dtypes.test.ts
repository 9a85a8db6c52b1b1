/**
 * BF16 and F16 checkpoints: a fixture rewritten in 16-bit must give the logits of an F32
 * checkpoint holding the same rounded values (rounded here with @moi/core's converters), so the
 * loader's widening is exact; and those logits must differ from the unrounded model's, so the
 * comparison can tell the two apart. Also a mixed file (BF16 matrices, F32 norms), as many
 * published checkpoints are.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, initBackend, SHARED_MISSING, type TensorInput } from '@moi/core';
import { loadModel } from '../src/index.ts';
import {
  assertRowsClose,
  f32Input,
  fixturesRoot,
  fullLogits,
  makeTemp,
  maxDiff,
  readConfigJson,
  readReference,
  readTensors,
  rmTemp,
  tolFor,
  writeModel,
} from './helpers.ts';

type Wide = (x: Float32Array) => Uint16Array;
type Narrow = (x: Uint16Array) => Float32Array;
const FORMATS: Array<{ dtype: 'BF16' | 'F16'; to: Wide; from: Narrow }> = [
  { dtype: 'BF16', to: f32ToBf16, from: bf16ToF32 },
  { dtype: 'F16', to: f32ToF16, from: f16ToF32 },
];

/** Logits of every reference case, concatenated over positions. */
async function caseLogits(
  dir: string,
  cases: number[][],
  dtype: 'auto' | 'f32' = 'auto',
): Promise<{ rows: Float32Array[]; checkpointBytes: number; weightBytes: number; dtype: string }> {
  const m = await loadModel(dir, { dtype });
  try {
    return {
      rows: cases.flatMap((ids) => fullLogits(m.model, ids)),
      checkpointBytes: m.checkpointBytes,
      weightBytes: m.weightBytes,
      dtype: m.dtype,
    };
  } finally {
    m.dispose();
  }
}

describe('models: 16-bit checkpoints (wasm)', function () {
  const root = fixturesRoot();
  let tmp: string | undefined;

  before(async function () {
    if (!root) {
      console.log(SHARED_MISSING);
      this.skip();
    }
    await initBackend({ backend: 'wasm' });
    tmp = makeTemp('dtypes');
  });

  after(() => rmTemp(tmp));

  for (const name of ['qwen3', 'gemma2']) {
    for (const { dtype, to, from } of FORMATS) {
      for (const mixed of [false, true]) {
        const label = mixed ? `${dtype} matrices, F32 vectors` : dtype;
        it(`${name}: ${label} loads exactly as F32 holding the rounded values`, async function () {
          const src = path.join(root!, name);
          const config = readConfigJson(src);
          const tensors = readTensors(src);
          const ids = readReference(src).cases.map((c) => c.input_ids);
          const narrowIt = (shape: number[]) => !mixed || shape.length > 1;

          const half: Array<[string, TensorInput]> = [];
          const rounded: Array<[string, TensorInput]> = [];
          let changed = 0;
          for (const [n, t] of tensors) {
            if (!narrowIt(t.shape)) {
              half.push([n, f32Input(t.shape, t.data)]);
              rounded.push([n, f32Input(t.shape, t.data)]);
              continue;
            }
            const bits = to(t.data);
            const back = from(bits);
            for (let i = 0; i < back.length; i++) if (back[i] !== t.data[i]) changed++;
            half.push([n, { dtype, shape: t.shape, data: bits }]);
            rounded.push([n, f32Input(t.shape, back)]);
          }
          assert.ok(changed > 1000, 'rounding changed the weights');
          const tag = `${name}-${dtype}-${mixed ? 'mixed' : 'all'}`;
          const halfDir = path.join(tmp!, `${tag}-16`);
          const roundDir = path.join(tmp!, `${tag}-rounded`);
          mkdirSync(halfDir);
          mkdirSync(roundDir);
          writeModel(halfDir, { ...config, torch_dtype: dtype === 'BF16' ? 'bfloat16' : 'float16' }, half);
          writeModel(roundDir, config, rounded);

          // --dtype f32: widened exactly at load
          const a = await caseLogits(halfDir, ids, 'f32');
          const b = await caseLogits(roundDir, ids);
          const orig = await caseLogits(src, ids);
          const scale = tolFor(b.rows) / 1e-4;
          assertRowsClose(a.rows, b.rows, 1e-5 * scale, `${tag}: 16-bit vs rounded F32`);
          // auto (issue 15): the 16-bit words kept as they are (packed), the same values
          const kept = await caseLogits(halfDir, ids);
          assert.equal(kept.dtype, dtype === 'BF16' ? 'bf16' : 'f16');
          assertRowsClose(kept.rows, b.rows, 1e-5 * scale, `${tag}: 16-bit kept vs rounded F32`);
          assert.ok(
            kept.weightBytes < 0.6 * orig.weightBytes,
            `${tag}: 16-bit weights take ${kept.weightBytes} bytes (f32: ${orig.weightBytes})`,
          );
          // ten times the tolerance above: the comparison can tell rounded from unrounded weights
          assert.ok(
            maxDiff(a.rows, orig.rows) > 1e-4 * scale,
            `${tag}: rounding should move the logits (max diff ${maxDiff(a.rows, orig.rows)})`,
          );
          // the 16-bit file is (about) half the bytes; widened to f32 (--dtype f32) memory holds float32
          const f32Bytes = [...tensors.values()].reduce((s, t) => s + t.data.length * 4, 0);
          const vecBytes = [...tensors.values()]
            .filter((t) => !narrowIt(t.shape))
            .reduce((s, t) => s + t.data.length * 4, 0);
          assert.equal(orig.checkpointBytes, f32Bytes);
          assert.equal(a.checkpointBytes, vecBytes + (f32Bytes - vecBytes) / 2);
          assert.equal(a.weightBytes, orig.weightBytes);
        });
      }
    }
  }
});
