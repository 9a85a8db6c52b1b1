/**
 * Evaluation throughput: countdown:gen problems × {standard, moi} through the in-process
 * completer on the SmolLM2-135M synthetic shape (random weights, our synth), a fixed number of new
 * tokens each. Reports problems/min and aggregate generated tok/s.
 *
 *   node_modules/.bin/tsx bench/eval-throughput.ts [--problems 64] [--max-tokens 256] [--max-seqs 16]
 *       [--config ../shared/peer-bench/configs/smollm2-135m.json] [--scratch DIR] [--json]
 *
 * The shape has no tokenizer of its own: Llama 2's tokenizer.json (from ../shared/tokenizers)
 * encodes the prompts; ids beyond its 32000 entries decode to nothing, which costs nothing here.
 * EOS is possible but, with random weights, rare; the token count actually generated is reported.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sharedDir } from '@moi/core';
import { Engine } from '@moi/engine';
import { InProcessCompleter } from '../packages/cli/src/eval/in-process.ts';
import { runEval } from '../packages/cli/src/eval/runner.ts';
import { loadTask } from '../packages/cli/src/eval/tasks.ts';
import { synthesizeModel } from '../packages/cli/src/synth.ts';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}

const shared = sharedDir();
if (!shared) throw new Error('../shared is missing (set MOI_SHARED)');
const problems = Number(flag('--problems', '64'));
const maxTokens = Number(flag('--max-tokens', '256'));
const maxSeqs = Number(flag('--max-seqs', '16'));
const config = flag('--config', path.join(shared, 'peer-bench', 'configs', 'smollm2-135m.json'));
const scratch = flag('--scratch', path.join(os.tmpdir(), 'moi-eval-bench'));
const modelDir = path.join(scratch, path.basename(config, '.json'));
const out = path.join(scratch, `run-${Date.now()}`);

if (!fs.existsSync(path.join(modelDir, 'model.safetensors'))) synthesizeModel({ config, out: modelDir, seed: 1 });
fs.copyFileSync(path.join(shared, 'tokenizers', 'llama2', 'tokenizer.json'), path.join(modelDir, 'tokenizer.json'));

const t0 = performance.now();
const engine = await Engine.load(modelDir);
const loadS = (performance.now() - t0) / 1000;
const task = await loadTask('countdown:gen', { limit: problems, seed: 0 });
const t1 = performance.now();
const { records } = await runEval(
  task,
  {
    model: modelDir,
    task: 'countdown:gen',
    modes: ['standard', 'moi'],
    samples: 1,
    seed: 0,
    sampling: { temperature: 0.6, topP: 0.4 },
    maxTokens,
  },
  {
    out,
    completer: new InProcessCompleter(engine, maxSeqs),
    tokenizer: engine.tokenizer,
    progress: Boolean(process.stderr.isTTY),
  },
);
const wall = (performance.now() - t1) / 1000;
const tokens = records.reduce((s, r) => s + r.completion_tokens, 0);
const result = {
  shape: path.basename(config, '.json'),
  backend: engine.backend.name,
  problems,
  modes: 2,
  max_tokens: maxTokens,
  max_seqs: maxSeqs,
  load_s: +loadS.toFixed(2),
  wall_s: +wall.toFixed(1),
  generated_tokens: tokens,
  problems_per_min: +((problems / wall) * 60).toFixed(2),
  completions_per_min: +((records.length / wall) * 60).toFixed(2),
  aggregate_tok_s: +(tokens / wall).toFixed(1),
};
engine.dispose();
if (process.argv.includes('--json')) process.stdout.write(JSON.stringify(result) + '\n');
else {
  for (const [k, v] of Object.entries(result)) process.stdout.write(`${k.padEnd(20)} ${v}\n`);
}
if (!process.argv.includes('--keep')) fs.rmSync(out, { recursive: true, force: true });
process.exit(0);
