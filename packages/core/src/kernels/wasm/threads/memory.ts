/**
 * The thread pool's memory: one `WebAssembly.Memory({shared: true})` that the main thread and
 * every worker run the kernels over, with an allocator of ours (first fit over a free list,
 * neighbours coalesced, 64-byte aligned blocks). It is not emscripten's heap: nothing else
 * allocates in it. Weights, KV buffers and per-op scratch all live here.
 *
 * The first CONTROL_BYTES hold the pool's control block (job descriptor, counters); offset 0 is
 * never handed out, so 0 can mean "none" in kernel arguments.
 *
 * Growth: a shared memory grows in place (its buffer is never detached, unlike a non-shared
 * one), but a JS view made before a grow still has the old length; views are made from
 * `memory.buffer` on demand (f32(), i32(), u8()), so they always cover the whole memory. Wasm code
 * in the workers sees the new size at once.
 */
import { ModelError } from '../../../errors.ts';

export const PAGE = 65536;
/** Block alignment (a cache line, and every SIMD load aligned). */
export const ALIGN = 64;
/** Bytes at the start reserved for the pool's control block. */
export const CONTROL_BYTES = 64 * 1024;
/** The most a 32-bit wasm memory can hold: 65536 pages, 4 GiB. */
export const MAX_PAGES = 65536;

/** A block of the shared memory. */
export interface Allocation {
  /** byte offset in the memory */
  readonly ptr: number;
  /** bytes asked for (the block may be larger by its alignment) */
  readonly bytes: number;
}

interface Free {
  ptr: number;
  bytes: number;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

export class SharedHeap {
  readonly memory: WebAssembly.Memory;
  /** free blocks, sorted by offset, none adjacent */
  private free: Free[] = [];
  /** live blocks: ptr → rounded size */
  private live = new Map<number, number>();
  /** the memory's maximum, in pages */
  readonly maxPages: number;

  /**
   * @param initialBytes memory to reserve up front (grows as needed up to maxBytes)
   * @param maxBytes the most this memory may ever hold (at most 4 GiB)
   */
  constructor(initialBytes = 16 << 20, maxBytes = MAX_PAGES * PAGE) {
    const maximum = Math.min(MAX_PAGES, Math.ceil(maxBytes / PAGE));
    const initial = Math.min(maximum, Math.max(2, Math.ceil(Math.max(initialBytes, CONTROL_BYTES + PAGE) / PAGE)));
    this.memory = new WebAssembly.Memory({ initial, maximum, shared: true });
    this.maxPages = maximum;
    this.free.push({ ptr: CONTROL_BYTES, bytes: initial * PAGE - CONTROL_BYTES });
  }

  /** Bytes the memory holds now. */
  get size(): number {
    return this.memory.buffer.byteLength;
  }

  /** Bytes in live blocks. */
  get used(): number {
    let n = 0;
    for (const b of this.live.values()) n += b;
    return n;
  }

  /** Number of live blocks (a leak check for tests). */
  get blocks(): number {
    return this.live.size;
  }

  /**
   * A block of at least `bytes` bytes, 64-byte aligned, its contents unspecified (zero when the
   * memory just grew, else whatever was there). Grows the memory when no free block fits;
   * throws a ModelError when 4 GiB (or maxBytes) would not hold it.
   */
  alloc(bytes: number, what = 'buffer'): Allocation {
    if (!Number.isFinite(bytes) || bytes < 0)
      throw new ModelError('E_ALLOC', `thread pool memory: cannot allocate ${bytes} bytes for ${what}`);
    const size = Math.max(ALIGN, alignUp(bytes, ALIGN));
    let i = this.free.findIndex((f) => f.bytes >= size);
    if (i < 0) {
      this.grow(size, what);
      i = this.free.findIndex((f) => f.bytes >= size);
    }
    const f = this.free[i];
    const ptr = f.ptr;
    if (f.bytes === size) this.free.splice(i, 1);
    else {
      f.ptr += size;
      f.bytes -= size;
    }
    this.live.set(ptr, size);
    return { ptr, bytes };
  }

  /** Return a block (double frees and foreign pointers throw). */
  release(a: Allocation | number): void {
    const ptr = typeof a === 'number' ? a : a.ptr;
    const size = this.live.get(ptr);
    if (size === undefined) throw new ModelError('E_ALLOC', `thread pool memory: no live block at ${ptr}`);
    this.live.delete(ptr);
    let i = 0;
    while (i < this.free.length && this.free[i].ptr < ptr) i++;
    this.free.splice(i, 0, { ptr, bytes: size });
    // coalesce with the next, then the previous
    if (i + 1 < this.free.length && ptr + size === this.free[i + 1].ptr) {
      this.free[i].bytes += this.free[i + 1].bytes;
      this.free.splice(i + 1, 1);
    }
    if (i > 0 && this.free[i - 1].ptr + this.free[i - 1].bytes === ptr) {
      this.free[i - 1].bytes += this.free[i].bytes;
      this.free.splice(i, 1);
    }
  }

  private grow(size: number, what: string): void {
    const have = this.size;
    const last = this.free[this.free.length - 1];
    const tailFree = last && last.ptr + last.bytes === have ? last.bytes : 0;
    const need = size - tailFree;
    // grow by what is needed, at least an eighth of what is there (fewer grows while loading)
    const pages = Math.max(Math.ceil(need / PAGE), Math.ceil(have / PAGE / 8));
    try {
      this.memory.grow(pages);
    } catch {
      try {
        this.memory.grow(Math.ceil(need / PAGE));
      } catch (e) {
        throw new ModelError(
          'E_ALLOC',
          `thread pool memory: ${what} needs ${size} bytes; ${have} are held (${this.used} in use) and the memory cannot grow further (its maximum is ${this.maxPages * PAGE} bytes)`,
          { cause: e },
        );
      }
    }
    const added = this.size - have;
    if (tailFree) last.bytes += added;
    else this.free.push({ ptr: have, bytes: added });
  }

  /** A Float32Array over n floats at byte offset ptr (a fresh view of the current buffer). */
  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }

  i32(ptr: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, n);
  }

  u8(ptr: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, n);
  }

  u16(ptr: number, n: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, ptr, n);
  }
}
