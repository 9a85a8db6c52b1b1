import { initBackend } from '@moi/core';
import { Engine } from './packages/cli/src/engine/engine.ts';
import { generateOne } from './packages/cli/src/engine/generate.ts';
await initBackend({ backend: 'wasm' });
const e = await Engine.load('/work/shared/fixtures/stories260K', { backend: 'wasm' });
const p = [1, 403, 407, 261, 378];
for (const mix of [{ mode: 'standard' }, { mode: 'moi' }, { mode: 'soft', soft: { thinkEndId: 2 } }, { mode: 'soft', soft: { thinkEndId: 2, noise: 'dirichlet' } }] as const) {
  for (let k = 0; k < 2; k++) {
    const t = performance.now();
    const r = await generateOne(e, { promptIds: p, maxTokens: 200, sampling: { seed: 1 }, ignoreEos: true, mix: mix as any });
    console.log(mix.mode, (mix as any).soft?.noise ?? '', r.done.tokens.length, ((performance.now() - t) / 200).toFixed(2), 'ms/step');
  }
}
