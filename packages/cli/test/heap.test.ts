// The wasm heap arithmetic (src/bench/heap.ts, bench/heap.ts) against sizes computed by hand from
// the published shapes' numbers, and the table's verdicts against the heap limit.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot, requireShared } from '@moi/core';
import { HEAP_ACTIVATION_RESERVE, WASM_HEAP_BYTES, specFromConfig, type RawConfig } from '@moi/models';
import { WASM_HEAP_LIMIT, heapRow, heapTable, kvCacheBytes, paramCount, tokensThatFit } from '../src/bench/heap.ts';

const configOf = (shared: string, name: string) =>
  JSON.parse(fs.readFileSync(path.join(shared, 'peer-bench', 'configs', `${name}.json`), 'utf8')) as RawConfig;

describe('heap: the 4 GiB wasm heap arithmetic', function () {
  it('SmolLM2-135M by hand: weights at f32, bf16 and q8, the KV cache at 4,096 tokens', function () {
    const config = configOf(requireShared(this), 'smollm2-135m');
    // hidden 576, intermediate 1536, 30 layers, 9 heads and 3 KV heads of 64, vocab 49,152, tied head
    const H = 576,
      I = 1536,
      L = 30,
      kv = 3 * 64,
      V = 49152;
    const perLayer = [
      [H, H],
      [kv, H],
      [kv, H],
      [H, H],
      [I, H],
      [I, H],
      [H, I],
    ]; // q k v o gate up down, [rows, cols]
    const layerValues = perLayer.reduce((n, [r, c]) => n + r * c, 0);
    assert.equal(layerValues, 3_538_944);
    const matrixValues = L * layerValues + V * H; // the tied head is the embedding, once
    const normValues = L * 2 * H + H;
    assert.equal(matrixValues + normValues, 134_515_008);
    // q8: one byte per value + an f32 scale per 32 values along each row (576 and 1536 are multiples of 32)
    const q8Matrices = L * perLayer.reduce((n, [r, c]) => n + r * c + r * (c / 32) * 4, 0) + V * H + V * (H / 32) * 4;
    const want = {
      // f32 on wasm: the tied table twice (XNNPACK's packed copy for the head, the original for the gathers)
      f32: (matrixValues + V * H) * 4 + normValues * 4,
      bf16: matrixValues * 2 + normValues * 4,
      q8: q8Matrices + normValues * 4,
    };
    assert.equal(want.f32, 651_306_240);
    assert.equal(want.bf16, 269_100_288);
    assert.equal(want.q8, 151_430_400);
    const kv4096 = L * 2 * kv * 4096 * 4; // K and V, f32, every layer full attention
    assert.equal(kv4096, 188_743_680);
    for (const dtype of ['f32', 'bf16', 'q8'] as const) {
      const r = heapRow('smollm2-135m', config, dtype);
      assert.equal(r.params, 134_515_008);
      assert.equal(r.weightBytes, want[dtype], dtype);
      assert.equal(r.kvBytes, kv4096);
      assert.equal(r.totalBytes, want[dtype] + kv4096);
      assert.equal(r.fits, true);
      assert.equal(r.loads, true);
    }
  });

  it('Gemma 3 270M: sliding-window layers keep 512 slots, the global layers all 4,096', function () {
    const config = configOf(requireShared(this), 'gemma-3-270m');
    // 18 layers: every sixth global; 1 KV head of 256
    assert.equal(heapRow('gemma-3-270m', config, 'q8').kvBytes, (15 * 512 + 3 * 4096) * 2 * 256 * 4);
  });

  it('the larger shapes: f32 does not load, q8 fits with a 4,096-token cache, bf16 Qwen3-1.7B only with a shorter one', function () {
    const shared = requireShared(this);
    const limit = WASM_HEAP_BYTES - HEAP_ACTIVATION_RESERVE;
    assert.equal(WASM_HEAP_LIMIT, limit);
    for (const name of ['qwen3-1.7b', 'qwen2.5-1.5b']) {
      const config = configOf(shared, name);
      assert.equal(heapRow(name, config, 'f32').loads, false, `${name} f32`);
      assert.equal(heapRow(name, config, 'q8').fits, true, `${name} q8`);
    }
    const q17 = configOf(shared, 'qwen3-1.7b');
    const bf16 = heapRow('qwen3-1.7b', q17, 'bf16');
    // hidden 2048, 28 layers, 8 KV heads of 128; bf16 matrices: 2 bytes per value, norms f32
    const { spec } = specFromConfig(q17);
    const values = paramCount(spec);
    const norms = 28 * (2 * 2048 + 2 * 128) + 2048;
    assert.equal(bf16.weightBytes, (values - norms) * 2 + norms * 4);
    assert.equal(bf16.fits, false);
    assert.equal(bf16.loads, true);
    // the longest cache that fits beside those weights: n tokens fit, n + 1 do not
    const perToken = 28 * 2 * 8 * 128 * 4;
    assert.equal(kvCacheBytes(spec, 100), 100 * perToken);
    assert.equal(bf16.maxTokens, Math.floor((limit - bf16.weightBytes) / perToken));
    assert.equal(tokensThatFit(spec, 10 * perToken, 4096), 10);
    assert.equal(tokensThatFit(spec, perToken - 1, 4096), 0);
    assert.match(
      heapTable([bf16]),
      /\| qwen3-1\.7b \| 1\.721 B \| 0\.94 GB \| 3\.44 \+ 0\.94 = 4\.38 GB \*\*does not fit\*\* \([\d,]+ tok do\) \|/,
    );
  });

  it('bench/heap.ts prints every shape at every dtype, from the same arithmetic', function () {
    const shared = requireShared(this);
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'bench/heap.ts', '--json', '--configs', path.join(shared, 'peer-bench', 'configs')],
      { cwd: repoRoot, encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      rows: { shape: string; dtype: 'f32' | 'bf16' | 'q8'; weightBytes: number }[];
      limit_bytes: number;
    };
    assert.equal(out.rows.length, 6 * 3);
    assert.equal(out.limit_bytes, WASM_HEAP_LIMIT);
    for (const row of out.rows)
      assert.equal(row.weightBytes, heapRow(row.shape, configOf(shared, row.shape), row.dtype).weightBytes);
    const bad = spawnSync(process.execPath, ['--import', 'tsx', 'bench/heap.ts', '--tokens', 'many'], {
      cwd: repoRoot,
      encoding: 'utf8',
    });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--tokens needs a positive integer/);
  });
});
