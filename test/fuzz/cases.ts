/**
 * A seeded generator of mutated model folders. Case i of seed s is always the same folder: one
 * of the shared tiny fixtures (every family), then one mutation of one kind:
 * - safetensors bytes: header lies (length, JSON, entries, offsets, dtypes, shapes), truncation,
 *   trailing bytes, bit flips in the header or the data, NaN/Inf/huge weights;
 * - valid re-encodings (F16, BF16, F64) and shape changes the config then disagrees with;
 * - config.json: every size, count, rope, norm and window field set to a bad or extreme value
 *   (negative, zero, fractional, huge, 2^32, wrong type), model_type swaps, gemma3 text_config;
 * - sharded layouts whose index names files outside the folder ('.', '..', '../x', '/abs', ...);
 * - special files: a directory, FIFO, socket, dangling or looping symlink named model.safetensors
 *   (or config.json, or the index).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const BASES = [
  'llama',
  'llama_tied',
  'llama_rope3',
  'qwen2',
  'qwen3',
  'gemma',
  'gemma2',
  'gemma3_text',
  'gemma3_text_ropescale',
  'stories260K',
];

/** mulberry32: a small seeded generator. */
export function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}
type Rng = ReturnType<typeof rng>;

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}
interface Parsed {
  header: Record<string, unknown>;
  data: Buffer;
}

function parse(file: string): Parsed {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')), data: buf.subarray(8 + n) };
}

function serialize(header: unknown, data: Buffer, lenOverride?: bigint, rawHeader?: Buffer): Buffer {
  let h = rawHeader ?? Buffer.from(JSON.stringify(header), 'utf8');
  if (!rawHeader) h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

const entries = (p: Parsed) => Object.entries(p.header).filter(([k]) => k !== '__metadata__') as [string, Entry][];

/** A float32 tensor's data region (all fixtures are F32). */
function region(p: Parsed, name: string): [number, number] {
  return (p.header[name] as Entry).data_offsets;
}

/** Re-encode every F32 tensor as `dtype` (valid files; values rounded). */
function reencode(p: Parsed, dtype: 'F16' | 'BF16' | 'F64'): Parsed {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const parts: Buffer[] = [];
  let off = 0;
  for (const [name, e] of entries(p).sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0])) {
    const src = new Float32Array(
      p.data.buffer.slice(p.data.byteOffset + e.data_offsets[0], p.data.byteOffset + e.data_offsets[1]),
    );
    let out: Buffer;
    if (dtype === 'F64') out = Buffer.from(Float64Array.from(src).buffer);
    else {
      const u = new Uint16Array(src.length);
      const f = new Float32Array(1);
      const bits = new Uint32Array(f.buffer);
      for (let i = 0; i < src.length; i++) {
        f[0] = src[i];
        if (dtype === 'BF16') u[i] = (bits[0] + 0x7fff + ((bits[0] >>> 16) & 1)) >>> 16;
        else u[i] = toHalf(src[i]);
      }
      out = Buffer.from(u.buffer);
    }
    header[name] = { dtype, shape: e.shape, data_offsets: [off, off + out.length] };
    parts.push(out);
    off += out.length;
  }
  return { header, data: Buffer.concat(parts) };
}

function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  const mant = x & 0x7fffff;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) return sign;
  return sign | (exp << 10) | (mant >>> 13);
}

// ---- config mutations

const CONFIG_FIELDS = [
  'vocab_size',
  'hidden_size',
  'intermediate_size',
  'num_hidden_layers',
  'num_attention_heads',
  'num_key_value_heads',
  'head_dim',
  'max_position_embeddings',
  'rms_norm_eps',
  'rope_theta',
  'partial_rotary_factor',
  'sliding_window',
  'query_pre_attn_scalar',
  'attn_logit_softcapping',
  'final_logit_softcapping',
  'sliding_window_pattern',
  'rope_local_base_freq',
  'max_window_layers',
  'use_sliding_window',
  'tie_word_embeddings',
  'hidden_act',
  'hidden_activation',
  'attention_bias',
  'mlp_bias',
  'layer_types',
  'rope_scaling',
  'model_type',
];

const BAD_VALUES: unknown[] = [
  -1,
  0,
  0.5,
  1.5,
  2,
  3,
  7,
  1e-30,
  1e-300,
  1e30,
  1e300,
  1000000000,
  4294967296,
  2 ** 53,
  -1e9,
  1024,
  65536,
  4194305,
  '4',
  '',
  'NaN',
  null,
  true,
  false,
  [],
  [1, 2],
  {},
  { a: 1 },
];

