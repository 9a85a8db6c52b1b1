/** `moi-gen synth`: write a Hugging Face model folder with deterministic random weights. */
import { Command, Option } from 'commander';
import { synthesizeModel } from '../synth.ts';
import { int, userPath } from './options.ts';

interface SynthFlags {
  config: string;
  out: string;
  dtype: 'f32' | 'bf16';
  seed: number;
  quiet?: boolean;
}

export function synthCommand(): Command {
  return new Command('synth')
    .description(
      'write a model folder (config.json + model.safetensors) of a real shape with deterministic random weights',
    )
    .requiredOption('--config <file>', 'a config.json (e.g. ../shared/peer-bench/configs/qwen2.5-0.5b.json)')
    .requiredOption('--out <dir>', 'the folder to write')
    .addOption(new Option('--dtype <dtype>', 'weight dtype').choices(['f32', 'bf16']).default('f32'))
    .option('--seed <n>', 'random seed (same seed, same bytes)', int('--seed'), 1)
    .option('-q, --quiet', 'no summary line')
    .action((o: SynthFlags) => {
      const r = synthesizeModel({ config: userPath(o.config), out: userPath(o.out), dtype: o.dtype, seed: o.seed });
      if (!o.quiet) {
        process.stdout.write(
          `${r.dir}: ${r.modelType}, ${r.tensors} tensors, ${(r.params / 1e6).toFixed(1)}M params, ` +
            `${(r.fileBytes / 1e9).toFixed(2)} GB ${r.dtype}, ${r.seconds.toFixed(1)} s\n`,
        );
      }
    });
}
