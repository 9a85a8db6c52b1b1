/** Subcommands beyond generate and score (chat, bench, synth) register here. */
import type { Command } from 'commander';
import { chatCommand } from './chat.ts';

export function extraCommands(): Command[] {
  return [chatCommand()];
}
