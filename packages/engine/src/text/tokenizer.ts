/**
 * Tokenizer: a thin layer over @huggingface/tokenizers (pure JS) that reads a model folder the way
 * transformers does (tokenizer.json + tokenizer_config.json + special_tokens_map.json +
 * added_tokens.json + chat_template.jinja) and gives plain number[] in and out.
 *
 * What it adds on top of the library:
 * - `add_bos_token` / `add_eos_token` from tokenizer_config win over what tokenizer.json's
 *   post-processor does (as in transformers), without ever doubling BOS;
 * - decode that tolerates empty lists and unknown ids, with our own special-token set and
 *   `clean_up_tokenization_spaces` taken from the config (false where the config is silent);
 * - typed errors that name the file at fault.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ModelError, UsageError } from '@moi/core';

export interface EncodeOptions {
  /** Add BOS/EOS as the model expects (tokenizer_config flags, else the post-processor). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (added tokens marked special, and the bos/eos/pad/unk tokens). Default false. */
  skipSpecialTokens?: boolean;
  /** Apply transformers' clean_up_tokenization (" ." -> "." ...). Default: the config's flag. */
  cleanUpSpaces?: boolean;
}

type Json = Record<string, unknown>;

/** A JSON object file, or undefined where `optional` and absent. Errors name the file. */
export function readJsonFile(file: string, optional: boolean): Json | undefined {
  if (!existsSync(file)) {
    if (optional) return undefined;
    throw new ModelError('E_FILE_MISSING', `${file}: not found`);
  }
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ModelError('E_FILE_INVALID', `${file}: invalid JSON (${(e as Error).message})`, { cause: e });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ModelError('E_FILE_INVALID', `${file}: expected a JSON object`);
  }
  return value as Json;
}

/** A special-token entry of a config: a plain string, or an AddedToken object {content}. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return undefined;
}

/** transformers' clean_up_tokenization: removes the space before punctuation and contractions. */
export function cleanUpTokenizationSpaces(text: string): string {
  return text
    .replaceAll(' .', '.')
    .replaceAll(' ?', '?')
    .replaceAll(' !', '!')
    .replaceAll(' ,', ',')
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
  single_word?: boolean;
}

/** Where a Tokenizer's data came from, for error messages and the chat template. */
export interface TokenizerSources {
  /** Folder or file name used in messages. */
  source?: string;
  /** Parsed special_tokens_map.json (overrides the config's token strings, as transformers does). */
  specialTokensMap?: Json;
  /** Parsed added_tokens.json ({content: id}). */
  addedTokens?: Json;
  /** Text of chat_template.jinja (preferred over the config's chat_template). */
  chatTemplateFile?: string;
  /** File the chat template comes from, for messages. */
  chatTemplateOrigin?: string;
}

export class Tokenizer {
  /** Folder or file the tokenizer was read from (for messages). */
  readonly source: string;
  /** Number of ids the vocabulary covers (max id + 1, added tokens included). */
  readonly vocabSize: number;
  readonly bosToken?: string;
  readonly bosTokenId?: number;
  readonly eosToken?: string;
  /** EOS ids from tokenizer_config's eos_token (see eosIds() in generation-config for the union). */
  readonly eosTokenIds: number[];
  readonly padToken?: string;
  readonly padTokenId?: number;
  readonly unkToken?: string;
  /** Ids decode({skipSpecialTokens}) drops. */
  readonly specialTokenIds: Set<number>;
  /** The default chat template, where the model has one. */
  readonly chatTemplate?: string;
  /** Named templates where the config gives a list of {name, template}. */
  readonly chatTemplates: Record<string, string>;
  /** File the chat template comes from (for messages). */
  readonly chatTemplateOrigin?: string;
  /** transformers' clean_up_tokenization_spaces (false where the config is silent). */
  readonly cleanUpSpaces: boolean;
  /** The merged tokenizer_config (special_tokens_map applied). */
  readonly config: Json;
  /** Whether encode() with special tokens starts with BOS. */
  readonly addsBos: boolean;

  private readonly hf: HfTokenizer;
  /** +1: prepend BOS the post-processor leaves out; -1: drop the BOS it adds; 0: as is. */
  private readonly bosFix: -1 | 0 | 1;
  private readonly eosFix: -1 | 0 | 1;

