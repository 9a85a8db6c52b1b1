/**
 * Safetensors reader and writer.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then the data
 * buffer; offsets are relative to the start of the data buffer.
 *
 * The reader validates the whole header (as strictly as Hugging Face's own loader) when a file
 * is opened, keeps the fd open, and reads one tensor at a time with a positioned read, so
 * multi-GB files are never read whole and offsets past 2 GB work. The writer streams tensors one
 * at a time and writes files Hugging Face's loader accepts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsError } from './errors.ts';
import { notRegularFile } from './paths.ts';
import { DTYPE_SIZE, isDType, numElements, bf16ToF32, f16ToF32, type DType } from './dtype.ts';

export * from './dtype.ts';

/** safetensors' own upper limit on the JSON header. */
export const MAX_HEADER_SIZE = 100_000_000;

/** Where one tensor lives. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  file: string;
  /** absolute byte offset in the file */
  offset: number;
  byteLength: number;
}

/** A tensor as a typed array of its natural element type (F16/BF16 come back as float32). */
export type TensorData = Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array;

/** One tensor to write: `data` holds exactly prod(shape) × dtype-size bytes (bf16/f16 as Uint16Array bits). */
export interface TensorInput {
  dtype: DType;
  shape: number[];
  data: ArrayBufferView;
}

const METADATA_KEY = '__metadata__';

/** Reads exactly `len` bytes at `position` into a fresh (hence aligned) buffer; loops over short reads. */
function preadExact(fd: number, len: number, position: number, file: string, tensor?: string): Uint8Array {
  const out = new Uint8Array(len);
  let done = 0;
  while (done < len) {
    const n = fs.readSync(fd, out, done, len - done, position + done);
    if (n === 0) {
      throw new SafetensorsError(
        'E_ST_TRUNCATED',
        file,
        `file ended after ${position + done} bytes while reading ${len} bytes at offset ${position}`,
        tensor,
      );
    }
    done += n;
  }
  return out;
}

