/**
 * `moi-gen doctor`: list the backends, then check the chosen one against the cpu backend on a
 * small random model (doctor/doctor.ts). Plain text (or --json: one object), a verdict per check;
 * exit 1 when any check fails, with the failed checks named on stderr.
 */
import { Command, Option } from 'commander';
import { BackendError, UsageError } from '@moi/core';
import { formatDoctor, runDoctor } from '../doctor/doctor.ts';
import { int, threadsOption } from './options.ts';

interface DoctorFlags {
  backend?: string;
  threads?: number;
  json?: boolean;
  steps: number;
  quiet?: boolean;
}

export function doctorCommand(): Command {
  return new Command('doctor')
    .description(
      'check this machine: which backends start (GPU adapter and limits, wasm SIMD, tfjs-node), then the chosen backend against cpu on a small random model',
    )
    .addOption(
      new Option(
        '--backend <name>',
        'the backend to check (default: $MOI_BACKEND, else the best available; the flushing cpu: MOI_FLUSH_SUBNORMALS=1 with cpu)',
      ).choices(['tensorflow', 'wasm', 'cpu', 'webgpu']),
    )
    .addOption(threadsOption())
    .option('--json', 'print one JSON object: backends, checks, free-running agreement, decode speed, ok')
    .option('-n, --steps <n>', 'decode steps per trajectory', int('--steps'), 16)
    .option('-q, --quiet', 'no progress lines on stderr')
    .action(async (o: DoctorFlags) => {
      if (!(o.steps >= 2 && o.steps <= 128))
        throw new UsageError('E_DOCTOR_STEPS', `doctor: --steps must be in [2, 128], got ${o.steps}`);
      const report = await runDoctor({
        backend: o.backend,
        steps: o.steps,
        threads: o.threads,
        onProgress: o.quiet || o.json ? undefined : (line) => process.stderr.write(`moi-gen doctor: ${line}\n`),
      });
      process.stdout.write(o.json ? `${JSON.stringify(report)}\n` : formatDoctor(report));
      if (!report.ok) {
        const failed = report.result.checks.filter((c) => !c.ok).map((c) => c.name);
        throw new BackendError(
          `doctor: ${failed.length} check(s) failed on ${report.result.backend?.label ?? o.backend ?? 'the chosen backend'}: ${failed.join(', ')}`,
        );
      }
    });
}
