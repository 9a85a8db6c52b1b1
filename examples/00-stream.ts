// Library use in 15 lines (the README's "Library" example): load a model, stream MoI text.
// Run from the repository root: npx tsx examples/00-stream.ts [model folder or hub id]
import { Engine, encodePrompt, generate } from '@moi/engine';

const engine = await Engine.load(process.argv[2] ?? '../shared/fixtures/stories260K');
const request = {
  promptIds: encodePrompt(engine.tokenizer!, 'Once upon a time'),
  maxTokens: 48,
  sampling: { temperature: 0 },
  mix: { mode: 'moi', beta: 1 }, // Mixture of Inputs; 'standard' for plain decoding
};
for await (const e of generate(engine, [request])) {
  if (e.type === 'token') process.stdout.write(e.text); // each token's text as it comes
  else console.log(`\n[${e.finishReason}: ${e.stats.generatedTokens} tokens, ${e.stats.decodeTokPerSec.toFixed(1)} tok/s]`);
}
engine.dispose();
