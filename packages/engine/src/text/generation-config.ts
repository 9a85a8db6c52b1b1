/**
 * generation_config.json + config.json: stop ids and the model's default sampling settings.
 *
 * Merge rule (as transformers loads them): a field in generation_config.json wins; config.json
 * (or its text_config, for multimodal exports) fills what generation_config.json leaves out.
 * Either file may be absent.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { ModelError } from '@moi/core';
import { readJsonFile } from './tokenizer.ts';

export interface GenerationDefaults {
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  doSample?: boolean;
  maxNewTokens?: number;
}

export interface GenerationConfig {
  eosTokenIds: number[];
  bosTokenId?: number;
  padTokenId?: number;
  defaults: GenerationDefaults;
}

type Json = Record<string, unknown>;

/** A token id field: a number, a list of numbers, or null/absent. */
function ids(value: unknown, file: string, field: string): number[] | undefined {
  if (value === undefined || value === null) return undefined;
  const list = Array.isArray(value) ? value : [value];
  for (const v of list) {
    if (!Number.isInteger(v) || (v as number) < 0) {
      throw new ModelError(
        'E_GENERATION_CONFIG',
        `${file}: ${field} must be a token id or a list of ids, got ${JSON.stringify(value)}`,
      );
    }
  }
  return list as number[];
}

function num(json: Json, file: string, field: string): number | undefined {
  const v = json[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new ModelError('E_GENERATION_CONFIG', `${file}: ${field} must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(json: Json, file: string, field: string): boolean | undefined {
  const v = json[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new ModelError('E_GENERATION_CONFIG', `${file}: ${field} must be true or false`);
  return v;
}

/** One file's view: ids and defaults, only the fields it sets. */
function readOne(json: Json, file: string): GenerationConfig & { hasEos: boolean } {
  const eos = ids(json.eos_token_id, file, 'eos_token_id');
  const bos = ids(json.bos_token_id, file, 'bos_token_id');
  const pad = ids(json.pad_token_id, file, 'pad_token_id');
  const d: GenerationDefaults = {
    temperature: num(json, file, 'temperature'),
    topP: num(json, file, 'top_p'),
    topK: num(json, file, 'top_k'),
    minP: num(json, file, 'min_p'),
    repetitionPenalty: num(json, file, 'repetition_penalty'),
    doSample: bool(json, file, 'do_sample'),
    maxNewTokens: num(json, file, 'max_new_tokens'),
  };
  return { eosTokenIds: eos ?? [], hasEos: eos !== undefined, bosTokenId: bos?.[0], padTokenId: pad?.[0], defaults: d };
}

function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** Both files of a folder, each parsed on its own (undefined where absent). */
function readBoth(dir: string) {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ModelError('E_MODEL_DIR', `${dir}: not a folder`);
  const genFile = path.join(dir, 'generation_config.json');
  const cfgFile = path.join(dir, 'config.json');
  const genJson = readJsonFile(genFile, true);
  let cfgJson = readJsonFile(cfgFile, true);
  if (cfgJson && cfgJson.eos_token_id === undefined && cfgJson.text_config && typeof cfgJson.text_config === 'object') {
    cfgJson = { ...(cfgJson.text_config as Json), ...cfgJson };
  }
  return { gen: genJson ? readOne(genJson, genFile) : undefined, cfg: cfgJson ? readOne(cfgJson, cfgFile) : undefined };
}

/** Reads generation_config.json and config.json from a model folder and merges them. */
export function readGenerationConfig(dir: string): GenerationConfig {
  const { gen, cfg } = readBoth(dir);
  // config.json's sampling fields are legacy; transformers reads them only without a generation_config.json.
  const defaults = dropUndefined({
    ...(gen ? {} : dropUndefined(cfg?.defaults ?? {})),
    ...dropUndefined(gen?.defaults ?? {}),
  });
  return dropUndefined({
    eosTokenIds: gen?.hasEos ? gen.eosTokenIds : (cfg?.eosTokenIds ?? []),
    bosTokenId: gen?.bosTokenId ?? cfg?.bosTokenId,
    padTokenId: gen?.padTokenId ?? cfg?.padTokenId,
    defaults,
  });
}

/**
 * Every id that should stop generation: the eos ids of generation_config.json, of config.json and
 * of the tokenizer (e.g. Llama-3-Instruct: <|end_of_text|> and <|eot_id|>), united. Order kept
 * (generation_config first), no repeats.
 */
export function eosIds(dir: string, tok?: { eosTokenIds: readonly number[] }): number[] {
  const { gen, cfg } = readBoth(dir);
  return [...new Set([...(gen?.eosTokenIds ?? []), ...(cfg?.eosTokenIds ?? []), ...(tok?.eosTokenIds ?? [])])];
}
