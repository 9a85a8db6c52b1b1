/** model_type → family. */
import { ModelError } from '@moi/core';
import type { Family } from './family.ts';
import { gemma } from './gemma.ts';
import { gemma2 } from './gemma2.ts';
import { gemma3 } from './gemma3.ts';
import { llama } from './llama.ts';
import { qwen2 } from './qwen2.ts';
import { qwen3 } from './qwen3.ts';

export const FAMILIES: Family<any>[] = [llama, qwen2, qwen3, gemma, gemma2, gemma3];

export const SUPPORTED_MODEL_TYPES: string[] = FAMILIES.flatMap((f) => f.modelTypes);

export function familyFor(modelType: unknown, source = 'config.json'): Family<any> {
  if (typeof modelType !== 'string' || modelType === '') {
    throw new ModelError(
      'E_CONFIG',
      `${source}: no 'model_type' field; supported model types: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
    );
  }
  const f = FAMILIES.find((fam) => fam.modelTypes.includes(modelType));
  if (!f) {
    throw new ModelError(
      'E_UNKNOWN_ARCH',
      `${source}: unknown model_type '${modelType}'; supported model types: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
    );
  }
  return f;
}