function mutateConfig(r: Rng, cfg: Record<string, unknown>): string {
  const kind = r.int(10);
  if (kind === 0) {
    const field = r.pick(CONFIG_FIELDS);
    delete cfg[field];
    return `config: delete ${field}`;
  }
  if (kind === 1) {
    cfg.model_type = r.pick([
      'llama',
      'mistral',
      'qwen2',
      'qwen3',
      'gemma',
      'gemma2',
      'gemma3_text',
      'gemma3',
      'mamba',
      '',
      7,
    ]);
    return `config: model_type ${JSON.stringify(cfg.model_type)}`;
  }
  if (kind === 2) {
    // the whole config as gemma3's text_config, one field of it mutated
    const text: Record<string, unknown> = { ...cfg };
    const field = r.pick(CONFIG_FIELDS);
    text[field] = r.pick(BAD_VALUES);
    for (const k of Object.keys(cfg)) delete cfg[k];
    Object.assign(cfg, { model_type: 'gemma3', text_config: text });
    return `config: gemma3 text_config.${field} = ${JSON.stringify(text[field])}`;
  }
  if (kind === 3) {
    const factor = r.pick([-1, 0, 1e-30, 0.5, 2, 8, 1e30, 'x', null]);
    const scaling: Record<string, unknown> = {
      rope_type: r.pick(['linear', 'dynamic', 'llama3', 'yarn', 'default', 3, 'longrope']),
      factor,
    };
    if (r.int(2))
      Object.assign(scaling, {
        low_freq_factor: r.pick([1, 0, -1, 4]),
        high_freq_factor: r.pick([4, 1, 0, -2]),
        original_max_position_embeddings: r.pick([8192, 0, -1, 1.5, 16]),
      });
    cfg.rope_scaling = scaling;
    return `config: rope_scaling ${JSON.stringify(scaling)}`;
  }
  if (kind === 4) {
    const layers = Number(cfg.num_hidden_layers) || 4;
    cfg.layer_types = r.pick([
      Array.from({ length: layers }, (_, i) => (i % 2 ? 'full_attention' : 'sliding_attention')),
      Array.from({ length: layers + 1 }, () => 'full_attention'),
      ['weird'],
      'full_attention',
      Array.from({ length: 100_000 }, () => 'full_attention'),
    ]);
    return 'config: layer_types';
  }
  // a field set to a bad or extreme value (kinds 5..9: the common case)
  const field = r.pick(CONFIG_FIELDS);
  cfg[field] = r.pick(BAD_VALUES);
  return `config: ${field} = ${JSON.stringify(cfg[field])}`;
}

// ---- safetensors mutations

