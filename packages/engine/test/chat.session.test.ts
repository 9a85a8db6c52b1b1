/**
 * ChatSession over the real stories260K model. stories260K is a base model without a chat
 * template, so a small one is given: each user turn opens with <s>, each assistant turn ends with
 * </s>. The central invariant: a cached chat turn gives the same greedy reply as a fresh
 * generation over the whole rendered conversation, while prefilling only the new tokens.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { requireShared, UsageError } from '@moi/core';
import { Engine } from '../src/index.ts';
import { ChatSession, commonPrefix } from '../src/index.ts';
import { generateOne } from '../src/index.ts';
import { renderChat, type ChatMessage } from '../src/index.ts';

const TEMPLATE =
  "{% for m in messages %}{% if m.role == 'user' %}{{ bos_token }}{{ m.content }}" +
  "{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}";
const GREEDY = { temperature: 0 };
const U1 = 'Once upon a time';
const U2 = 'Lily went to the park';

describe('engine: chat session (stories260K)', function () {
  let engine: Engine;

  before(async function () {
    const shared = requireShared(this);
    engine = await Engine.load(path.join(shared!, 'fixtures/stories260K'), { backend: 'wasm' });
  });
  after(() => engine?.dispose());

  /** The conversation rendered and encoded here, independently of the session. */
  function rendered(messages: ChatMessage[]): number[] {
    const tok = engine.tokenizer!;
    const text = renderChat({ chatTemplate: TEMPLATE, bosToken: '<s>', eosToken: '</s>' }, messages);
    return tok.encode(text, { addSpecialTokens: false });
  }

  async function fresh(ids: number[], maxTokens: number): Promise<number[]> {
    return (await generateOne(engine, { promptIds: ids, maxTokens, sampling: GREEDY })).done.tokens;
  }

  const session = (o: ConstructorParameters<typeof ChatSession>[1] = {}) =>
    new ChatSession(engine, { chatTemplate: TEMPLATE, defaults: { maxTokens: 16, sampling: GREEDY }, ...o });

  it('turn 2 prefills only its new tokens and replies as a full recompute does', async function () {
    const s = session();
    const d1 = await s.reply(U1);
    const p1 = rendered([{ role: 'user', content: U1 }]);
    assert.deepEqual(p1, [1, 403, 407, 261, 378]); // the fixture's README ids for "Once upon a time"
    assert.deepEqual(d1.tokens, await fresh(p1, 16));
    const n0 = tf.memory().numTensors; // after a first generation (which makes cached constants)
    assert.equal(d1.finishReason, 'length');
    // the 16th token was sampled but never fed
    assert.deepEqual(s.cachedIds, [...p1, ...d1.tokens.slice(0, 15)]);

    const convo: ChatMessage[] = [
      { role: 'user', content: U1 },
      { role: 'assistant', content: d1.text },
      { role: 'user', content: U2 },
    ];
    const p2 = rendered(convo);
    const d2 = await s.reply(U2);
    const t2 = s.turns[1];
    // what is new: the unfed last reply token, </s>, <s>, then the user's words
    const u2 = engine.tokenizer!.encode(U2, { addSpecialTokens: false });
    assert.equal(t2.promptTokens, p2.length);
    assert.equal(t2.prefilledTokens, 1 + 2 + u2.length);
    assert.equal(t2.reusedTokens, p1.length + 15);
    assert.ok(t2.prefilledTokens < p2.length / 2);
    assert.deepEqual(d2.tokens, await fresh(p2, 16), 'cached chat equals recompute');
    assert.deepEqual(
      s.messages.map((m) => m.role),
      ['user', 'assistant', 'user', 'assistant'],
    );
    assert.equal(s.messages[3].content, d2.text);
    assert.equal(tf.memory().numTensors, n0, 'no tensors leak across turns');
    s.dispose();
  });

  it('a reply ended by EOS leaves every reply token in the cache (the EOS is not)', async function () {
    // stories260K never emits </s>; make "." end the reply instead, on this engine only for the test
    const dot = engine.tokenizer!.tokenToId('.')!;
    const eos = engine.eosTokenIds as number[];
    eos.push(dot);
    try {
      const s = session({ defaults: { maxTokens: 40, sampling: GREEDY } });
      const d1 = await s.reply(U1);
      assert.equal(d1.finishReason, 'stop');
      assert.ok(!d1.tokens.includes(dot));
      const p1 = rendered([{ role: 'user', content: U1 }]);
      assert.deepEqual(s.cachedIds, [...p1, ...d1.tokens]);
      const d2 = await s.reply(U2);
      const u2 = engine.tokenizer!.encode(U2, { addSpecialTokens: false });
      assert.equal(s.turns[1].prefilledTokens, 2 + u2.length); // only </s>, <s> and the words
      const p2 = rendered([
        { role: 'user', content: U1 },
        { role: 'assistant', content: d1.text },
        { role: 'user', content: U2 },
      ]);
      const f = await generateOne(engine, { promptIds: p2, maxTokens: 40, sampling: GREEDY });
      assert.deepEqual(d2.tokens, f.done.tokens);
      s.dispose();
    } finally {
      eos.pop();
    }
  });

  it('a history that re-renders differently rolls the cache back to the common prefix', async function () {
    // a system prompt rendered after the turns it precedes would change nothing cached here, so
    // instead edit the history: the second turn's prompt shares only <s> + "Once" with the first
    const s = session();
    await s.reply(U1);
    s.messages.length = 0;
    const d = await s.reply('Once there was a dog');
    const p = rendered([{ role: 'user', content: 'Once there was a dog' }]);
    assert.equal(s.turns[1].reusedTokens, commonPrefix(p, rendered([{ role: 'user', content: U1 }])));
    assert.equal(s.turns[1].reusedTokens, 2);
    assert.deepEqual(d.tokens, await fresh(p, 16));
    s.dispose();
  });

  it('/reset forgets the conversation, keeps the system prompt, and replies as the first turn did', async function () {
    const s = session({ system: 'ignored by this template' });
    const d1 = await s.reply(U1);
    await s.reply(U2);
    s.reset();
    assert.deepEqual(s.messages, [{ role: 'system', content: 'ignored by this template' }]);
    assert.equal(s.cachedTokens, 0);
    const again = await s.reply(U1);
    assert.equal(s.turns.length, 1);
    assert.equal(s.turns[0].reusedTokens, 0);
    assert.equal(s.turns[0].prefilledTokens, 5);
    assert.deepEqual(again.tokens, d1.tokens);
    s.dispose();
  });

  it('a context overflow is a clear error and the session stays usable', async function () {
    const s = session({ maxContext: 30 });
    assert.equal(s.capacity, 30);
    const d1 = await s.reply(U1); // 5 + 16 tokens fit
    await assert.rejects(
      async () => {
        await s.reply(U2);
      },
      (e: unknown) => {
        assert.ok(e instanceof UsageError);
        assert.equal(e.code, 'E_CONTEXT');
        assert.match(e.message, /\/reset/);
        assert.match(e.message, /--max-context/);
        return true;
      },
    );
    assert.equal(s.messages.length, 2, 'the failed turn is not in the history');
    s.reset();
    const again = await s.reply(U1);
    assert.deepEqual(again.tokens, d1.tokens);
    // the model's own limit caps the session
    const big = session({ maxContext: 100000 });
    assert.equal(big.capacity, 512);
    big.dispose();
    s.dispose();
  });

  it('an aborted reply keeps what was written; the next turn still equals a recompute', async function () {
    const s = session({ defaults: { maxTokens: 30, sampling: GREEDY } });
    const ac = new AbortController();
    let n = 0;
    let done;
    for await (const e of s.send(U1, { signal: ac.signal })) {
      if (e.type === 'token' && ++n === 4) ac.abort();
      if (e.type === 'done') done = e;
    }
    assert.equal(done!.finishReason, 'abort');
    assert.equal(done!.tokens.length, 4);
    assert.equal(s.messages[1].content, done!.text);
    const d2 = await s.reply(U2);
    const p2 = rendered([
      { role: 'user', content: U1 },
      { role: 'assistant', content: done!.text },
      { role: 'user', content: U2 },
    ]);
    assert.deepEqual(d2.tokens, await fresh(p2, 30));
    assert.equal(s.turns[1].reusedTokens, 5 + 3);
    s.dispose();
  });

  it('MoI turns run over the same cache (mixed inputs) and report their diagnostics', async function () {
    const s = session({ defaults: { maxTokens: 12, sampling: GREEDY, mix: { mode: 'moi', beta: 1 } } });
    const entropies: number[] = [];
    for await (const e of s.send(U1)) if (e.type === 'token') entropies.push(e.mix!.entropy);
    assert.equal(entropies.length, 12);
    assert.ok(entropies.every((h) => h >= 0 && h <= 1));
    // turn 1 alone is an ordinary MoI generation from the prompt
    const f = await generateOne(engine, {
      promptIds: [1, 403, 407, 261, 378],
      maxTokens: 12,
      sampling: GREEDY,
      mix: { mode: 'moi', beta: 1 },
    });
    assert.deepEqual(s.messages[1].content, f.done.text);
    await s.reply(U2);
    const u2 = engine.tokenizer!.encode(U2, { addSpecialTokens: false });
    assert.equal(s.turns[1].prefilledTokens, 1 + 2 + u2.length);
    s.dispose();
  });

  it('issue 13: at temperature 1, a reply is reused from the cache on the next turn (no re-prefill of the reply), with or without a separator in the template', async function () {
    // a Llama-2-style template: a separator space before the assistant's content
    const LLAMA2 =
      "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]" +
      "{% elif m.role == 'assistant' %} {{ m.content }}{{ eos_token }}{% endif %}{% endfor %}";
    const tok = engine.tokenizer!;
    let reused = 0;
    for (let seed = 1; seed <= 12; seed++) {
      const s = new ChatSession(engine, {
        chatTemplate: LLAMA2,
        maxContext: 256,
        defaults: { maxTokens: 40, sampling: { temperature: 1, seed } },
      });
      try {
        const d = await s.reply(U1);
        const held = s.cachedIds;
        const reply = s.turns[0].promptTokens; // where the reply starts in the cache
        const next = s.render([...s.messages, { role: 'user', content: U2 }]);
        const common = commonPrefix(held, next);
        const first = tok.idToToken(d.tokens[0])!;
        if (first.startsWith('\u2581')) {
          // the reply starts a word: the re-rendered conversation holds exactly the generated ids
          assert.equal(
            common,
            held.length,
            `seed ${seed}: the whole reply is reused (${JSON.stringify(d.text.slice(0, 20))})`,
          );
          assert.equal(
            s.messages.at(-1)!.content,
            tok.decode(d.tokens, { skipSpecialTokens: true }),
            'recorded as decoded alone',
          );
          reused++;
        } else {
          // "." or "enly": the template's own space before the content is not what was generated
          assert.equal(common, reply, `seed ${seed}: kept up to the reply`);
        }
        // and the second turn reuses what it says
        await s.reply(U2);
        assert.equal(s.turns[1].reusedTokens, Math.min(common, next.length - 1));
      } finally {
        s.dispose();
      }
    }
    assert.ok(reused >= 6, `${reused} of 12 replies reused whole`);
    // a template with no separator (this file's): the reply's own leading space is kept, and reused
    for (let seed = 1; seed <= 4; seed++) {
      const s = new ChatSession(engine, {
        chatTemplate: TEMPLATE,
        maxContext: 256,
        defaults: { maxTokens: 40, sampling: { temperature: 1, seed } },
      });
      try {
        await s.reply(U1);
        const held = s.cachedIds;
        assert.equal(
          commonPrefix(held, s.render([...s.messages, { role: 'user', content: U2 }])),
          held.length,
          `seed ${seed}`,
        );
      } finally {
        s.dispose();
      }
    }
  });

  it('a model without a chat template is a UsageError', function () {
    assert.throws(
      () => new ChatSession(engine),
      (e: unknown) => e instanceof UsageError && e.code === 'E_NO_CHAT_TEMPLATE',
    );
  });
});
