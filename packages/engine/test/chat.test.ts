/**
 * Chat templates rendered with the models' own templates. The expected strings are written by
 * hand from each family's documented format (and a reading of the template text in shared/).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ModelError, requireShared, UsageError } from '@moi/core';
import { encodeChat, loadTokenizer, renderChat, Tokenizer, type ChatMessage } from '../src/index.ts';

const CONVO: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Name a colour.' },
  { role: 'assistant', content: 'Blue.' },
];
const ASK: ChatMessage[] = CONVO.slice(0, 2);

describe('text: chat templates', function () {
  let shared: string;
  let qwen3: Tokenizer;
  let gemma3: Tokenizer;
  let llama3: Tokenizer;
  let stories: Tokenizer;

  before(function () {
    shared = requireShared(this);
    const t0 = performance.now();
    qwen3 = loadTokenizer(path.join(shared, 'tokenizers/qwen3'));
    gemma3 = loadTokenizer(path.join(shared, 'tokenizers/gemma3'));
    llama3 = loadTokenizer(path.join(shared, 'tokenizers/llama3'));
    stories = loadTokenizer(path.join(shared, 'fixtures/stories260K'));
    console.log(`      loaded qwen3, gemma3, llama3, stories260K in ${(performance.now() - t0).toFixed(0)} ms`);
  });

  it('Qwen3: ChatML; the final assistant turn gets an empty think block', function () {
    assert.equal(
      renderChat(qwen3, CONVO, { addGenerationPrompt: false }),
      '<|im_start|>system\nYou are terse.<|im_end|>\n' +
        '<|im_start|>user\nName a colour.<|im_end|>\n' +
        '<|im_start|>assistant\n<think>\n\n</think>\n\nBlue.<|im_end|>\n',
    );
    assert.equal(
      renderChat(qwen3, ASK, { addGenerationPrompt: true }),
      '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('Qwen3: enable_thinking=false appends an empty think block after the generation prompt', function () {
    assert.equal(
      renderChat(qwen3, ASK, { extra: { enable_thinking: false } }),
      '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n' +
        '<|im_start|>assistant\n<think>\n\n</think>\n\n',
    );
    // enable_thinking=true is the template default: no think block.
    assert.equal(renderChat(qwen3, ASK, { extra: { enable_thinking: true } }), renderChat(qwen3, ASK));
  });

  it('Gemma3: <bos>, the system prompt folded into the first user turn, "model" role', function () {
    assert.equal(
      renderChat(gemma3, CONVO, { addGenerationPrompt: false }),
      '<bos><start_of_turn>user\nYou are terse.\n\nName a colour.<end_of_turn>\n' +
        '<start_of_turn>model\nBlue.<end_of_turn>\n',
    );
    assert.equal(
      renderChat(gemma3, ASK),
      '<bos><start_of_turn>user\nYou are terse.\n\nName a colour.<end_of_turn>\n<start_of_turn>model\n',
    );
    // Content is trimmed by the template.
    assert.equal(
      renderChat(gemma3, [{ role: 'user', content: '  hi \n' }]),
      '<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n',
    );
  });

  it('Llama3: header blocks with <|eot_id|>; this (original Llama-3) template always opens the assistant turn', function () {
    const body =
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>';
    const open = '<|start_header_id|>assistant<|end_header_id|>\n\n';
    assert.equal(renderChat(llama3, ASK), body + open);
    assert.equal(renderChat(llama3, ASK, { addGenerationPrompt: false }), body + open);
    assert.equal(
      renderChat(llama3, CONVO, { addGenerationPrompt: false }),
      body + '<|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|>' + open,
    );
  });

  it('encodeChat: the BOS the template writes is the only one', function () {
    const g = encodeChat(gemma3, ASK);
    assert.equal(g[0], 2);
    assert.equal(g.filter((i) => i === 2).length, 1);
    assert.deepEqual(g.slice(1, 3), [105, gemma3.encode('user', { addSpecialTokens: false })[0]]);
    assert.equal(gemma3.decode(g), renderChat(gemma3, ASK));

    const l = encodeChat(llama3, ASK);
    assert.deepEqual(l.slice(0, 2), [128000, 128006]);
    assert.equal(l.filter((i) => i === 128000).length, 1);
    assert.equal(l.at(-1), llama3.encode('\n\n', { addSpecialTokens: false }).at(-1));

    const q = encodeChat(qwen3, ASK, { extra: { enable_thinking: false } });
    assert.equal(q[0], 151644);
    const nn = qwen3.encode('\n\n', { addSpecialTokens: false });
    assert.deepEqual(q.slice(-(2 + 2 * nn.length)), [151667, ...nn, 151668, ...nn]);
    assert.equal(qwen3.decode(q), renderChat(qwen3, ASK, { extra: { enable_thinking: false } }));
  });

  it('encodeChat puts BOS in front where the tokenizer adds one and the template does not', function () {
    const dir = path.join(shared, 'fixtures/stories260K');
    const json = JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    const config = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    const plain = new Tokenizer(json, {
      ...config,
      chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}',
    });
    assert.deepEqual(encodeChat(plain, [{ role: 'user', content: 'Once upon a time' }]), [1, 403, 407, 261, 378]);
    const withBos = new Tokenizer(json, {
      ...config,
      chat_template: '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}',
    });
    assert.deepEqual(encodeChat(withBos, [{ role: 'user', content: 'Once upon a time' }]), [1, 403, 407, 261, 378]);
  });

  it('a model without a chat template is a UsageError saying so', function () {
    assert.equal(stories.chatTemplate, undefined);
    assert.throws(
      () => renderChat(stories, ASK),
      (e: unknown) => e instanceof UsageError && e.code === 'E_NO_CHAT_TEMPLATE' && /no chat template/.test(e.message),
    );
  });

  it('template sources: a {name, template} list takes "default"; chat_template.jinja wins over the config', function () {
    const dir = path.join(shared, 'fixtures/stories260K');
    const json = JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    const listed = new Tokenizer(json, {
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: '{{ messages[0].content }}!' },
      ],
    });
    assert.equal(renderChat(listed, ASK), 'You are terse.!');
    assert.equal(renderChat(listed, ASK, { templateName: 'tool_use' }), 'TOOLS');
    assert.throws(
      () => renderChat(listed, ASK, { templateName: 'rag' }),
      (e: unknown) => e instanceof UsageError && /rag/.test(e.message),
    );

    const tmp = mkdtempSync(path.join(os.tmpdir(), 'moi-chat-'));
    try {
      writeFileSync(path.join(tmp, 'tokenizer.json'), JSON.stringify(json));
      writeFileSync(path.join(tmp, 'tokenizer_config.json'), JSON.stringify({ chat_template: 'FROM CONFIG' }));
      assert.equal(renderChat(loadTokenizer(tmp), ASK), 'FROM CONFIG');
      writeFileSync(path.join(tmp, 'chat_template.jinja'), 'FROM JINJA {{ add_generation_prompt }}');
      assert.equal(renderChat(loadTokenizer(tmp), ASK), 'FROM JINJA true');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('renders from a plain {chatTemplate, bosToken, eosToken} object; extras override token strings', function () {
    const src = {
      chatTemplate:
        '{{ bos_token }}|{% for m in messages %}{{ m.role }}:{{ m.content }}{{ eos_token }}{% endfor %}|{{ x }}',
      bosToken: '<s>',
      eosToken: '</s>',
    };
    assert.equal(renderChat(src, [{ role: 'user', content: 'hi' }], { extra: { x: 7 } }), '<s>|user:hi</s>|7');
    assert.equal(renderChat(src, [{ role: 'user', content: 'hi' }], { extra: { bos_token: 'B' } }), 'B|user:hi</s>|');
  });

  it('template errors are typed: refused conversations, bad messages, broken templates', function () {
    // Gemma's template raises on roles that do not alternate.
    assert.throws(
      () =>
        renderChat(gemma3, [
          { role: 'user', content: 'a' },
          { role: 'user', content: 'b' },
        ]),
      (e: unknown) =>
        e instanceof UsageError && /alternate/.test(e.message) && e.message.includes('chat_template.jinja'),
    );
    assert.throws(
      () => renderChat(qwen3, [{ role: 'user', content: 5 as unknown as string }]),
      (e: unknown) => e instanceof UsageError && /messages\[0\]/.test(e.message),
    );
    assert.throws(
      () => renderChat({ chatTemplate: '{% for %}' }, ASK),
      (e: unknown) => e instanceof ModelError && e.code === 'E_CHAT_TEMPLATE',
    );
  });
});
