/**
 * # 03 · Chat: templates and a session over one KV cache
 *
 * Part A renders a conversation with a real chat template (Qwen3's, from its tokenizer files) to
 * show what the model actually reads. Part B runs a two-turn ChatSession: each turn re-renders
 * the conversation, keeps what the KV cache already holds, and prefills only the new tokens.
 *
 * Run: npx tsx examples/03-chat.ts [model folder with a chat template]
 * (default: stories260K with a small template given below)
 */
import path from 'node:path';
import { sharedDir } from '@moi/core';
import { ChatSession, Engine, encodeChat, loadTokenizer, renderChat, type ChatMessage } from '@moi/engine';

const shared = sharedDir();
const conversation: ChatMessage[] = [
  { role: 'system', content: 'You tell short stories for children.' },
  { role: 'user', content: 'Tell me about a cat.' },
];

// ## A. A real chat template: Qwen3
// The template is Jinja text from tokenizer_config.json; rendering it with the messages and
// add_generation_prompt gives the prompt string, which is then encoded without adding BOS (the
// template writes what the model needs).
console.log('## A. Qwen3 chat template');
if (shared) {
  const qwen3 = loadTokenizer(path.join(shared, 'tokenizers/qwen3'));
  const text = renderChat(qwen3, conversation, { addGenerationPrompt: true });
  const ids = encodeChat(qwen3, conversation, { addGenerationPrompt: true });
  console.log(text);
  console.log(`→ ${ids.length} tokens: [${ids.slice(0, 8).join(', ')}, …]`);
  // Qwen3 reads template variables too: enable_thinking=false pre-fills an empty think block.
  const noThink = encodeChat(qwen3, conversation, { extra: { enable_thinking: false } });
  console.log(
    `with enable_thinking=false: ${noThink.length} tokens (ends ${JSON.stringify(qwen3.decode(noThink.slice(-4)))})\n`,
  );
} else {
  console.log('(shared/ not found: skipping the Qwen3 tokenizer)\n');
}

// ## B. A chat session
// stories260K is a base model trained on children's stories: it has no chat template. So we
// give the session a tiny one: a user turn opens with <s> (a story start), the model's reply
// continues it, and </s> closes the reply. A chat model (argv[2]) uses its own template instead.
const model = process.argv[2] ?? (shared && path.join(shared, 'fixtures/stories260K'));
if (!model) {
  console.error('no model: pass a model folder, or put shared/ at ../shared (or set MOI_SHARED)');
  process.exit(1);
}
const engine = await Engine.load(model);
const tinyTemplate =
  "{% for m in messages %}{% if m.role == 'user' %}{{ bos_token }}{{ m.content }}" +
  "{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}";
const session = new ChatSession(engine, {
  chatTemplate: engine.tokenizer?.chatTemplate ? undefined : tinyTemplate,
  maxContext: 512,
  defaults: { maxTokens: 32, sampling: { temperature: 0 } },
});
console.log(`## B. Chat session on ${engine.dir} (${engine.backend.name}), context ${session.capacity} tokens`);

// Two turns. send() streams events; here we print the text as it comes.
for (const user of ['Once upon a time', 'Lily went to the park']) {
  process.stdout.write(`\nuser: ${user}\nmodel: `);
  for await (const e of session.send(user)) if (e.type === 'token') process.stdout.write(e.text);
  const t = session.turns[session.turns.length - 1];
  console.log(
    `\n[prompt ${t.promptTokens} tokens: ${t.reusedTokens} reused from the cache, ${t.prefilledTokens} prefilled; ` +
      `${t.generatedTokens} generated, finish: ${t.finishReason}]`,
  );
}

// ## C. What the second turn saved
// Without the cache, turn 2 would prefill its whole prompt; with it, only the new tokens.
const [t1, t2] = session.turns;
console.log('\n## C. Prefill per turn');
console.log(`turn 1: ${t1.prefilledTokens} of ${t1.promptTokens} tokens prefilled`);
console.log(`turn 2: ${t2.prefilledTokens} of ${t2.promptTokens} tokens prefilled (${t2.reusedTokens} reused)`);
session.dispose();
engine.dispose();