  /** Builds from parsed tokenizer.json and tokenizer_config.json objects (see loadTokenizer). */
  constructor(tokenizerJson: Json, tokenizerConfig: Json = {}, sources: TokenizerSources = {}) {
    this.source = sources.source ?? 'tokenizer.json';
    const config: Json = { ...tokenizerConfig };
    for (const [k, v] of Object.entries(sources.specialTokensMap ?? {})) if (v != null) config[k] = v;
    this.config = config;

    const json: Json = { ...tokenizerJson, added_tokens: mergeAddedTokens(tokenizerJson, config, sources.addedTokens) };
    try {
      this.hf = new HfTokenizer(json, config);
    } catch (e) {
      throw new ModelError('E_TOKENIZER_INVALID', `${this.source}: cannot build tokenizer (${(e as Error).message})`, {
        cause: e,
      });
    }
    const vocab = this.hf.model?.vocab;
    if (!vocab || vocab.length === 0) throw new ModelError('E_TOKENIZER_INVALID', `${this.source}: empty vocabulary`);
    this.vocabSize = vocab.length;

    const idOf = (t: string | undefined) => (t === undefined ? undefined : this.hf.token_to_id(t));
    this.bosToken = tokenString(config.bos_token);
    this.bosTokenId = idOf(this.bosToken);
    this.eosToken = tokenString(config.eos_token);
    const eosId = idOf(this.eosToken);
    this.eosTokenIds = eosId === undefined ? [] : [eosId];
    this.padToken = tokenString(config.pad_token);
    this.padTokenId = idOf(this.padToken);
    this.unkToken = tokenString(config.unk_token);

    this.specialTokenIds = new Set<number>();
    for (const t of json.added_tokens as AddedTokenJson[]) if (t.special) this.specialTokenIds.add(t.id);
    const extra = Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : [];
    for (const t of [this.bosToken, this.eosToken, this.padToken, this.unkToken, ...extra.map(tokenString)]) {
      const id = idOf(t);
      if (id !== undefined) this.specialTokenIds.add(id);
    }

    this.cleanUpSpaces = config.clean_up_tokenization_spaces === true;
    const { template, named } = pickChatTemplates(config.chat_template, sources.chatTemplateFile);
    this.chatTemplate = template;
    this.chatTemplates = named;
    this.chatTemplateOrigin = sources.chatTemplateOrigin;

    // What does the post-processor add? Probe once, then let the config's flags decide.
    const plain = this.hf.encode('a', { add_special_tokens: false }).ids;
    const full = this.hf.encode('a', { add_special_tokens: true }).ids;
    const postBos = this.bosTokenId !== undefined && full.length > plain.length && full[0] === this.bosTokenId;
    const postEos = eosId !== undefined && full.length > plain.length && full[full.length - 1] === eosId;
    const wantBos = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : postBos;
    const wantEos = typeof config.add_eos_token === 'boolean' ? config.add_eos_token : postEos;
    this.bosFix = this.bosTokenId === undefined || wantBos === postBos ? 0 : wantBos ? 1 : -1;
    this.eosFix = eosId === undefined || wantEos === postEos ? 0 : wantEos ? 1 : -1;
    this.addsBos = this.bosTokenId !== undefined && this.encode('')[0] === this.bosTokenId;
  }

  /** Text to ids. Special-token strings in the text (e.g. "<|im_start|>") become their single id. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new UsageError('E_ENCODE', `encode: expected a string, got ${typeof text}`);
    const add = opts.addSpecialTokens ?? true;
    const ids = this.hf.encode(text, { add_special_tokens: add }).ids;
    if (!add) return ids;
    if (this.bosFix === 1) ids.unshift(this.bosTokenId!);
    else if (this.bosFix === -1 && ids[0] === this.bosTokenId) ids.shift();
    const eos = this.eosTokenIds[0];
    if (this.eosFix === 1) ids.push(eos);
    else if (this.eosFix === -1 && ids[ids.length - 1] === eos) ids.pop();
    return ids;
  }

  /**
   * Ids to text. Ids with no token (e.g. padding rows of a larger embedding) are skipped, as the
   * Rust tokenizers library does; an empty list gives "".
   */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const keep: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0) throw new UsageError('E_TOKEN_ID', `decode: invalid token id ${id}`);
      if (opts.skipSpecialTokens && this.specialTokenIds.has(id)) continue;
      if (id < this.vocabSize && this.hf.id_to_token(id) !== undefined) keep.push(id);
    }
    if (keep.length === 0) return '';
    const text = this.hf.decode(keep, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    return (opts.cleanUpSpaces ?? this.cleanUpSpaces) ? cleanUpTokenizationSpaces(text) : text;
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }
}

