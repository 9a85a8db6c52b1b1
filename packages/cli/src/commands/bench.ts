/** `moi-gen bench`: the engine benchmark (see bench/bench.ts). */
import { Command, Option } from 'commander';
import { formatBench, runBench } from '../bench/bench.ts';
import { checkTensorsOption, dtypeOption, int, modelArg, threadsOption, type DtypeChoice } from './options.ts';

interface BenchFlags {
  model: string;
  backend?: string;
  dtype?: DtypeChoice;
  threads?: number;
  checkTensors: boolean;
  promptTokens: number;
  genTokens: number;
  repeat: number;
  batches: string;
  roofline: boolean;
  json?: boolean;
  quiet?: boolean;
}

export function benchCommand(): Command {
  return new Command('bench')
    .description(
      'measure load, prefill and decode speed (standard, moi, direct, batched) against a measured memory-bandwidth roofline',
    )
    .requiredOption('-m, --model <dir|id>', 'model folder or hub id')
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(['tensorflow', 'wasm', 'cpu', 'webgpu']))
    .addOption(dtypeOption())
    .addOption(threadsOption())
    .addOption(checkTensorsOption())
    .option('--prompt-tokens <n>', 'prompt length', int('--prompt-tokens'), 128)
    .option('--gen-tokens <n>', 'decode steps timed per run', int('--gen-tokens'), 64)
    .option('--repeat <n>', 'runs per figure (medians reported)', int('--repeat'), 3)
    .option('--batches <list>', 'batch sizes for batched decode (comma-separated, empty for none)', '4,16')
    .option('--no-roofline', 'skip the memory-bandwidth measurement before the load (roofline is then null)')
    .option('--json', 'print one JSON line instead of the table')
    .option('-q, --quiet', 'no progress lines on stderr')
    .action(async (o: BenchFlags) => {
      const batches = o.batches
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
        .map(Number);
      const r = await runBench({
        model: modelArg(o.model),
        backend: o.backend,
        dtype: o.dtype,
        threads: o.threads,
        checkTensors: o.checkTensors,
        promptTokens: o.promptTokens,
        genTokens: o.genTokens,
        repeat: o.repeat,
        batches,
        roofline: o.roofline,
        log: o.quiet ? undefined : (line) => process.stderr.write(`bench: ${line}\n`),
      });
      process.stdout.write(o.json ? JSON.stringify(r) + '\n' : formatBench(r) + '\n');
    });
}
