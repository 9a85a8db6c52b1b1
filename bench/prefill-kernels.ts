/**
 * Prefill with our wasm kernels on and off, alternated in one process: prefill tok/s (the time
 * of one `forward` over the whole prompt into a fresh cache, logits of the last position read
 * back), median over repeats, and with --profile one tf.profile of a prefill each way, its
 * kernel time summed by kernel name (profiling adds its own overhead: proportions, not speed).
 *
 *   node_modules/.bin/tsx bench/prefill-kernels.ts --model DIR [--prompt-tokens 128] [--repeat 5] [--profile]
 *
 * The prompt is peer-bench's: prompt[i] = 1000 + (i·7919) mod (vocab_size − 2000).
 */
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, setKernelsEnabled } from '@moi/core';
import { loadModel } from '@moi/models';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}

const dir = flag('--model', '');
if (!dir)
  throw new Error('usage: tsx bench/prefill-kernels.ts --model DIR [--prompt-tokens 128] [--repeat 5] [--profile]');
const P = Number(flag('--prompt-tokens', '128'));
const R = Number(flag('--repeat', '5'));

await initBackend({ backend: 'wasm' });
const { model } = await loadModel(dir);
const prompt = Array.from({ length: P }, (_, i) => 1000 + ((i * 7919) % (model.spec.vocabSize - 2000)));

/** One prefill into a fresh cache; returns its milliseconds. */
function prefill(): number {
  const cache = model.makeCache(1, P + 1);
  try {
    const t0 = performance.now();
    const logits = model.forward({ ids: [prompt] }, { cache, lastOnly: true });
    logits.dataSync();
    const ms = performance.now() - t0;
    logits.dispose();
    return ms;
  } finally {
    for (const c of cache) c.dispose();
  }
}

const median = (x: number[]) => x.slice().sort((a, b) => a - b)[x.length >> 1];
const tokS: Record<'off' | 'on', number[]> = { off: [], on: [] };
try {
  for (const on of [false, true]) {
    setKernelsEnabled(on);
    prefill();
  } // warm-up: packing, constants
  for (let r = 0; r < R; r++) {
    for (const on of [false, true]) {
      setKernelsEnabled(on);
      tokS[on ? 'on' : 'off'].push((P / prefill()) * 1000);
    }
  }
  console.log(
    JSON.stringify({
      model: dir,
      prompt_tokens: P,
      load: readFileSync('/proc/loadavg', 'utf8').trim().split(' ').slice(0, 3).join(' '),
      off_tok_s: tokS.off.map((x) => +x.toFixed(1)),
      on_tok_s: tokS.on.map((x) => +x.toFixed(1)),
      off_median: +median(tokS.off).toFixed(1),
      on_median: +median(tokS.on).toFixed(1),
      speedup: +(median(tokS.on) / median(tokS.off)).toFixed(3),
    }),
  );
  if (process.argv.includes('--profile')) {
    for (const on of [false, true]) {
      setKernelsEnabled(on);
      const info = await tf.profile(() => {
        prefill();
      });
      const byName = new Map<string, { ms: number; n: number }>();
      let total = 0;
      for (const k of info.kernels) {
        const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
        total += ms;
        const e = byName.get(k.name) ?? { ms: 0, n: 0 };
        e.ms += ms;
        e.n += 1;
        byName.set(k.name, e);
      }
      const top = [...byName].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12);
      console.log(
        `kernels ${on ? 'on' : 'off'}: ${info.kernels.length} kernels, ${total.toFixed(0)} ms profiled: ` +
          top
            .map(([name, e]) => `${name} ${e.ms.toFixed(0)} ms (${((100 * e.ms) / total).toFixed(0)}%, ×${e.n})`)
            .join(', '),
      );
    }
  }
} finally {
  setKernelsEnabled(true);
  model.dispose();
}
