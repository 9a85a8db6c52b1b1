#!/usr/bin/env node
// llama.cpp's batched decode (node-llama-cpp, CPU), measured as `moi-gen bench --batches` measures
// ours: B rows, row i prompted with the first P − (i mod 4) peer-bench prompt ids, all prefilled,
// then G greedy steps of every row at once; tok/s = B·G ÷ the time of those steps (each row's
// first token, from its prefill, not counted). The rows are sequences of one context: node-llama-cpp
// gathers the rows' pending tokens into one llama_decode batch per step.
//
// bench/peer.ts copies this file into peer-bench's scratch folder (where node-llama-cpp and
// lib/util.mjs are) and runs it there next to bench-llamacpp.mjs:
//
//   node llamacpp-batch.mjs --gguf FILE --prompt-tokens 128 --gen-tokens 64 --threads N
//        [--batches 4,16] [--repeat 2] [--kv f32|f16]
//
// Prints one JSON line: { engine, threads, batches: { "4": tok/s, ... } } (medians over --repeat).
import { getLlama } from 'node-llama-cpp';
import { parseArgs, promptIds } from './lib/util.mjs';

const args = parseArgs(process.argv.slice(2), {
  gguf: '',
  'prompt-tokens': 128,
  'gen-tokens': 64,
  threads: 1,
  batches: '4,16',
  repeat: 2,
  kv: 'f32',
});
const P = args['prompt-tokens'];
const G = args['gen-tokens'];
const batches = String(args.batches).split(',').filter(Boolean).map(Number);
if (!args.gguf) throw new Error('--gguf FILE is required');
if (
  !(P >= 4 && G >= 1 && args.threads >= 1 && args.repeat >= 1) ||
  batches.some((b) => !(Number.isInteger(b) && b >= 1))
)
  throw new Error(
    '--prompt-tokens (at least 4), --gen-tokens, --threads, --repeat and --batches take positive integers',
  );
const kvType = { f16: 'F16', f32: 'F32' }[args.kv];
if (!kvType) throw new Error('--kv must be f16 or f32');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const llama = await getLlama({
  gpu: false,
  build: 'never',
  skipDownload: true,
  maxThreads: args.threads,
  logLevel: 'error',
  progressLogs: false,
});
const model = await llama.loadModel({ modelPath: args.gguf, gpuLayers: 0 });
const meta = model.fileInfo.metadata;
const nVocab = meta[meta.general.architecture]?.vocab_size ?? meta.tokenizer?.ggml?.tokens?.length;
const prompt = promptIds(P, nVocab);

/** One timed run of the rows (a context's sequences, cleared first); tok/s of the steps after the first token. */
async function runOnce(seqs) {
  const B = seqs.length;
  for (const s of seqs) await s.clearHistory();
  const its = seqs.map((s, i) => s.evaluate(prompt.slice(0, P - (i % 4)), { temperature: 0, yieldEogToken: true }));
  try {
    await Promise.all(its.map((it) => it.next())); // the prefills and each row's first token
    const t0 = performance.now();
    for (let k = 0; k < G; k++) {
      const steps = await Promise.all(its.map((it) => it.next()));
      if (steps.some((r) => r.done)) throw new Error('generation stopped early');
    }
    return (B * G) / ((performance.now() - t0) / 1000);
  } finally {
    await Promise.all(its.map((it) => it.return()));
  }
}

const out = {};
let threads = args.threads;
for (const B of batches) {
  const context = await model.createContext({
    contextSize: B * (P + G + 16),
    batchSize: Math.max(512, B),
    sequences: B,
    threads: args.threads,
    flashAttention: 'auto',
    experimentalKvCacheKeyType: kvType,
    experimentalKvCacheValueType: kvType,
  });
  threads = context.currentThreads ?? threads;
  try {
    const seqs = Array.from({ length: B }, () => context.getSequence());
    await runOnce(seqs); // warm-up, not timed
    const runs = [];
    for (let r = 0; r < args.repeat; r++) runs.push(await runOnce(seqs));
    out[String(B)] = +median(runs).toFixed(2);
  } finally {
    await context.dispose();
  }
}
console.log(
  JSON.stringify({ engine: 'llama.cpp', threads, prompt_tokens: P, gen_tokens: G, kv: args.kv, batches: out }),
);
await model.dispose();
await llama.dispose();
