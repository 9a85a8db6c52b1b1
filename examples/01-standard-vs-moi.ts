/**
 * # 01 · Standard decoding vs Mixture of Inputs
 *
 * One prompt, decoded three ways with greedy sampling:
 *   - standard: the next input is the embedding of the sampled token, E[y];
 *   - moi (β = 1): the next input mixes the top-20 candidates' embeddings, weighted by the
 *     model's distribution p and its normalized entropy H, with extra weight on the sampled token:
 *     w_i = (H·p_i + (β + 1 − H)·[i = y]) / (β + 1);
 *   - direct: the next input is the plain expectation Σ p_i E[i].
 * Then, step by step, what the mixer saw: H and the weight w_y on the sampled token.
 *
 * Run: npx tsx examples/01-standard-vs-moi.ts [model folder or hub id]
 * (default: the stories260K fixture in ../shared)
 */
import { loadExampleEngine } from './load-example-model.ts';
import { encodePrompt, generateOne, type TokenEvent } from '@moi/engine';

// ## 1. Load the model
// A model folder (config.json, *.safetensors, tokenizer.json) or a hub id from the command line;
// else the real pretrained stories260K (see load-example-model.ts).
const engine = await loadExampleEngine();
const tok = engine.tokenizer!;
console.log('## 1. Model');
console.log(
  `${engine.dir}: ${engine.spec.numLayers} layers, hidden ${engine.spec.hiddenSize}, vocab ${engine.spec.vocabSize}, backend ${engine.backend.name}\n`,
);

// ## 2. Decode the same prompt three ways
// Greedy (temperature 0) so that the only difference between the runs is the next input.
const prompt = 'Once upon a time';
const promptIds = encodePrompt(tok, prompt);
const modes = [
  { name: 'standard', mix: { mode: 'standard' } },
  { name: 'moi β=1', mix: { mode: 'moi', beta: 1 } },
  { name: 'direct', mix: { mode: 'direct' } },
];
const runs: { name: string; text: string; events: TokenEvent[] }[] = [];
for (const m of modes) {
  const { events, done } = await generateOne(engine, {
    promptIds,
    maxTokens: 40,
    sampling: { temperature: 0 },
    mix: m.mix,
  });
  runs.push({ name: m.name, text: done.text, events });
}
console.log('## 2. Texts');
console.log(`prompt: ${JSON.stringify(prompt)} → ids [${promptIds.join(', ')}]`);
for (const r of runs) console.log(`${r.name.padEnd(9)} ${JSON.stringify(r.text)}`);
console.log();

// ## 3. Step by step
// H: normalized entropy of the model's distribution over the candidates (0 = sure, 1 = flat).
// w: weight of the next input on the sampled token (standard decoding: always 1).
// Where H is low, MoI's input is almost E[y]; where it is high, the runs start to differ.
console.log('## 3. Per-token table');
const cell = (s: string, n: number) => (s.length > n ? s.slice(0, n - 1) + '…' : s.padEnd(n));
const tokText = (e: TokenEvent | undefined) => (e ? JSON.stringify(tok.idToToken(e.token) ?? `#${e.token}`) : '');
console.log(
  `${'step'.padEnd(5)}| ${cell('standard', 12)}| ${cell('moi β=1', 12)}${'H'.padStart(6)}${'w'.padStart(6)} | ${cell('direct', 12)}${'H'.padStart(6)}${'w'.padStart(6)}`,
);
const steps = Math.max(...runs.map((r) => r.events.length));
for (let i = 0; i < steps; i++) {
  const [s, m, d] = runs.map((r) => r.events[i]);
  const hw = (e: TokenEvent | undefined) =>
    e?.mix ? `${e.mix.entropy.toFixed(3).padStart(6)}${e.mix.weight.toFixed(3).padStart(6)}` : ' '.repeat(12);
  console.log(
    `${String(i).padEnd(5)}| ${cell(tokText(s), 12)}| ${cell(tokText(m), 12)}${hw(m)} | ${cell(tokText(d), 12)}${hw(d)}`,
  );
}

// ## 4. Where the runs part
// With greedy sampling, MoI's extra weight on the sampled token keeps it close to standard
// decoding; direct mixing (no extra weight) tends to drift sooner.
console.log('\n## 4. First difference from standard decoding');
for (const r of runs.slice(1)) {
  const i = r.events.findIndex((e, k) => e.token !== runs[0].events[k]?.token);
  console.log(`${r.name.padEnd(9)} ${i < 0 ? 'same tokens throughout' : `first differs at step ${i}`}`);
}
engine.dispose();
