/**
 * Tokenizer tests on the real tokenizer files in shared/. Expected ids come from outside our
 * code: shared/README (stories260K), the added_tokens of each tokenizer.json, Qwen3's model card
 * (</think> = 151668), and vocab entries looked up in the raw tokenizer.json text.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ModelError, requireShared, UsageError } from '@moi/core';
import { loadTokenizer, Tokenizer } from '../src/index.ts';

const NAMES = ['qwen3', 'gemma3', 'llama3', 'llama2', 'stories260K'] as const;
type Name = (typeof NAMES)[number];

const SAMPLE = 'Hello, world! Grüße, 你好世界, こんにちは, Привет, مرحبا 👩‍👩‍👧‍👦🚀🎉';

function dirOf(shared: string, name: Name): string {
  return name === 'stories260K' ? path.join(shared, 'fixtures/stories260K') : path.join(shared, 'tokenizers', name);
}

/** The id of `token` read straight from tokenizer.json's text ("token": id), not through our code. */
function rawVocabId(file: string, token: string): number {
  const text = readFileSync(file, 'utf8');
  const key = JSON.stringify(token) + ':';
  const at = text.indexOf(key);
  assert.ok(at >= 0, `${token} not in ${file}`);
  return Number(/^\s*(\d+)/.exec(text.slice(at + key.length, at + key.length + 20))![1]);
}

