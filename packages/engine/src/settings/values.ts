/**
 * Setting values: checked against the table (a request's JSON value, or a flag's text), stated
 * as one rule per setting in every message ("gumbel_tau must be in [1e-3, 1e3], got 1e-300"), and
 * carried between the three shapes they take: table values by name, a GenerateRequest's fields
 * (by each setting's path) and a server request's fields.
 */
import { describeRange, inRange, UsageError, type SamplingParams } from '@moi/core';
import type { MixOptions } from '@moi/moi';
import { SETTINGS, type Setting, type SettingValue, type SettingValues } from './table.ts';

// ---- the rule of a setting, and its error

/** The rule a setting's values follow, as messages and help state it. */
export function ruleOf(s: Setting): string {
  const meaning = s.meaning ? ` (${s.meaning})` : '';
  switch (s.type) {
    case 'number':
      return describeRange(s.range) + meaning;
    case 'int':
      return describeRange(s.range, true) + meaning;
    case 'count':
      return `${describeRange(s.range, true)} or 'all'${meaning}`;
    case 'enum':
      return `one of ${s.choices.join(', ')}`;
    case 'text':
      return 'a non-empty string';
    case 'texts':
      return `a string or a list of at most ${s.maxItems} strings`;
    case 'flag':
      return 'true or false';
  }
}

/**
 * `label` must be <rule>, got <value>: a UsageError (E_SETTING) whose field is the setting's
 * request path. `typed`: the value as the person typed it (a flag's text), shown as is.
 */
export function settingError(s: Setting, label: string, got: unknown, typed?: string): UsageError {
  const shown =
    typed ??
    (typeof got === 'number'
      ? String(got)
      : typeof got === 'string'
        ? `'${got}'`
        : (JSON.stringify(got) ?? String(got)));
  return new UsageError('E_SETTING', `${label} must be ${ruleOf(s)}, got ${shown}`, { field: s.path });
}

// ---- checking and parsing

/**
 * A value from a request (JSON): the setting's value, normalized (a count of 0 is 'all', one
 * stop string is a list), or a UsageError naming `label`.
 */
export function checkSettingValue(s: Setting, v: unknown, label: string = s.name): SettingValue {
  const fail = () => settingError(s, label, v);
  switch (s.type) {
    case 'number':
      if (!inRange(v, s.range)) throw fail();
      return v;
    case 'int':
      if (!inRange(v, s.range, true)) throw fail();
      return v;
    case 'count':
      if (v === 'all') return 'all';
      if (!inRange(v, s.range, true)) throw fail();
      return v === 0 ? 'all' : v;
    case 'enum':
      if (typeof v !== 'string' || !s.choices.includes(v)) throw fail();
      return v;
    case 'text':
      if (typeof v !== 'string' || v === '') throw fail();
      return v;
    case 'texts': {
      const list = typeof v === 'string' ? [v] : v;
      if (!Array.isArray(list) || list.length > s.maxItems || !list.every((x) => typeof x === 'string')) throw fail();
      return list.slice() as string[];
    }
    case 'flag':
      if (typeof v !== 'boolean') throw fail();
      return v;
  }
}

/** A value typed on the command line (one occurrence of the flag; a repeatable one is collected by the caller). */
export function parseSettingText(s: Setting, text: string, label: string): SettingValue {
  const number = () => (text.trim() === '' ? NaN : Number(text));
  const checked = (v: unknown) => {
    try {
      return checkSettingValue(s, v, label);
    } catch {
      throw settingError(s, label, v, text);
    }
  };
  switch (s.type) {
    case 'number':
    case 'int':
      return checked(number());
    case 'count':
      return checked(text.trim().toLowerCase() === 'all' ? 'all' : number());
    case 'texts':
      return [text];
    case 'flag':
      return true;
    default:
      return checked(text);
  }
}

// ---- table values ⇄ a request's fields

/** What table values set in a GenerateRequest. */
export interface RequestSettings {
  sampling?: Partial<SamplingParams>;
  mix?: MixOptions;
  maxTokens?: number;
  stop?: string[];
  ignoreEos?: boolean;
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let at = target;
  for (const k of keys.slice(0, -1)) {
    if (typeof at[k] !== 'object' || at[k] === null) at[k] = {};
    at = at[k] as Record<string, unknown>;
  }
  at[keys[keys.length - 1]] = value;
}

function getPath(source: unknown, path: string): unknown {
  let at = source;
  for (const k of path.split('.')) {
    if (typeof at !== 'object' || at === null) return undefined;
    at = (at as Record<string, unknown>)[k];
  }
  return at;
}

/** The request fields the given values set, each at its setting's path (top-k's -1 becomes 0, off). */
export function requestFromSettings(values: SettingValues): RequestSettings {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    let v: unknown = values[s.name];
    if (v === undefined) continue;
    if (s.type === 'int' && 'minusOneIsOff' in s && s.minusOneIsOff && v === -1) v = 0;
    if (Array.isArray(v)) v = v.slice();
    setPath(out, s.path, v);
  }
  return out as RequestSettings;
}

/** The table values a request's fields hold (the inverse of requestFromSettings). */
export function settingsFromRequest(request: RequestSettings): SettingValues {
  const out: Record<string, SettingValue> = {};
  for (const s of SETTINGS) {
    const v = getPath(request, s.path);
    if (v !== undefined && v !== null) out[s.name] = v as SettingValue;
  }
  return out as SettingValues;
}

export type Endpoint = 'completions' | 'chat';

/** A server request's fields for the given values (as eval's endpoint client sends them). */
export function fieldsFromSettings(values: SettingValues, endpoint: Endpoint): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    const v = values[s.name];
    if (v === undefined || !s.server) continue;
    out[s.server[endpoint][0]] = v;
  }
  return out;
}

/**
 * The table values of a server request (already checked by the schema made from the table):
 * the first of a setting's fields that is given (not null) wins.
 */
export function settingsFromFields(body: Record<string, unknown>, endpoint: Endpoint): SettingValues {
  const out: Record<string, SettingValue> = {};
  for (const s of SETTINGS) {
    if (!s.server) continue;
    for (const field of s.server[endpoint]) {
      const v = body[field];
      if (v !== undefined && v !== null) {
        out[s.name] = v as SettingValue;
        break;
      }
    }
  }
  return out as SettingValues;
}

/** The server field of a request path (an error's `field`), for a 400's `param`. */
export function serverFieldOf(path: string | undefined, endpoint: Endpoint): string | null {
  if (path === undefined) return null;
  const s = SETTINGS.find((x) => x.path === path);
  return s?.server ? s.server[endpoint][0] : null;
}
