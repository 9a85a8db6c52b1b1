/**
 * The doctor's model: a small Llama (hidden 64, 4 layers, 4 query heads over 2 key/value heads,
 * head_dim 16, vocabulary 512, untied head) with deterministic random weights, made on the spot
 * (no fixtures, no network) into a temporary folder that the caller removes.
 *
 * The weights are scaled so that logits are far from uniform (as the conformance fixtures are):
 * embeddings std 1, projections std 1/√fan_in, the head std 0.6 (logits of std ~5), norm weights
 * 1 ± 0.05. With synth's 0.02 everywhere every logit is ~0 and greedy decoding would stand on
 * near-ties, which two correct backends may break differently. The values come from synth's
 * generator (tensorRng, fillNoise), so they depend only on the seed and the tensor's name.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeSafetensors, type TensorInput } from '@moi/core';
import { expectedTensors, specFromConfig, type RawConfig } from '@moi/models';
import { fillNoise, tensorRng } from '../synth.ts';

export const DOCTOR_CONFIG: RawConfig = Object.freeze({
  model_type: 'llama',
  architectures: ['LlamaForCausalLM'],
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: 512,
  max_position_embeddings: 256,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  hidden_act: 'silu',
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
  torch_dtype: 'float32',
});

/** (mean, std) of a tensor by its graph name and shape. */
function initFor(name: string, shape: number[]): [number, number] {
  if (shape.length === 1) return [1, 0.05]; // norm weights
  if (name === 'model.embed_tokens.weight') return [0, 1];
  if (name === 'lm_head.weight') return [0, 0.6];
  return [0, 1 / Math.sqrt(shape[1])]; // [out, in]
}

/** Write the doctor's model into a new temporary folder; returns the folder. */
export function writeDoctorModel(seed = 21): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'moi-doctor-'));
  const config = { ...DOCTOR_CONFIG };
  const { spec } = specFromConfig(config, 'the doctor model');
  const tensors: Array<[string, TensorInput]> = [...expectedTensors(spec)].map(([name, shape]) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const [mean, std] = initFor(name, shape);
    fillNoise(data, tensorRng(seed, name), mean, std);
    return [name, { dtype: 'F32', shape, data }];
  });
  writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return dir;
}