function mutateWeights(r: Rng, file: string): string {
  const p = parse(file);
  const names = entries(p).map(([n]) => n);
  const name = r.pick(names);
  const e = p.header[name] as Entry;
  const kind = r.int(16);
  switch (kind) {
    case 0: {
      // header length lies
      const raw = fs.readFileSync(file);
      const n = raw.readBigUInt64LE(0);
      const lie = r.pick([0n, 1n, n - 1n, n + 1n, n + 8n, 2n ** 63n, 100_000_001n, BigInt(raw.length)]);
      raw.writeBigUInt64LE(lie < 0n ? 0n : lie);
      fs.writeFileSync(file, raw);
      return `weights: header length ${lie}`;
    }
    case 1: {
      // header JSON broken or not UTF-8
      const text = Buffer.from(JSON.stringify(p.header), 'utf8');
      const at = r.int(text.length);
      const bad = Buffer.from(text);
      bad[at] = r.pick([0x00, 0xff, 0x7b, 0x22, 0x5d, 0xc3]);
      fs.writeFileSync(file, serialize(null, p.data, undefined, bad));
      return `weights: header byte ${at} changed`;
    }
    case 2: {
      // shape lies (offsets unchanged)
      const shape = e.shape.slice();
      const how = r.int(5);
      if (how === 0 && shape.length) shape[r.int(shape.length)] += r.pick([-1, 1, 1000]);
      else if (how === 1) shape.reverse();
      else if (how === 2) shape.push(1);
      else if (how === 3) shape.splice(0, 1);
      else shape[0] = r.pick([-1, 1.5, 2 ** 53, 1e20]);
      e.shape = shape;
      fs.writeFileSync(file, serialize(p.header, p.data));
      return `weights: ${name} shape ${JSON.stringify(shape)}`;
    }
    case 3: {
      // dtype lies
      e.dtype = r.pick([
        'F16',
        'BF16',
        'F64',
        'I32',
        'I64',
        'U8',
        'BOOL',
        'F8_E4M3',
        'Q4',
        'f32',
        7,
      ] as unknown as string[]);
      fs.writeFileSync(file, serialize(p.header, p.data));
      return `weights: ${name} dtype ${JSON.stringify(e.dtype)}`;
    }
    case 4: {
      // offsets lie
      const [b, en] = e.data_offsets;
      const how = r.int(6);
      e.data_offsets =
        how === 0
          ? [b + 4, en + 4]
          : how === 1
            ? [en, b]
            : how === 2
              ? [b, en + 4]
              : how === 3
                ? [0, en - b]
                : how === 4
                  ? [b, p.data.length * 2]
                  : ([b, -1] as unknown as [number, number]);
      fs.writeFileSync(file, serialize(p.header, p.data));
      return `weights: ${name} offsets ${JSON.stringify(e.data_offsets)}`;
    }
    case 5: {
      // an entry removed, added or duplicated under another name
      const how = r.int(3);
      if (how === 0) delete p.header[name];
      else if (how === 1) p.header['model.extra.weight'] = { ...e };
      else p.header[name] = r.pick([null, 7, 'x', [], { dtype: 'F32' }]);
      fs.writeFileSync(file, serialize(p.header, p.data));
      return `weights: entry ${name} ${['removed', 'duplicated', 'replaced'][how]}`;
    }
    case 6: {
      // __metadata__ of the wrong type
      p.header.__metadata__ = r.pick([7, 'x', { format: 3 }, [], null]);
      fs.writeFileSync(file, serialize(p.header, p.data));
      return 'weights: __metadata__';
    }
    case 7: {
      // truncated
      const raw = fs.readFileSync(file);
      const at = r.pick([0, 4, 8, 16, r.int(raw.length), raw.length - 1, raw.length - 4]);
      fs.writeFileSync(file, raw.subarray(0, at));
      return `weights: truncated at ${at}`;
    }
    case 8: {
      // trailing bytes
      fs.appendFileSync(file, Buffer.alloc(r.pick([1, 4, 1000]), 0x41));
      return 'weights: trailing bytes';
    }
    case 9:
    case 10: {
      // bit flips anywhere
      const raw = fs.readFileSync(file);
      const flips = 1 + r.int(8);
      for (let i = 0; i < flips; i++) {
        const at = r.int(2) ? r.int(Math.min(raw.length, 8 + Number(raw.readBigUInt64LE(0)))) : r.int(raw.length);
        raw[at] ^= 1 << r.int(8);
      }
      fs.writeFileSync(file, raw);
      return `weights: ${flips} bit flips`;
    }
    case 11:
    case 12: {
      // NaN / Inf / huge weights
      const [b, en] = region(p, name);
      const n = (en - b) / 4;
      const v = r.pick([Number.NaN, Infinity, -Infinity, 3e38, -3e38, 1e30]);
      const count = r.pick([1, 1, 2, n]);
      const raw = fs.readFileSync(file);
      const base = raw.length - p.data.length + b;
      for (let i = 0; i < count; i++) raw.writeFloatLE(v, base + 4 * (count === n ? i : r.int(n)));
      fs.writeFileSync(file, raw);
      return `weights: ${name} ${count} × ${v}`;
    }
    case 13: {
      // a valid re-encoding
      const dtype = r.pick(['F16', 'BF16', 'F64'] as const);
      const q = reencode(p, dtype);
      fs.writeFileSync(file, serialize(q.header, q.data));
      return `weights: re-encoded as ${dtype}`;
    }
    case 14: {
      // a consistent shape change: the file is valid, the config disagrees
      const [b, en] = e.data_offsets;
      const n = (en - b) / 4;
      e.shape = r.pick([[n], [1, n], [n, 1]]);
      fs.writeFileSync(file, serialize(p.header, p.data));
      return `weights: ${name} reshaped to ${JSON.stringify(e.shape)}`;
    }
    default: {
      // a tensor's data swapped for zeros (valid file, finite logits)
      const [b, en] = region(p, name);
      p.data.fill(0, b, en);
      fs.writeFileSync(file, serialize(p.header, p.data));
      return `weights: ${name} zeroed`;
    }
  }
}