/** Writes all of `bytes` at the fd's current position; loops over short writes. */
function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Checks one header entry and returns its dtype, shape and data-relative offsets. */
function parseEntry(
  file: string,
  name: string,
  raw: unknown,
): { dtype: DType; shape: number[]; begin: number; end: number } {
  if (!isPlainObject(raw)) throw new SafetensorsError('E_ST_ENTRY', file, 'header entry is not an object', name);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (dtype === undefined) throw new SafetensorsError('E_ST_ENTRY', file, 'header entry has no "dtype"', name);
  if (shape === undefined) throw new SafetensorsError('E_ST_ENTRY', file, 'header entry has no "shape"', name);
  if (offsets === undefined) throw new SafetensorsError('E_ST_ENTRY', file, 'header entry has no "data_offsets"', name);
  if (typeof dtype !== 'string')
    throw new SafetensorsError('E_ST_ENTRY', file, `"dtype" must be a string, got ${JSON.stringify(dtype)}`, name);
  if (!isDType(dtype)) {
    throw new SafetensorsError(
      'E_ST_DTYPE',
      file,
      `unsupported dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`,
      name,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
    throw new SafetensorsError(
      'E_ST_ENTRY',
      file,
      `"shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
      name,
    );
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
    throw new SafetensorsError(
      'E_ST_ENTRY',
      file,
      `"data_offsets" must be two non-negative integers, got ${JSON.stringify(offsets)}`,
      name,
    );
  }
  const [begin, end] = offsets as number[];
  if (begin > end)
    throw new SafetensorsError('E_ST_OFFSETS', file, `data_offsets [${begin}, ${end}] begin after they end`, name);
  const expected = numElements(shape) * DTYPE_SIZE[dtype];
  if (!Number.isSafeInteger(expected) || end - begin !== expected) {
    throw new SafetensorsError(
      'E_ST_SIZE',
      file,
      `data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${expected}`,
      name,
    );
  }
  return { dtype, shape: shape.slice(), begin, end };
}

/** One open .safetensors file: header parsed and validated, tensors read on demand. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Tensors in file order (by data offset). */
  readonly tensors: Map<string, TensorInfo>;
  private fd: number | null;

  private constructor(file: string, fd: number, metadata: Record<string, string>, tensors: Map<string, TensorInfo>) {
    this.path = file;
    this.fd = fd;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  /** Opens `file`, reads and validates its header (no tensor data is read). */
  static open(file: string): SafetensorsFile {
    const problem = notRegularFile(file);
    if (problem) throw new SafetensorsError('E_ST_OPEN', file, `cannot open: it ${problem}`);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw new SafetensorsError('E_ST_OPEN', file, `cannot open: ${(e as Error).message}`);
    }
    try {
      const { metadata, tensors } = readHeader(fd, file);
      return new SafetensorsFile(file, fd, metadata, tensors);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** The entry for `name`, or a E_ST_MISSING error naming it. */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError('E_ST_MISSING', this.path, 'no such tensor in this file', name);
    return info;
  }

  /** Raw bytes of one tensor (one positioned read into a fresh, aligned buffer). */
  readBytes(name: string): Uint8Array {
    const info = this.info(name);
    if (this.fd === null) throw new SafetensorsError('E_ST_CLOSED', this.path, 'file is closed', name);
    return preadExact(this.fd, info.byteLength, info.offset, this.path, name);
  }

  /**
   * Bytes [start, start + length) of one tensor's data (a positioned read into a fresh buffer):
   * a loader converting a large tensor a few rows at a time never holds the whole tensor.
   */
  readBytesRange(name: string, start: number, length: number): Uint8Array {
    const info = this.info(name);
    if (this.fd === null) throw new SafetensorsError('E_ST_CLOSED', this.path, 'file is closed', name);
    if (
      !Number.isSafeInteger(start) ||
      !Number.isSafeInteger(length) ||
      start < 0 ||
      length < 0 ||
      start + length > info.byteLength
    ) {
      throw new SafetensorsError(
        'E_ST_OFFSETS',
        this.path,
        `byte range [${start}, ${start + length}) is outside the tensor's ${info.byteLength} bytes`,
        name,
      );
    }
    return preadExact(this.fd, length, info.offset + start, this.path, name);
  }

  /** One tensor converted to float32 (ints and F64 are rounded to the nearest float32). */
  readFloat32(name: string): Float32Array {
    const { dtype } = this.info(name);
    const bytes = this.readBytes(name);
    return toFloat32(dtype, bytes);
  }

  /** One tensor as its natural typed array; F16 and BF16 are converted exactly to float32. */
  read(name: string): { dtype: DType; shape: number[]; data: TensorData } {
    const { dtype, shape } = this.info(name);
    const bytes = this.readBytes(name);
    return { dtype, shape: shape.slice(), data: naturalArray(dtype, bytes) };
  }

  /** Closes the fd; later reads throw E_ST_CLOSED. Safe to call twice. */
  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** Reads the header through `fd` and validates every entry, the layout and the file size. */
function readHeader(fd: number, file: string): { metadata: Record<string, string>; tensors: Map<string, TensorInfo> } {
  const size = fs.fstatSync(fd).size;
  if (size < 8)
    throw new SafetensorsError('E_ST_TRUNCATED', file, `file is ${size} bytes, shorter than the 8-byte header length`);
  const lenBytes = preadExact(fd, 8, 0, file);
  const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n64 === 0n || n64 > BigInt(MAX_HEADER_SIZE)) {
    throw new SafetensorsError(
      'E_ST_HEADER_SIZE',
      file,
      `header length ${n64} is outside 1..${MAX_HEADER_SIZE} (not a safetensors file?)`,
    );
  }
  const n = Number(n64);
  if (8 + n > size)
    throw new SafetensorsError('E_ST_TRUNCATED', file, `header declares ${n} bytes but the file is only ${size} bytes`);

  let header: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(preadExact(fd, n, 8, file));
    header = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError('E_ST_HEADER_JSON', file, `header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(header)) throw new SafetensorsError('E_ST_HEADER_JSON', file, 'header JSON is not an object');

  const metadata: Record<string, string> = {};
  const rawMeta = header[METADATA_KEY];
  if (rawMeta !== undefined && rawMeta !== null) {
    if (!isPlainObject(rawMeta)) throw new SafetensorsError('E_ST_METADATA', file, '"__metadata__" is not an object');
    for (const [k, v] of Object.entries(rawMeta)) {
      if (typeof v !== 'string')
        throw new SafetensorsError(
          'E_ST_METADATA',
          file,
          `"__metadata__" value for ${JSON.stringify(k)} is not a string`,
        );
      metadata[k] = v;
    }
  }

  const entries: Array<{ name: string; dtype: DType; shape: number[]; begin: number; end: number }> = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    entries.push({ name, ...parseEntry(file, name, raw) });
  }

  // Like Hugging Face's loader: sorted by offset, tensors tile the data buffer from 0 with no
  // hole, no overlap and nothing after the last one.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  const dataStart = 8 + n;
  const dataLen = size - dataStart;
  let prevEnd = 0;
  let prevName: string | null = null;
  for (const t of entries) {
    if (t.begin < prevEnd) {
      throw new SafetensorsError(
        'E_ST_OFFSETS',
        file,
        `data_offsets [${t.begin}, ${t.end}] overlap tensor ${JSON.stringify(prevName)} (which ends at ${prevEnd})`,
        t.name,
      );
    }
    if (t.begin > prevEnd) {
      const where =
        t.begin >= dataLen
          ? `lie past the end of the file (data buffer is ${dataLen} bytes)`
          : `leave a hole of ${t.begin - prevEnd} bytes`;
      throw new SafetensorsError(
        'E_ST_OFFSETS',
        file,
        `data_offsets [${t.begin}, ${t.end}] ${where} after ${prevName === null ? 'the start of the data buffer' : `tensor ${JSON.stringify(prevName)}`}`,
        t.name,
      );
    }
    prevEnd = t.end;
    prevName = t.name;
  }
  if (prevEnd > dataLen) {
    const cut = entries.find((t) => t.end > dataLen)!;
    throw new SafetensorsError(
      'E_ST_TRUNCATED',
      file,
      `header declares ${prevEnd} data bytes but the file holds ${dataLen} (tensor needs bytes [${cut.begin}, ${cut.end}])`,
      cut.name,
    );
  }
  if (prevEnd < dataLen) {
    throw new SafetensorsError(
      'E_ST_OFFSETS',
      file,
      `${dataLen - prevEnd} bytes after the last tensor are not covered by the header`,
    );
  }

  const tensors = new Map<string, TensorInfo>();
  for (const t of entries) {
    tensors.set(t.name, {
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      file,
      offset: dataStart + t.begin,
      byteLength: t.end - t.begin,
    });
  }
  return { metadata, tensors };
}

/** Views `bytes` (a fresh, aligned buffer) as the dtype's natural typed array. */
function naturalArray(dtype: DType, bytes: Uint8Array): TensorData {
  const { buffer, byteOffset, byteLength } = bytes;
  switch (dtype) {
    case 'F64':
      return new Float64Array(buffer, byteOffset, byteLength / 8);
    case 'F32':
      return new Float32Array(buffer, byteOffset, byteLength / 4);
    case 'F16':
      return f16ToF32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    case 'BF16':
      return bf16ToF32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    case 'I64':
      return new BigInt64Array(buffer, byteOffset, byteLength / 8);
    case 'I32':
      return new Int32Array(buffer, byteOffset, byteLength / 4);
    case 'I16':
      return new Int16Array(buffer, byteOffset, byteLength / 2);
    case 'I8':
      return new Int8Array(buffer, byteOffset, byteLength);
    case 'U8':
    case 'BOOL':
      return bytes;
  }
}

/** Converts raw tensor bytes of `dtype` (a fresh, aligned buffer, e.g. from readBytesRange) to float32. */
export function bytesToFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  return toFloat32(dtype, bytes);
}

/** Converts raw tensor bytes of `dtype` to float32. */
function toFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  const data = naturalArray(dtype, bytes);
  if (data instanceof Float32Array) return data;
  if (data instanceof BigInt64Array) {
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) out[i] = Number(data[i]);
    return out;
  }
  return Float32Array.from(data);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint: a model folder

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';

/**
 * A model folder's weights: `model.safetensors`, else `model.safetensors.index.json` with its
 * shards, else every `*.safetensors` in the folder (by file name).
 */
export class Checkpoint {
  readonly dir: string;
  readonly files: SafetensorsFile[];
  private readonly where: Map<string, SafetensorsFile>;

  private constructor(dir: string, files: SafetensorsFile[], where: Map<string, SafetensorsFile>) {
    this.dir = dir;
    this.files = files;
    this.where = where;
  }

  static open(dir: string): Checkpoint {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch (e) {
      throw new SafetensorsError('E_ST_NO_FILES', dir, `cannot read model folder: ${(e as Error).message}`);
    }
    const opened: SafetensorsFile[] = [];
    try {
      if (names.includes(SINGLE_FILE)) {
        const f = SafetensorsFile.open(path.join(dir, SINGLE_FILE));
        opened.push(f);
        return new Checkpoint(dir, opened, byName([f], dir));
      }
      if (names.includes(INDEX_FILE)) {
        const { files, where } = openIndexed(dir, opened);
        return new Checkpoint(dir, files, where);
      }
      const shards = names.filter((n) => n.endsWith('.safetensors')).sort();
      if (shards.length === 0) {
        throw new SafetensorsError(
          'E_ST_NO_FILES',
          dir,
          `no ${SINGLE_FILE}, ${INDEX_FILE} or *.safetensors file in this folder`,
        );
      }
      for (const s of shards) opened.push(SafetensorsFile.open(path.join(dir, s)));
      return new Checkpoint(dir, opened, byName(opened, dir));
    } catch (e) {
      for (const f of opened) f.close();
      throw e;
    }
  }

  /** All tensor names, file by file in file order. */
  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  /** Where `name` lives, or E_ST_MISSING naming the folder and tensor. */
  info(name: string): TensorInfo {
    const f = this.where.get(name);
    if (!f) throw new SafetensorsError('E_ST_MISSING', this.dir, 'no such tensor in this checkpoint', name);
    return f.info(name);
  }

  /** One tensor converted to float32. */
  readFloat32(name: string): Float32Array {
    this.info(name);
    return this.where.get(name)!.readFloat32(name);
  }

  /** Bytes [start, start + length) of one tensor's data, as stored. */
  readBytesRange(name: string, start: number, length: number): Uint8Array {
    this.info(name);
    return this.where.get(name)!.readBytesRange(name, start, length);
  }

  /** One tensor as its natural typed array. */
  read(name: string): ReturnType<SafetensorsFile['read']> {
    this.info(name);
    return this.where.get(name)!.read(name);
  }

  /** Bytes of all tensor data (as stored, before any conversion). */
  totalBytes(): number {
    let total = 0;
    for (const name of this.where.keys()) total += this.info(name).byteLength;
    return total;
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/** name -> file over several files; a name in two files is an error. */
function byName(files: SafetensorsFile[], dir: string): Map<string, SafetensorsFile> {
  const where = new Map<string, SafetensorsFile>();
  for (const f of files) {
    for (const name of f.tensors.keys()) {
      const prev = where.get(name);
      if (prev)
        throw new SafetensorsError(
          'E_ST_DUPLICATE',
          dir,
          `tensor is in both ${path.basename(prev.path)} and ${path.basename(f.path)}`,
          name,
        );
      where.set(name, f);
    }
  }
  return where;
}

/** Opens a sharded checkpoint from its index; `opened` collects files so the caller can close them on error. */
function openIndexed(
  dir: string,
  opened: SafetensorsFile[],
): { files: SafetensorsFile[]; where: Map<string, SafetensorsFile> } {
  const indexPath = path.join(dir, INDEX_FILE);
  const problem = notRegularFile(indexPath);
  if (problem) throw new SafetensorsError('E_ST_INDEX', indexPath, `cannot read the index: it ${problem}`);
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new SafetensorsError('E_ST_INDEX', indexPath, `cannot read index JSON: ${(e as Error).message}`);
  }
  const weightMap = isPlainObject(index) ? index.weight_map : undefined;
  if (!isPlainObject(weightMap))
    throw new SafetensorsError('E_ST_INDEX', indexPath, 'index has no "weight_map" object');
  if (Object.keys(weightMap).length === 0) throw new SafetensorsError('E_ST_INDEX', indexPath, '"weight_map" is empty');

  const shardByFile = new Map<string, SafetensorsFile>();
  const mapped = new Map<string, SafetensorsFile>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (
      typeof shard !== 'string' ||
      shard === '' ||
      shard === '.' ||
      shard === '..' ||
      path.basename(shard) !== shard ||
      /[\\/\0]/.test(shard)
    ) {
      throw new SafetensorsError(
        'E_ST_INDEX',
        indexPath,
        `weight_map value ${JSON.stringify(shard)} is not a file name in this folder`,
        name,
      );
    }
    let f = shardByFile.get(shard);
    if (!f) {
      const shardPath = path.join(dir, shard);
      const why = notRegularFile(shardPath);
      if (why === 'does not exist')
        throw new SafetensorsError('E_ST_INDEX', indexPath, `shard file ${shard} is missing`, name);
      if (why) throw new SafetensorsError('E_ST_INDEX', indexPath, `shard ${shard} ${why}`, name);
      f = SafetensorsFile.open(shardPath);
      opened.push(f);
      shardByFile.set(shard, f);
    }
    if (!f.tensors.has(name))
      throw new SafetensorsError(
        'E_ST_INDEX',
        indexPath,
        `weight_map puts this tensor in ${shard}, which does not hold it`,
        name,
      );
    mapped.set(name, f);
  }
  // Order names shard by shard, in each shard's file order.
  const files = [...shardByFile.values()];
  const where = new Map<string, SafetensorsFile>();
  for (const f of files) for (const name of f.tensors.keys()) if (mapped.get(name) === f) where.set(name, f);
  return { files, where };
}

// ---------------------------------------------------------------------------------------------
// Writer

/**
 * Writes a safetensors file that Hugging Face's loader accepts: `__metadata__` (with
 * `format: "pt"` unless given), the header padded with spaces to a multiple of 8 bytes, then each
 * tensor's bytes, contiguous in the order given. Tensors are streamed one at a time; the file
 * appears under `file` only once complete (written to a temporary name, then renamed).
 */
export function writeSafetensors(
  file: string,
  tensors: Iterable<[string, TensorInput]> | Record<string, TensorInput>,
  metadata?: Record<string, string>,
): void {
  const list: Array<[string, TensorInput]> =
    Symbol.iterator in tensors
      ? [...(tensors as Iterable<[string, TensorInput]>)]
      : Object.entries(tensors as Record<string, TensorInput>);

  const meta: Record<string, string> = { format: 'pt', ...metadata };
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== 'string')
      throw new SafetensorsError('E_ST_METADATA', file, `metadata value for ${JSON.stringify(k)} is not a string`);
  }

  // Validate everything and build the header before touching the disk.
  const parts: string[] = [];
  const seen = new Set<string>();
  let offset = 0;
  for (const [name, t] of list) {
    if (name === METADATA_KEY || seen.has(name)) {
      throw new SafetensorsError(
        'E_ST_ENTRY',
        file,
        name === METADATA_KEY ? 'tensor name is reserved' : 'tensor name given twice',
        name,
      );
    }
    seen.add(name);
    if (!isDType(t.dtype))
      throw new SafetensorsError('E_ST_DTYPE', file, `unsupported dtype ${JSON.stringify(t.dtype)}`, name);
    if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) {
      throw new SafetensorsError(
        'E_ST_ENTRY',
        file,
        `shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`,
        name,
      );
    }
    if (!ArrayBuffer.isView(t.data))
      throw new SafetensorsError('E_ST_ENTRY', file, 'data is not a typed array or DataView', name);
    const expected = numElements(t.shape) * DTYPE_SIZE[t.dtype];
    if (t.data.byteLength !== expected) {
      throw new SafetensorsError(
        'E_ST_SIZE',
        file,
        `data has ${t.data.byteLength} bytes but shape [${t.shape.join(', ')}] of ${t.dtype} needs ${expected}`,
        name,
      );
    }
    parts.push(
      `${JSON.stringify(name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] })}`,
    );
    offset += expected;
  }
  parts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(meta)}`); // last, as Hugging Face writes it
  let header = `{${parts.join(',')}}`;
  header += ' '.repeat((8 - (Buffer.byteLength(header) % 8)) % 8);
  const headerBytes = Buffer.from(header, 'utf8');
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);

  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  let open = true;
  try {
    writeAll(fd, prefix);
    writeAll(fd, headerBytes);
    for (const [, t] of list) writeAll(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    open = false;
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (e) {
    if (open) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
