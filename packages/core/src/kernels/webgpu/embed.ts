/**
 * WGSL access to the embedding rows [V, H] (f32, or f16 as u32 pairs), stored row-major with rows
 * padded to a multiple of 8 and split into blocks of rows where the table passes the device's
 * maxStorageBufferBindingSize (128 MiB on lavapipe: SmolLM2's f32 table, 113 MB, fits in one;
 * Qwen2.5-0.5B's, 544 MB, takes five). A tied model's table is its head: one copy serves both.
 *
 * `gatherKernel` writes h[m] = E[id_m] · scale for the token rows of a step (ids from the step
 * buffer) and, when the plan keeps penalty state, marks each id as seen in its row's state (the
 * prompt's ids: repetition penalty reads prompt ∪ generated).
 */
import { padK } from './linear.ts';
import { DimsLayout, type Kernel } from './runtime.ts';

export interface EmbedLayout {
  V: number;
  H: number;
  dtype: 'f32' | 'f16';
  /** rows per block (every block but the last holds exactly this many) */
  blockRows: number;
}

export function embedBlocks(e: EmbedLayout): number {
  return Math.ceil(e.V / e.blockRows);
}

/** Bytes of one block of `rows` rows. */
export function embedBlockBytes(e: EmbedLayout, rows: number): number {
  return rows * padK(e.H) * (e.dtype === 'f32' ? 4 : 2);
}

/** The binding names of the blocks. */
export function embedBindings(e: EmbedLayout): string[] {
  return Array.from({ length: embedBlocks(e) }, (_, i) => `e${i}`);
}

/**
 * WGSL declarations of the blocks (from binding `first`) and `fn erow(id, k) -> f32`; the row
 * stride (d.ep, floats) and the rows per block (d.brows) come from the kernel's dims.
 */
export function embedAccess(e: EmbedLayout, first: number): string {
  const n = embedBlocks(e);
  const ty = e.dtype === 'f32' ? 'f32' : 'u32';
  const decls = Array.from(
    { length: n },
    (_, i) => `@group(0) @binding(${first + i}) var<storage, read> e${i}: array<${ty}>;`,
  ).join('\n');
  const read = (i: number, row: string) =>
    e.dtype === 'f32' ? `e${i}[(${row}) * d.ep + k]` : `unpack2x16float(e${i}[((${row}) * d.ep + k) / 2u])[k % 2u]`;
  const branches: string[] = [];
  for (let i = 0; i < n; i++) {
    const row = i === 0 ? 'id' : `id - ${i}u * d.brows`;
    if (i === n - 1) branches.push(`  return ${read(i, row)};`);
    else branches.push(`  if (id < ${i + 1}u * d.brows) { return ${read(i, row)}; }`);
  }
  return `${decls}\nfn erow(id: u32, k: u32) -> f32 {\n${branches.join('\n')}\n}`;
}

/** The dims fields embedAccess reads. */
export function embedDims(e: EmbedLayout): { ep: number; brows: number } {
  return { ep: padK(e.H), brows: e.blockRows };
}

export interface GatherShape {
  /** token rows */
  M: number;
  embed: EmbedLayout;
  /** multiply rows by this (Gemma: √hidden), or null */
  scale: number | null;
  /** h row stride (floats) */
  hStride: number;
  /** where the step buffer holds the ids and the cache rows (u32 words) */
  idsAt: number;
  rowsAt: number;
  /** mark ids as seen in the penalty state pen [B, V] (bit 31; the buffer is bound either way) */
  penalties: boolean;
}

const GATHER_DIMS = new DimsLayout([
  ['h', 'u32'],
  ['v', 'u32'],
  ['ep', 'u32'],
  ['brows', 'u32'],
  ['scale', 'f32'],
  ['hs', 'u32'],
  ['ids', 'u32'],
  ['rows', 'u32'],
  ['pen', 'u32'],
] as const);

/** Dispatch [ceil(H / 64), M]. Bindings: dims, step, h, pen, e0… */
export function gatherKernel(s: GatherShape): Kernel {
  const names = ['dims', 'step', 'h', 'pen', ...embedBindings(s.embed)];
  const code = /* wgsl */ `
${GATHER_DIMS.wgsl(0)}
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> h: array<f32>;
@group(0) @binding(3) var<storage, read_write> pen: array<atomic<u32>>;
${embedAccess(s.embed, 4)}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let m = wid.y;
  let k = wid.x * 64u + t;
  let id = min(step[d.ids + m], d.v - 1u);
  if (k == 0u && d.pen != 0u) { atomicOr(&pen[step[d.rows + m] * d.v + id], 0x80000000u); }
  if (k >= d.h) { return; }
  h[m * d.hs + k] = erow(id, k) * d.scale;
}
`;
  return {
    label: `gather ${s.embed.dtype}${embedBlocks(s.embed) > 1 ? ` ${embedBlocks(s.embed)} blocks` : ''}`,
    code,
    entry: 'main',
    bindings: names,
    dims: GATHER_DIMS.pack({
      h: s.embed.H,
      v: s.embed.V,
      ...embedDims(s.embed),
      scale: s.scale ?? 1,
      hs: s.hStride,
      ids: s.idsAt,
      rows: s.rowsAt,
      pen: s.penalties ? 1 : 0,
    }),
  };
}

export function gatherGroups(s: GatherShape): [number, number] {
  return [Math.ceil(s.embed.H / 64), s.M];
}
