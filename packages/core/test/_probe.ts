import { readFileSync } from 'node:fs';
import { Checkpoint, GpuDecodePlan } from '../src/index.ts';
import { readConfig, specFromConfig } from '@moi/models';
const name = process.argv[2] ?? 'llama';
const dir = `/work/shared/fixtures/${name}`;
const { spec } = specFromConfig(readConfig(dir));
const ck = Checkpoint.open(dir);
const ref = JSON.parse(readFileSync(`${dir}/reference.json`, 'utf8'));
let t0 = performance.now();
const plan = await GpuDecodePlan.create({ spec: spec as any, weights: (n) => ck.has(n) ? { data: ck.readFloat32(n), dtype: 'f32', shape: ck.info(n).shape } : null, batch: 1, capacity: 64, prefillChunk: 4 });
console.log('build', (performance.now() - t0).toFixed(0), 'ms', plan.dispatchesPerStep());
const c = ref.cases[0];
const V = spec.vocabSize;
const cmp = (got: Float32Array, want: number[]) => { let sc = 0, w = 0; for (let i = 0; i < V; i++) { sc = Math.max(sc, Math.abs(want[i])); w = Math.max(w, Math.abs(got[i] - want[i])); } return w / sc; };
t0 = performance.now();
await plan.prefill(0, c.input_ids.slice(0, 5));
console.log('prefill', (performance.now() - t0).toFixed(0), 'ms', plan.lastStep);
let lg = await plan.logits();
console.log('t4', cmp(lg, c.logits[4]).toExponential(2));
for (let t = 5; t < c.input_ids.length; t++) {
  t0 = performance.now();
  await plan.step({ ids: [c.input_ids[t]] });
  lg = await plan.logits();
  console.log('t' + t, cmp(lg, c.logits[t]).toExponential(2), (performance.now() - t0).toFixed(0), 'ms', JSON.stringify(plan.lastStep));
}
// greedy
plan.resetRow(0);
let r = await plan.prefill(0, c.input_ids);
const toks = [r.token];
for (let i = 1; i < c.greedy.n; i++) { const rs = await plan.step(); toks.push(rs[0].token); }
console.log('greedy', JSON.stringify(toks) === JSON.stringify(c.greedy.tokens), toks.join(','), c.greedy.tokens.join(','));
