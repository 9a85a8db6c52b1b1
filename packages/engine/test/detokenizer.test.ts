/**
 * Streaming detokenizer on the real tokenizers: the deltas must add up to decode(allIds) exactly,
 * never show half a character, and cost O(n) decoded ids in total (checked by counting the ids
 * passed to decode through a wrapper). Given the prompt as context, the completion's text is
 * decode(prompt + completion) minus decode(prompt) (the first word keeps its leading space), for
 * SentencePiece and byte-level BPE alike; logprob token texts add up to the same text.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { requireShared } from '@moi/core';
import { loadTokenizer, StreamingDetokenizer, TokenTexts, type DecodeSource, type Tokenizer } from '../src/index.ts';

const NAMES = ['qwen3', 'gemma3', 'llama3', 'llama2', 'stories260K'] as const;
type Name = (typeof NAMES)[number];

const SENTENCES = [
  'Hello, world!',
  'Grüße aus Köln, schöne Straße.',
  '你好世界，今天天气很好。',
  'こんにちは、元気ですか？',
  'Привет, как дела?',
  'مرحبا بالعالم',
  'नमस्ते दुनिया',
  '👩‍👩‍👧‍👦🚀🎉 family, rocket, party 🫠🧑🏽‍💻',
  "Wait . What ? I 'm sure , they 're here ! Isn 't it ?",
  'code:\n\tif (x) { return y; }\n',
  '  two spaces,   three spaces.',
  'Ünïcödé ñ ç ø å æ œ ß ẞ ǅ',
  '한국어 텍스트입니다.',
  'Ελληνικά γράμματα.',
  '12345 + 6789 = 19134',
];

/** Small deterministic PRNG (LCG) for corpus order and random ids. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** At least `minTokens` ids of shuffled multilingual sentences. */
function corpusIds(tok: Tokenizer, minTokens: number, seed = 1): number[] {
  const rnd = lcg(seed);
  const parts: string[] = [];
  let ids: number[] = [];
  while (ids.length < minTokens) {
    for (let i = 0; i < 40; i++) parts.push(SENTENCES[Math.floor(rnd() * SENTENCES.length)]);
    ids = tok.encode(parts.join(' '), { addSpecialTokens: false });
  }
  return ids;
}

/** A decode source that counts the ids it decodes. */
function counting(tok: Tokenizer) {
  const stats = { ids: 0, calls: 0, maxWindow: 0 };
  const src: DecodeSource = {
    decode: (ids, opts) => {
      stats.ids += ids.length;
      stats.calls++;
      stats.maxWindow = Math.max(stats.maxWindow, ids.length);
      return tok.decode(ids, opts);
    },
    specialTokenIds: tok.specialTokenIds,
    cleanUpSpaces: tok.cleanUpSpaces,
  };
  return { src, stats };
}

