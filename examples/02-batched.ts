/**
 * # 02 · A batch of prompts, each with its own settings
 *
 * Three prompts of different lengths decoded together: one forward per step for all rows still
 * going, while each row keeps its own sampling (temperature, top-p, seed) and its own input
 * mixing (standard, MoI, direct). Rows finish on their own (max tokens, EOS, stop strings).
 *
 * Run: npx tsx examples/02-batched.ts [model folder or hub id]
 */
import { loadExampleEngine } from './load-example-model.ts';
import { encodePrompt, generate, type DoneEvent, type GenerateRequest, type TokenEvent } from '@moi/engine';

// ## 1. Load the model
const engine = await loadExampleEngine();
const tok = engine.tokenizer!;
console.log('## 1. Model');
console.log(`${engine.dir} on ${engine.backend.name}\n`);

// ## 2. Three requests
// Prompts of 3, 5 and 12-odd tokens; each request carries its own settings. Seeds make the
// sampled rows repeatable.
const requests: GenerateRequest[] = [
  {
    promptIds: encodePrompt(tok, 'Once upon a time'),
    maxTokens: 32,
    sampling: { temperature: 0 },
    mix: { mode: 'standard' },
  },
  {
    promptIds: encodePrompt(tok, 'Lily and Ben went to the beach with their big red ball'),
    maxTokens: 24,
    sampling: { temperature: 0.8, topP: 0.9, seed: 1 },
    mix: { mode: 'moi', beta: 1 },
  },
  {
    promptIds: encodePrompt(tok, 'The cat'),
    maxTokens: 16,
    sampling: { temperature: 0.7, seed: 2 },
    mix: { mode: 'direct' },
    stop: ['\n'],
  },
];
const label = (r: GenerateRequest) =>
  `${r.mix?.mode}${r.mix?.beta !== undefined ? ` β=${r.mix.beta}` : ''}, T=${r.sampling?.temperature}` +
  `${r.sampling?.topP ? `, top-p ${r.sampling.topP}` : ''}`;
console.log('## 2. Requests');
requests.forEach((r, i) =>
  console.log(`row ${i}: ${r.promptIds.length} prompt tokens, ${r.maxTokens} max new, ${label(r)}`),
);
console.log();

// ## 3. Decode them together
// Count forwards by wrapping the model's forward: one per prompt to prefill, then one per step
// for the whole batch.
let forwards = 0;
const forward = engine.model.forward.bind(engine.model);
engine.model.forward = (...args: Parameters<typeof forward>) => {
  forwards++;
  return forward(...args);
};

const tokens: TokenEvent[][] = requests.map(() => []);
const done: DoneEvent[] = [];
for await (const e of generate(engine, requests)) {
  if (e.type === 'token') tokens[e.row].push(e);
  else done[e.row] = e;
}
const steps = Math.max(...tokens.map((t) => t.length));
console.log('## 3. Forwards');
console.log(
  `${forwards} forwards: ${requests.length} prefills + ${forwards - requests.length} decode steps for ` +
    `${tokens.reduce((n, t) => n + t.length, 0)} tokens in ${steps} steps\n`,
);

// ## 4. Results
// Mean H: the average normalized entropy the mixer saw (a rough "how unsure was the model").
// Direct mixing (no extra weight on the sampled token) feeds inputs that drift off the
// embeddings the model was trained on: on a model this small its text soon falls apart.
console.log('## 4. Results');
for (const d of done) {
  const hs = tokens[d.row].flatMap((t) => (t.mix ? [t.mix.entropy] : []));
  const meanH = hs.length ? (hs.reduce((a, b) => a + b, 0) / hs.length).toFixed(3) : '—';
  console.log(`row ${d.row} (${label(requests[d.row])}): ${JSON.stringify(d.text)}`);
  console.log(
    `  ${d.stats.generatedTokens} tokens, finish: ${d.finishReason}, mean H ${meanH}, ` +
      `prefill ${d.stats.prefillTokPerSec.toFixed(0)} tok/s, decode ${d.stats.decodeTokPerSec.toFixed(0)} tok/s`,
  );
}
engine.dispose();