// ---- sharded layouts and the index

function mutateIndex(r: Rng, dir: string): string {
  const file = path.join(dir, 'model.safetensors');
  const p = parse(file);
  const names = entries(p).map(([n]) => n);
  // two valid shards
  const half = Math.ceil(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap: Record<string, unknown> = {};
  shards.forEach((group, i) => {
    const shard = `model-0000${i + 1}-of-00002.safetensors`;
    const header: Record<string, unknown> = {};
    const parts: Buffer[] = [];
    let off = 0;
    for (const n of group) {
      const e = p.header[n] as Entry;
      const bytes = p.data.subarray(e.data_offsets[0], e.data_offsets[1]);
      header[n] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + bytes.length] };
      parts.push(bytes);
      off += bytes.length;
      weightMap[n] = shard;
    }
    fs.writeFileSync(path.join(dir, shard), serialize(header, Buffer.concat(parts)));
  });
  fs.rmSync(file);
  const victim = r.pick(names);
  const bad = r.pick([
    '.',
    '..',
    '../model-00001-of-00002.safetensors',
    '/etc/passwd',
    'sub/x.safetensors',
    '',
    7,
    null,
    'missing.safetensors',
    'model-00002-of-00002.safetensors',
    'model-00001-of-00002.safetensors',
    '..\\x',
    'a\u0000b',
  ]);
  const how = r.int(4);
  let index: unknown = { metadata: {}, weight_map: weightMap };
  if (how < 3) weightMap[victim] = bad;
  else index = r.pick([{}, { weight_map: [] }, { weight_map: {} }, [], 'x']);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  return how < 3 ? `index: ${victim} → ${JSON.stringify(bad)}` : `index: ${JSON.stringify(index)}`;
}

// ---- special files

/** Cleanups to run after the case (a listening socket). */
export type Cleanup = () => Promise<void>;

async function specialFile(r: Rng, dir: string): Promise<{ what: string; cleanup?: Cleanup }> {
  const target = r.pick(['model.safetensors', 'model.safetensors', 'config.json', 'model.safetensors.index.json']);
  const file = path.join(dir, target);
  fs.rmSync(file, { force: true });
  // a special index stands in for the weights: the single file must not be there to win
  if (target === 'model.safetensors.index.json') fs.rmSync(path.join(dir, 'model.safetensors'), { force: true });
  const kind = r.pick(['directory', 'fifo', 'socket', 'dangling symlink', 'symlink loop']);
  if (kind === 'directory') fs.mkdirSync(file);
  else if (kind === 'fifo') {
    if (spawnSync('mkfifo', [file]).status !== 0) fs.mkdirSync(file);
  } else if (kind === 'socket') {
    const server = net.createServer();
    await new Promise<void>((res, rej) => server.once('error', rej).listen(file, () => res()));
    return { what: `special: ${target} is a socket`, cleanup: () => new Promise((res) => server.close(() => res())) };
  } else if (kind === 'dangling symlink') fs.symlinkSync(path.join(dir, 'nowhere'), file);
  else fs.symlinkSync(file, file);
  return { what: `special: ${target} is a ${kind}` };
}

/**
 * Write case `index` of `seed` into `dir` (created empty) from the fixtures in `fixtures`.
 * Returns what was done (for reports) and a cleanup for resources the case holds.
 */
export async function makeCase(
  seed: number,
  index: number,
  fixtures: string,
  dir: string,
): Promise<{ base: string; what: string; cleanup?: Cleanup }> {
  const r = rng((seed * 1_000_003 + index * 7919) >>> 0);
  const base = r.pick(BASES);
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(fixtures, base, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const cfg = JSON.parse(fs.readFileSync(path.join(fixtures, base, 'config.json'), 'utf8')) as Record<string, unknown>;
  const group = r.int(20);
  let what: string;
  let cleanup: Cleanup | undefined;
  if (group < 8) what = mutateConfig(r, cfg);
  else if (group < 17) what = mutateWeights(r, path.join(dir, 'model.safetensors'));
  else if (group < 19) what = mutateIndex(r, dir);
  else {
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    ({ what, cleanup } = await specialFile(r, dir));
    return { base, what, cleanup };
  }
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  return { base, what, cleanup };
}
