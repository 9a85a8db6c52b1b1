/**
 * Shared by the examples: the model folder (or hub id) from the command line, else the real
 * pretrained stories260K from ../shared (a tiny Llama trained on children's stories).
 */
import path from 'node:path';
import { sharedDir } from '@moi/core';
import { Engine } from '@moi/engine';

export function exampleModelPath(): string {
  const shared = sharedDir();
  const model = process.argv[2] ?? (shared && path.join(shared, 'fixtures/stories260K'));
  if (!model) {
    console.error('no model: pass a model folder, or put shared/ at ../shared (or set MOI_SHARED)');
    process.exit(1);
  }
  return model;
}

export async function loadExampleEngine(): Promise<Engine> {
  return Engine.load(exampleModelPath());
}
