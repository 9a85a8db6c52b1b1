/** Subcommands beyond generate and score (chat, bench, synth) register here. */
import type { Command } from 'commander';

export function extraCommands(): Command[] {
  return [];
}
