/**
 * generation_config.json / config.json reading and merging. Expected values are the literal
 * contents of the files (shared/fixtures/stories260K, and temp folders written here).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ModelError, requireShared } from '@moi/core';
import { eosIds, loadTokenizer, readGenerationConfig } from '../src/index.ts';

describe('text: generation_config', function () {
  let tmp: string;
  const folder = (files: Record<string, unknown>): string => {
    const dir = mkdtempSync(path.join(tmp, 'm-'));
    for (const [name, value] of Object.entries(files)) {
      writeFileSync(path.join(dir, name), typeof value === 'string' ? value : JSON.stringify(value));
    }
    return dir;
  };

  before(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-gencfg-'));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('stories260K: eos 2, bos 1, pad 0, no sampling defaults', function () {
    const shared = requireShared(this);
    const dir = path.join(shared!, 'fixtures/stories260K');
    assert.deepEqual(readGenerationConfig(dir), { eosTokenIds: [2], bosTokenId: 1, padTokenId: 0, defaults: {} });
    assert.deepEqual(eosIds(dir, loadTokenizer(dir)), [2]);
  });

  it('eos_token_id as a list; sampling defaults mapped to camelCase', function () {
    const dir = folder({
      'generation_config.json': {
        bos_token_id: 151643,
        eos_token_id: [151645, 151643],
        pad_token_id: 151643,
        do_sample: true,
        temperature: 0.6,
        top_p: 0.95,
        top_k: 20,
        min_p: 0,
        repetition_penalty: 1.05,
        max_new_tokens: 512,
        transformers_version: '4.51.0',
      },
    });
    assert.deepEqual(readGenerationConfig(dir), {
      eosTokenIds: [151645, 151643],
      bosTokenId: 151643,
      padTokenId: 151643,
      defaults: {
        temperature: 0.6,
        topP: 0.95,
        topK: 20,
        minP: 0,
        repetitionPenalty: 1.05,
        doSample: true,
        maxNewTokens: 512,
      },
    });
  });

  it('merge: generation_config.json wins field by field; config.json fills the gaps', function () {
    const both = folder({
      'config.json': { eos_token_id: 1, bos_token_id: 2, pad_token_id: 0, temperature: 0.1 },
      'generation_config.json': { eos_token_id: [1, 106], temperature: 1.0, top_k: 64 },
    });
    // eos from generation_config; bos/pad only in config.json; config.json's legacy sampling
    // fields are ignored once generation_config.json exists.
    assert.deepEqual(readGenerationConfig(both), {
      eosTokenIds: [1, 106],
      bosTokenId: 2,
      padTokenId: 0,
      defaults: { temperature: 1, topK: 64 },
    });

    const genNoEos = folder({ 'config.json': { eos_token_id: [7, 8] }, 'generation_config.json': { top_p: 0.9 } });
    assert.deepEqual(readGenerationConfig(genNoEos), { eosTokenIds: [7, 8], defaults: { topP: 0.9 } });

    const configOnly = folder({ 'config.json': { eos_token_id: 5, temperature: 0.7, top_k: 50 } });
    assert.deepEqual(readGenerationConfig(configOnly), { eosTokenIds: [5], defaults: { temperature: 0.7, topK: 50 } });

    // Multimodal exports keep the ids in text_config.
    const nested = folder({
      'config.json': { model_type: 'gemma3', text_config: { eos_token_id: [1, 106], bos_token_id: 2 } },
    });
    assert.deepEqual(readGenerationConfig(nested), { eosTokenIds: [1, 106], bosTokenId: 2, defaults: {} });

    assert.deepEqual(readGenerationConfig(folder({})), { eosTokenIds: [], defaults: {} });
  });

  it('eosIds unites generation_config, config.json and the tokenizer eos, without repeats', function () {
    requireShared(this);
    const dir = folder({ 'generation_config.json': { eos_token_id: [151643, 151645] } });
    // Qwen3's tokenizer_config eos is <|im_end|> = 151645: already in the list.
    const fakeTok = { eosTokenIds: [151645] };
    assert.deepEqual(eosIds(dir, fakeTok), [151643, 151645]);
    // Llama-3 base tokenizer's eos <|end_of_text|> plus an instruct generation_config's <|eot_id|>.
    const l3 = folder({ 'generation_config.json': { eos_token_id: 128009 } });
    assert.deepEqual(eosIds(l3, { eosTokenIds: [128001] }), [128009, 128001]);
    assert.deepEqual(eosIds(l3), [128009]);
    // config.json's eos joins too, even where generation_config.json overrides it for readGenerationConfig.
    const both = folder({
      'config.json': { eos_token_id: 128001 },
      'generation_config.json': { eos_token_id: [128001, 128008, 128009] },
    });
    assert.deepEqual(readGenerationConfig(both).eosTokenIds, [128001, 128008, 128009]);
    const split = folder({ 'config.json': { eos_token_id: 2 }, 'generation_config.json': { eos_token_id: 106 } });
    assert.deepEqual(readGenerationConfig(split).eosTokenIds, [106]);
    assert.deepEqual(eosIds(split, { eosTokenIds: [1] }), [106, 2, 1]);
  });

  it('bad files and fields are ModelErrors naming the file and the field', function () {
    const badJson = folder({ 'generation_config.json': '{"eos_token_id": ' });
    assert.throws(
      () => readGenerationConfig(badJson),
      (e: unknown) => e instanceof ModelError && e.message.includes(path.join(badJson, 'generation_config.json')),
    );
    const badEos = folder({ 'config.json': { eos_token_id: '</s>' } });
    assert.throws(
      () => readGenerationConfig(badEos),
      (e: unknown) =>
        e instanceof ModelError &&
        e.code === 'E_GENERATION_CONFIG' &&
        e.message.includes('config.json') &&
        e.message.includes('eos_token_id'),
    );
    const badTemp = folder({ 'generation_config.json': { temperature: 'hot' } });
    assert.throws(
      () => readGenerationConfig(badTemp),
      (e: unknown) => e instanceof ModelError && /temperature/.test(e.message),
    );
    const badSample = folder({ 'generation_config.json': { do_sample: 1 } });
    assert.throws(
      () => readGenerationConfig(badSample),
      (e: unknown) => e instanceof ModelError && /do_sample/.test(e.message),
    );
    const missing = path.join(tmp, 'no-such-model');
    assert.throws(
      () => readGenerationConfig(missing),
      (e: unknown) => e instanceof ModelError && e.message.includes(missing),
    );
  });
});
