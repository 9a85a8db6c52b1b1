/** `moi-gen score`: the raw next-token logits of a prompt, one full forward, no cache. */
import { Command } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import { UsageError } from '@moi/core';
import { loadEngine, type ModelFlags } from './load.ts';
import { addModelOptions, idList } from './options.ts';
import { promptIds, promptSources } from './generate.ts';
import { checkFiniteRows, tokenText } from '@moi/engine';

interface ScoreFlags extends ModelFlags {
  ids?: number[];
  prompt?: string;
  json?: boolean;
}

async function run(args: string[], o: ScoreFlags): Promise<void> {
  promptSources(args, o);
  const { engine } = await loadEngine(o, true);
  const text = o.prompt ?? (args.length ? args.join(' ') : null);
  const ids = promptIds(engine, o.ids ? null : text, { ids: o.ids });
  const context = engine.spec.maxPositionEmbeddings;
  if (ids.length > context) {
    // the same class and code as generate's (exit 2)
    throw new UsageError(
      'E_CONTEXT',
      `the prompt has ${ids.length} tokens but the context is ${context} tokens (max_position_embeddings); shorten the prompt`,
    );
  }
  for (const id of ids) {
    if (id >= engine.spec.vocabSize)
      throw new UsageError('E_REQUEST', `token id ${id} is outside the vocabulary (0..${engine.spec.vocabSize - 1})`);
  }
  const logits = engine.model.forward({ ids: [ids] });
  const rows = (await logits.array()) as number[][][];
  logits.dispose();
  checkFiniteRows(rows[0]);
  if (o.json) {
    // each input token's own text beside its id (null without a tokenizer)
    const tok = engine.tokenizer;
    const inputTokens = ids.map((id) => (tok ? tokenText(tok, id) : null));
    process.stdout.write(
      JSON.stringify({
        model: engine.dir,
        backend: engine.backend.name,
        dtype: engine.loaded.dtype,
        dtypeNote: engine.loaded.dtypeNote,
        threads: engine.threads.threads,
        simd: engine.threads.simd,
        input_ids: ids,
        input_tokens: inputTokens,
        logits: rows[0],
      }) + '\n',
    );
    return;
  }
  for (let t = 0; t < ids.length; t++) {
    const row = rows[0][t];
    const top = tf.tidy(() => tf.topk(tf.tensor1d(row), Math.min(5, row.length)));
    const [vals, idx] = await Promise.all([top.values.data(), top.indices.data()]);
    tf.dispose([top.values, top.indices]);
    const show = Array.from(idx, (id, j) => `${id}:${vals[j].toFixed(3)}`).join(' ');
    process.stdout.write(`pos ${t} (id ${ids[t]}) → top: ${show}\n`);
  }
}

export function scoreCommand(): Command {
  const cmd = new Command('score')
    .description('print the next-token logits at every position of a prompt (no cache, one forward)')
    .argument('[prompt...]', 'the prompt text (needs a tokenizer), or use --ids')
    .option('-p, --prompt <text>', 'the prompt')
    .option('--ids <ids>', 'the prompt as raw token ids, e.g. 1,2,3', idList)
    .option(
      '--json',
      'print {input_ids, input_tokens, logits: [positions][vocab]} as JSON (with the backend and dtype)',
    );
  addModelOptions(cmd);
  return cmd.action((args: string[], o: ScoreFlags) => run(args, o));
}