function stream(src: DecodeSource, ids: readonly number[], skipSpecialTokens = false): string[] {
  const d = new StreamingDetokenizer(src, { skipSpecialTokens });
  const out = ids.map((id) => d.push(id));
  out.push(d.flush());
  return out;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('text: StreamingDetokenizer', function () {
  const toks = {} as Record<Name, Tokenizer>;

  before(function () {
    const shared = requireShared(this);
    const t0 = performance.now();
    for (const name of NAMES) {
      const dir =
        name === 'stories260K' ? path.join(shared!, 'fixtures/stories260K') : path.join(shared!, 'tokenizers', name);
      toks[name] = loadTokenizer(dir);
    }
    console.log(`      loaded 5 tokenizers in ${(performance.now() - t0).toFixed(0)} ms`);
  });

  for (const name of NAMES) {
    it(`${name}: 1,000+ multilingual/emoji tokens stream to exactly decode(all), whole characters only, O(n) decoding`, function () {
      const tok = toks[name];
      const ids = corpusIds(tok, 1000);
      assert.ok(ids.length >= 1000);
      const full = tok.decode(ids);
      assert.ok(!full.includes('\uFFFD'), 'the corpus decodes cleanly');
      // Precondition: some prefixes end inside a character, so holding back is really exercised.
      let partial = 0;
      for (let i = 1; i <= 400; i++) if (tok.decode(ids.slice(0, i)).endsWith('\uFFFD')) partial++;
      assert.ok(partial > 0, 'some prefix ends mid-character');

      const { src, stats } = counting(tok);
      const deltas = stream(src, ids);
      assert.equal(deltas.join(''), full);
      for (const d of deltas) {
        assert.ok(!d.includes('\uFFFD'), `delta ${JSON.stringify(d)} has U+FFFD`);
        assert.ok(!LONE_SURROGATE.test(d), `delta ${JSON.stringify(d)} splits a surrogate pair`);
      }
      // Incremental: a bounded window per step (re-decoding everything would be ~n²/2 ids).
      assert.ok(stats.maxWindow <= 16, `max window ${stats.maxWindow}`);
      assert.ok(stats.ids <= 8 * ids.length, `decoded ${stats.ids} ids for ${ids.length}`);
      assert.ok(stats.calls <= 3 * ids.length + 2);
    });

    it(`${name}: special tokens in the stream, kept or skipped, and random ids (invalid bytes included)`, function () {
      const tok = toks[name];
      const ids = corpusIds(tok, 300, 7);
      const specials = [...tok.specialTokenIds].slice(0, 5);
      const mixed: number[] = [];
      ids.forEach((id, i) => {
        mixed.push(id);
        if (i % 37 === 0) mixed.push(specials[i % specials.length]);
      });
      for (const skip of [false, true]) {
        const { src, stats } = counting(tok);
        assert.equal(stream(src, mixed, skip).join(''), tok.decode(mixed, { skipSpecialTokens: skip }), `skip=${skip}`);
        assert.ok(stats.maxWindow <= 16);
      }
      // Random ids: many are byte tokens that form invalid UTF-8; the deltas still add up exactly.
      const rnd = lcg(42);
      const random = Array.from({ length: 1200 }, () => Math.floor(rnd() * tok.vocabSize));
      for (const skip of [false, true]) {
        const { src, stats } = counting(tok);
        assert.equal(
          stream(src, random, skip).join(''),
          tok.decode(random, { skipSpecialTokens: skip }),
          `random skip=${skip}`,
        );
        assert.ok(stats.ids <= 12 * random.length, `random: decoded ${stats.ids} ids`);
      }
    });
  }

  it('a run of invalid bytes (U+FFFD forever) keeps the window bounded', function () {
    for (const name of NAMES) {
      const tok = toks[name];
      // A lone continuation byte 0x80: <0x80> in byte-fallback vocabs, "Ģ" in byte-level BPE ones.
      const b = tok.tokenToId('<0x80>') ?? tok.tokenToId('Ģ');
      assert.ok(b !== undefined, name);
      const ids = Array.from({ length: 300 }, (_, i) =>
        i % 50 === 49 ? tok.encode('ok', { addSpecialTokens: false })[0] : b,
      );
      const full = tok.decode(ids);
      assert.ok(full.includes('\uFFFD'));
      const { src, stats } = counting(tok);
      assert.equal(stream(src, ids).join(''), full, name);
      assert.ok(stats.maxWindow <= 16, `${name}: max window ${stats.maxWindow}`);
      assert.ok(stats.ids <= 16 * ids.length, `${name}: decoded ${stats.ids}`);
    }
  });

  it('holds an unfinished character back and prints it whole; flush prints what is left', function () {
    const q = toks.qwen3;
    // Find an emoji that byte-level BPE splits over several tokens.
    const emoji = ['🫠', '🧑🏽‍💻', '🪿', '🦩', '🛼'].find((e) => q.encode(e, { addSpecialTokens: false }).length > 1)!;
    assert.ok(emoji, 'a multi-token emoji');
    const ids = q.encode(`a${emoji}b`, { addSpecialTokens: false });
    const d = new StreamingDetokenizer(q);
    const deltas = ids.map((id) => d.push(id));
    assert.ok(deltas.includes(''), 'something was held back');
    assert.equal(deltas.join('') + d.flush(), `a${emoji}b`);
    assert.ok(deltas.every((x) => !x.includes('\uFFFD')));

    // A stream cut mid-character: flush gives what decode gives (U+FFFD for the unfinished tail).
    const cut = q.encode(emoji, { addSpecialTokens: false }).slice(0, 1);
    const d2 = new StreamingDetokenizer(q);
    const held = cut.map((id) => d2.push(id)).join('');
    assert.equal(held, '');
    assert.equal(held + d2.flush(), q.decode(cut));
  });

  it('SentencePiece: the leading space of a word is kept mid-stream and dropped only at the start', function () {
    for (const name of ['llama2', 'stories260K'] as const) {
      const tok = toks[name];
      const ids = tok.encode('Hello world again', { addSpecialTokens: false });
      const d = new StreamingDetokenizer(tok);
      const deltas = ids.map((id) => d.push(id));
      deltas.push(d.flush());
      assert.equal(deltas.join(''), 'Hello world again', name);
      // Each word token alone decodes without its space; the stream must not lose it.
      assert.ok(
        deltas.some((x) => x.startsWith(' ')),
        `${name}: ${JSON.stringify(deltas)}`,
      );
      const withBos = [tok.bosTokenId!, ...ids];
      assert.equal(stream(tok, withBos, true).join(''), 'Hello world again');
      assert.equal(stream(tok, withBos).join(''), tok.decode(withBos));
    }
    const g = toks.gemma3; // no dummy prefix: a leading space is real text
    const ids = g.encode(' Hello world', { addSpecialTokens: false });
    assert.equal(stream(g, ids).join(''), ' Hello world');
  });

  it('Llama-3 cleans up tokenization spaces across deltas exactly as decode does', function () {
    const tok = toks.llama3;
    assert.equal(tok.cleanUpSpaces, true);
    const ids = tok.encode("Wait . What ? I 'm sure , they 're here ! I do n't know ' nice ' ? ", {
      addSpecialTokens: false,
    });
    const full = tok.decode(ids);
    assert.notEqual(full, tok.decode(ids, { cleanUpSpaces: false }), 'clean-up changes this text');
    // Expected string computed with Python's str.replace chain of transformers' clean_up_tokenization.
    assert.equal(full, "Wait. What? I'm sure, they're here! I don't know'nice '? ");
    assert.equal(stream(tok, ids).join(''), full);
  });

  for (const name of NAMES) {
    it(`${name}: with the prompt as context, prompt text + streamed completion = decode(prompt + completion), at every split`, function () {
      const tok = toks[name];
      const ids = corpusIds(tok, 200, 3);
      const bos = tok.bosTokenId;
      const rnd = lcg(5);
      let checked = 0;
      for (let trial = 0; trial < 80; trial++) {
        const k = 1 + Math.floor(rnd() * (ids.length - 20));
        const prompt = [...(bos !== undefined ? [bos] : []), ...ids.slice(0, k)];
        const completion = ids.slice(k, k + 12);
        const promptText = tok.decode(prompt, { skipSpecialTokens: true });
        if (promptText.endsWith('\uFFFD')) continue; // the split falls inside a character: no prompt text is exact
        if (tok.cleanUpSpaces) {
          // Llama 3's clean-up (" 'm" → "'m") may remove a space of the prompt's text when the pattern
          // straddles the split: no completion text can then make the sum; those splits are left out
          const opts = { skipSpecialTokens: true, cleanUpSpaces: false };
          const pr = tok.decode(prompt, opts);
          const around = pr.slice(-3) + tok.decode([...prompt, ...completion], opts).slice(pr.length, pr.length + 3);
          if (around.includes(' ')) continue;
        }
        const d = new StreamingDetokenizer(tok, { skipSpecialTokens: true, context: prompt });
        const text = completion.map((id) => d.push(id)).join('') + d.flush();
        assert.equal(
          promptText + text,
          tok.decode([...prompt, ...completion], { skipSpecialTokens: true }),
          `${name}, split at ${k}`,
        );
        // the logprob texts: the chosen pieces add up to the same text; a peek equals the push that follows
        const texts = new TokenTexts(tok, { context: prompt });
        let joined = '';
        for (const id of completion) {
          const peeked = texts.peek(id);
          const got = texts.next(id);
          assert.equal(peeked.text, got.text);
          assert.ok(got.label !== '', 'never an empty token label');
          joined += got.text;
        }
        // (no space clean-up in token texts: Llama 3's " ," stays as it is)
        const raw = tok.decode([...prompt, ...completion], { skipSpecialTokens: true, cleanUpSpaces: false });
        assert.equal(
          tok.decode(prompt, { skipSpecialTokens: true, cleanUpSpaces: false }) + joined + texts.flush(),
          raw,
        );
        checked++;
      }
      assert.ok(checked >= 20, `${checked} splits checked`);
    });
  }

  it('SentencePiece: the first generated word keeps its leading space after the prompt (" upon", not "upon")', function () {
    for (const name of ['llama2', 'stories260K'] as const) {
      const tok = toks[name];
      const prompt = tok.encode('Once', { addSpecialTokens: true });
      const ids = tok.encode('Once upon a time', { addSpecialTokens: true }).slice(prompt.length);
      const d = new StreamingDetokenizer(tok, { skipSpecialTokens: true, context: prompt });
      const deltas = ids.map((id) => d.push(id));
      assert.equal(deltas[0], ' upon', name);
      assert.equal(deltas.join('') + d.flush(), ' upon a time');
      // the vocabulary piece alone would print "upon"
      assert.equal(tok.decode([ids[0]]), 'upon');
    }
  });

  it('a character split between the prompt and the completion is printed whole by the completion; partial pieces get a bytes: label', function () {
    const q = toks.qwen3;
    const emoji = ['🫠', '🧑🏽‍💻', '🪿', '🦩', '🛼'].find((e) => q.encode(e, { addSpecialTokens: false }).length > 1)!;
    const ids = q.encode(`a${emoji}b`, { addSpecialTokens: false });
    const d = new StreamingDetokenizer(q, { context: ids.slice(0, 2) }); // 'a' and the emoji's first byte token
    const text =
      ids
        .slice(2)
        .map((id) => d.push(id))
        .join('') + d.flush();
    assert.equal(text, `${emoji}b`);
    const texts = new TokenTexts(q, { context: ids.slice(0, 1) });
    const first = texts.next(ids[1]);
    assert.equal(first.text, '');
    assert.match(first.label, /^bytes:(\\x[0-9a-f]{2})+$/);
    assert.equal(
      Buffer.from(first.bytes).toString('latin1'),
      Buffer.from(emoji, 'utf8').subarray(0, first.bytes.length).toString('latin1'),
    );
  });
});
