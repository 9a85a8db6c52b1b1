import * as tf from '@tensorflow/tfjs-core';
import { readFileSync } from 'node:fs';
import { initBackend } from '@moi/core';
import { Engine } from '../packages/cli/src/engine/engine.ts';
import { generateOne } from '../packages/cli/src/engine/generate.ts';
async function traced(engine: Engine, req: any) {
  const model = engine.model; const original = model.forward; const L: Float32Array[] = [];
  model.forward = (i: any, o: any) => { const out = original.call(model, i, o); const [, T, V] = out.shape; const l = tf.slice(out, [0, T - 1, 0], [1, 1, V]); L.push(Float32Array.from(l.dataSync() as Float32Array)); l.dispose(); return out; };
  const { events, done } = await generateOne(engine, req); delete (model as any).forward;
  return { tokens: done.tokens, L, ent: events.map((e) => e.mix!.entropy) };
}
const md = (a: ArrayLike<number>, b: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };
for (const name of process.argv.slice(2)) {
  const dir = `/work/shared/fixtures/${name}`;
  const ref = JSON.parse(readFileSync(dir + '/reference.json', 'utf8'));
  const t = ref.moi.find((m: any) => m.mode === 'direct');
  const req = { promptIds: t.input_ids, maxTokens: t.tokens.length, sampling: { temperature: 0 }, ignoreEos: true, mix: { mode: 'direct', beta: t.beta } };
  const w = await traced(await Engine.load(dir, { backend: 'wasm' }), req);
  const c = await traced(await Engine.load(dir, { backend: 'cpu' }), req);
  await initBackend({ backend: 'wasm' });
  console.log(name);
  for (let s = 0; s < t.tokens.length; s++) {
    const sc = Math.max(1, ...t.step_logits[s].map(Math.abs));
    console.log(s, 'scale', sc.toFixed(2), 'w-c', (md(w.L[s], c.L[s]) / sc).toExponential(2), 'w-ref', (md(w.L[s], t.step_logits[s]) / sc).toExponential(2), 'c-ref', (md(c.L[s], t.step_logits[s]) / sc).toExponential(2), w.tokens[s], c.tokens[s], t.tokens[s]);
  }
}