/**
 * tokenizer.json's added tokens plus those only listed in tokenizer_config's
 * added_tokens_decoder or in added_tokens.json (older exports), as transformers merges them.
 */
function mergeAddedTokens(json: Json, config: Json, addedJson: Json | undefined): AddedTokenJson[] {
  const list = Array.isArray(json.added_tokens) ? [...(json.added_tokens as AddedTokenJson[])] : [];
  const known = new Set(list.map((t) => t.id));
  const decoder = (config.added_tokens_decoder ?? {}) as Record<string, Json>;
  for (const [key, t] of Object.entries(decoder)) {
    const id = Number(key);
    if (known.has(id) || !Number.isInteger(id) || typeof t?.content !== 'string') continue;
    const special = t.special === true;
    list.push({
      id,
      content: t.content,
      special,
      lstrip: t.lstrip === true,
      rstrip: t.rstrip === true,
      normalized: typeof t.normalized === 'boolean' ? t.normalized : !special,
    });
    known.add(id);
  }
  for (const [content, id] of Object.entries(addedJson ?? {})) {
    if (typeof id !== 'number' || known.has(id)) continue;
    list.push({ id, content, special: false, normalized: true });
    known.add(id);
  }
  return list;
}

/** The config's chat_template (string, or list of {name, template}); a .jinja file wins. */
function pickChatTemplates(
  value: unknown,
  file: string | undefined,
): { template?: string; named: Record<string, string> } {
  const named: Record<string, string> = {};
  if (Array.isArray(value)) {
    for (const t of value)
      if (t && typeof t.name === 'string' && typeof t.template === 'string') named[t.name] = t.template;
  } else if (typeof value === 'string') {
    named.default = value;
  }
  if (file !== undefined) named.default = file;
  return { template: named.default, named };
}

/**
 * Reads a tokenizer from a model folder: tokenizer.json (required), tokenizer_config.json,
 * special_tokens_map.json, added_tokens.json and chat_template.jinja where present.
 */
export function loadTokenizer(dir: string): Tokenizer {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new ModelError('E_MODEL_DIR', `${dir}: not a folder`);
  }
  const file = path.join(dir, 'tokenizer.json');
  let tokenizerJson: Json;
  try {
    tokenizerJson = readJsonFile(file, false)!;
  } catch (e) {
    if (e instanceof ModelError && e.code === 'E_FILE_MISSING') {
      throw new ModelError('E_TOKENIZER_MISSING', `${file}: not found (this loader needs a tokenizer.json)`);
    }
    throw new ModelError('E_TOKENIZER_INVALID', (e as Error).message, { cause: e });
  }
  if (!tokenizerJson.model || typeof tokenizerJson.model !== 'object') {
    throw new ModelError('E_TOKENIZER_INVALID', `${file}: no "model" section`);
  }
  const config = readJsonFile(path.join(dir, 'tokenizer_config.json'), true) ?? {};
  const jinja = path.join(dir, 'chat_template.jinja');
  const hasJinja = existsSync(jinja);
  return new Tokenizer(tokenizerJson, config, {
    source: file,
    specialTokensMap: readJsonFile(path.join(dir, 'special_tokens_map.json'), true),
    addedTokens: readJsonFile(path.join(dir, 'added_tokens.json'), true),
    chatTemplateFile: hasJinja ? readFileSync(jinja, 'utf8') : undefined,
    chatTemplateOrigin: hasJinja ? jinja : path.join(dir, 'tokenizer_config.json'),
  });
}