describe('text: Tokenizer', function () {
  const toks = {} as Record<Name, Tokenizer>;
  let shared: string;

  before(function () {
    shared = requireShared(this);
    const times: string[] = [];
    for (const name of NAMES) {
      const t0 = performance.now();
      toks[name] = loadTokenizer(dirOf(shared, name));
      times.push(`${name} ${(performance.now() - t0).toFixed(0)} ms`);
    }
    console.log(`      tokenizer load times: ${times.join(', ')}`);
  });

  it('round-trips multilingual text and emoji on every tokenizer', function () {
    const texts = [
      SAMPLE,
      '  leading and trailing spaces  ',
      'tabs\tand\nnew\n\nlines',
      'ASCII only. 12345 + 678 = 7023?',
      '',
    ];
    for (const name of NAMES) {
      for (const text of texts) {
        const ids = toks[name].encode(text, { addSpecialTokens: false });
        assert.equal(toks[name].decode(ids), text, `${name}: ${JSON.stringify(text)}`);
      }
    }
  });

  it('stories260K: "Once upon a time" with BOS is [1,403,407,261,378]; its byte fallback carries non-ASCII', function () {
    const tok = toks.stories260K;
    assert.deepEqual(tok.encode('Once upon a time'), [1, 403, 407, 261, 378]);
    assert.equal(tok.decode([1, 403, 407, 261, 378], { skipSpecialTokens: true }), 'Once upon a time');
    // 512-token vocab: "你" has no token, so it becomes its three UTF-8 bytes <0xE4><0xBD><0xA0>.
    const ids = tok.encode('你', { addSpecialTokens: false });
    const pieces = ids.map((i) => tok.idToToken(i));
    assert.deepEqual(pieces.slice(-3), ['<0xE4>', '<0xBD>', '<0xA0>']);
    assert.equal(tok.decode(ids), '你');
  });

  it('special token ids match tokenizer.json added_tokens and Qwen3/Gemma3/Llama3 documentation', function () {
    const expect: [Name, string, number][] = [
      ['qwen3', '<|endoftext|>', 151643],
      ['qwen3', '<|im_start|>', 151644],
      ['qwen3', '<|im_end|>', 151645],
      ['qwen3', '<think>', 151667],
      ['qwen3', '</think>', 151668],
      ['llama3', '<|begin_of_text|>', 128000],
      ['llama3', '<|end_of_text|>', 128001],
      ['llama3', '<|start_header_id|>', 128006],
      ['llama3', '<|eot_id|>', 128009],
      ['gemma3', '<eos>', 1],
      ['gemma3', '<bos>', 2],
      ['gemma3', '<start_of_turn>', 105],
      ['gemma3', '<end_of_turn>', 106],
      ['llama2', '<s>', 1],
      ['llama2', '</s>', 2],
    ];
    for (const [name, token, id] of expect) {
      assert.equal(toks[name].tokenToId(token), id, `${name} ${token}`);
      assert.equal(toks[name].idToToken(id), token, `${name} ${id}`);
      assert.deepEqual(
        toks[name].encode(token, { addSpecialTokens: false }),
        [id],
        `${name} encodes ${token} as one id`,
      );
    }
  });

  it('vocab sizes, BOS and EOS come from the files', function () {
    // shared/README: Qwen3 151,669 tokens, Gemma3 262,145, Llama3 128,256.
    assert.equal(toks.qwen3.vocabSize, 151669);
    assert.equal(toks.gemma3.vocabSize, 262145);
    assert.equal(toks.llama3.vocabSize, 128256);
    assert.equal(toks.stories260K.vocabSize, 512);
    assert.equal(toks.qwen3.bosTokenId, undefined); // bos_token: null
    assert.deepEqual(toks.qwen3.eosTokenIds, [151645]);
    assert.equal(toks.gemma3.bosTokenId, 2);
    assert.deepEqual(toks.gemma3.eosTokenIds, [1]);
    assert.equal(toks.llama3.bosTokenId, 128000);
    assert.deepEqual(toks.llama3.eosTokenIds, [128001]);
    assert.deepEqual(toks.stories260K.eosTokenIds, [2]);
    assert.ok(toks.gemma3.specialTokenIds.has(105) && toks.qwen3.specialTokenIds.has(151645));
    assert.ok(!toks.gemma3.specialTokenIds.has(10), '<unused4> is an added token but not special');
  });

  it('plain words encode to the vocab entries in tokenizer.json', function () {
    const cases: [Name, string, string[]][] = [
      ['qwen3', 'Hello, world!', ['Hello', ',', 'Ġworld', '!']],
      ['llama3', 'Hello, world!', ['Hello', ',', 'Ġworld', '!']],
      ['llama2', 'Once upon a time', ['▁Once', '▁upon', '▁a', '▁time']],
      ['gemma3', 'Hello world', ['Hello', '▁world']],
    ];
    for (const [name, text, pieces] of cases) {
      const file = path.join(dirOf(shared, name), 'tokenizer.json');
      const want = pieces.map((p) => rawVocabId(file, p));
      assert.deepEqual(toks[name].encode(text, { addSpecialTokens: false }), want, name);
    }
  });

  it('adds BOS as each family expects, never twice', function () {
    const plain = (name: Name, text: string) => toks[name].encode(text, { addSpecialTokens: false });
    // Qwen: add_bos_token false, no BOS at all.
    assert.deepEqual(toks.qwen3.encode('Hi there'), plain('qwen3', 'Hi there'));
    // Gemma3: the post-processor adds <bos> and add_bos_token is true: exactly one.
    assert.deepEqual(toks.gemma3.encode('Hi there'), [2, ...plain('gemma3', 'Hi there')]);
    // Llama-2 style: add_bos_token true.
    assert.deepEqual(toks.llama2.encode('Hi there'), [1, ...plain('llama2', 'Hi there')]);
    // This Llama-3 tokenizer.json has a ByteLevel post-processor only and no add_bos_token:
    // transformers adds no BOS here (the chat template writes <|begin_of_text|>).
    assert.deepEqual(toks.llama3.encode('Hi there'), plain('llama3', 'Hi there'));
    assert.equal(toks.gemma3.addsBos, true);
    assert.equal(toks.qwen3.addsBos, false);
    assert.equal(toks.llama3.addsBos, false);
  });

  it('tokenizer_config add_bos_token / add_eos_token override the post-processor', function () {
    const dir = dirOf(shared, 'stories260K');
    const json = JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    const config = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    const body = toks.stories260K.encode('Once upon a time', { addSpecialTokens: false });
    assert.deepEqual(body, [403, 407, 261, 378]);
    const noBos = new Tokenizer(json, { ...config, add_bos_token: false });
    assert.deepEqual(noBos.encode('Once upon a time'), body);
    const withEos = new Tokenizer(json, { ...config, add_eos_token: true });
    assert.deepEqual(withEos.encode('Once upon a time'), [1, ...body, 2]);
    // No flag: follow the post-processor (which adds <s>).
    const { add_bos_token: _drop, ...rest } = config;
    assert.deepEqual(new Tokenizer(json, rest).encode('Once upon a time'), [1, ...body]);
    // A post-processor that adds nothing plus add_bos_token: true gets BOS prepended once.
    const bare = new Tokenizer({ ...json, post_processor: null }, config);
    assert.deepEqual(bare.encode('Once upon a time'), [1, ...body]);
  });

  it('special-token text encodes to one id; skipSpecialTokens drops it on decode', function () {
    const q = toks.qwen3;
    const ids = q.encode('<|im_start|>user\nHi<|im_end|>\n', { addSpecialTokens: false });
    assert.equal(ids[0], 151644);
    assert.ok(ids.includes(151645));
    assert.equal(ids.filter((i) => i === 151644).length, 1);
    assert.equal(q.decode(ids), '<|im_start|>user\nHi<|im_end|>\n');
    assert.equal(q.decode(ids, { skipSpecialTokens: true }), 'user\nHi\n');

    const g = toks.gemma3;
    const gids = g.encode('<start_of_turn>model\nOK<end_of_turn>');
    assert.deepEqual(gids.slice(0, 2), [2, 105]);
    assert.equal(g.decode(gids, { skipSpecialTokens: true }), 'model\nOK');
    assert.equal(g.decode(gids), '<bos><start_of_turn>model\nOK<end_of_turn>');
  });

  it('decode: empty list, ids without a token, and invalid ids', function () {
    const q = toks.qwen3;
    assert.equal(q.decode([]), '');
    const hello = q.encode('Hello', { addSpecialTokens: false });
    // Qwen3's embedding has 151,936 rows but 151,669 tokens: ids past the vocab are skipped.
    assert.equal(q.decode([...hello, 151900]), 'Hello');
    assert.throws(
      () => q.decode([-1]),
      (e: unknown) => e instanceof UsageError && e.code === 'E_TOKEN_ID',
    );
    assert.throws(
      () => q.decode([1.5]),
      (e: unknown) => e instanceof UsageError && /1\.5/.test(e.message),
    );
    assert.throws(() => q.encode(42 as unknown as string), UsageError);
  });

  it('clean_up_tokenization_spaces follows the config (Llama-3: true, Qwen3: false)', function () {
    const text = "Wait . What ? I 'm sure , they 're here !";
    assert.equal(toks.llama3.cleanUpSpaces, true);
    assert.equal(toks.qwen3.cleanUpSpaces, false);
    const l = toks.llama3.encode(text, { addSpecialTokens: false });
    assert.equal(toks.llama3.decode(l), "Wait. What? I'm sure, they're here!");
    assert.equal(toks.llama3.decode(l, { cleanUpSpaces: false }), text);
    assert.equal(toks.qwen3.decode(toks.qwen3.encode(text)), text);
  });

  it('a missing or broken tokenizer.json is a ModelError naming the file', function () {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-tok-'));
    try {
      const file = path.join(tmp, 'tokenizer.json');
      assert.throws(
        () => loadTokenizer(tmp),
        (e: unknown) => e instanceof ModelError && e.code === 'E_TOKENIZER_MISSING' && e.message.includes(file),
      );
      writeFileSync(file, '{"model": ');
      assert.throws(
        () => loadTokenizer(tmp),
        (e: unknown) => e instanceof ModelError && e.code === 'E_TOKENIZER_INVALID' && e.message.includes(file),
      );
      writeFileSync(file, '{"version": "1.0"}');
      assert.throws(
        () => loadTokenizer(tmp),
        (e: unknown) => e instanceof ModelError && e.code === 'E_TOKENIZER_INVALID' && e.message.includes(file),
      );
      writeFileSync(file, JSON.stringify({ model: { type: 'BPE', vocab: {}, merges: [] } }));
      assert.throws(
        () => loadTokenizer(tmp),
        (e: unknown) => e instanceof ModelError && e.code === 'E_TOKENIZER_INVALID' && e.message.includes(file),
      );
      const sub = path.join(tmp, 'nope');
      assert.throws(
        () => loadTokenizer(sub),
        (e: unknown) => e instanceof ModelError && e.message.includes(sub),
      );
      mkdirSync(path.join(tmp, 'cfg'));
      writeFileSync(
        path.join(tmp, 'cfg', 'tokenizer.json'),
        readFileSync(path.join(dirOf(shared, 'stories260K'), 'tokenizer.json')),
      );
      writeFileSync(path.join(tmp, 'cfg', 'tokenizer_config.json'), '[1,2]');
      assert.throws(
        () => loadTokenizer(path.join(tmp, 'cfg')),
        (e: unknown) => e instanceof ModelError && e.message.includes(path.join(tmp, 'cfg', 'tokenizer_config.json')),
      );
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
