/**
 * WGSL linear layers: y = epilogue(x · Wᵀ) with W stored [N, K] row-major (the checkpoint's
 * [out, in] layout, no transpose at load), rows padded to KP (a multiple of 8) with zeros.
 *
 * - `gemv` (decode, M ≤ GEMV_MAX_ROWS rows of x): one workgroup of 64 invocations per R output
 *   rows; the K of each row is split across the 64 lanes (split-K inside the workgroup: lane t
 *   streams 16-byte chunks t, t+64, …, vec4<f32> for f32 weights, vec4<u32> = 8 halves for f16,
 *   widened with unpack2x16float, f32 accumulation), and the 64 partial sums meet in workgroup
 *   memory. Weights are read once per step whatever M is.
 * - `gemm` (prefill and large batches): 64×64 output tiles, K in steps of 16 through workgroup
 *   memory (12 KiB with gate/up pairs), 256 invocations each owning a 4×4 block
 *   (four vec4 accumulators: lavapipe's LLVM compiles array-indexed accumulators for many seconds).
 *
 * - split-K across workgroups (GEMV, optional): for narrow outputs with a long K, S workgroups per
 *   row group each take 1/S of K and write partial sums; a second dispatch adds them and runs the
 *   epilogue (`autoSplitK` picks S; off where the output already fills the GPU).
 *
 * Epilogues (both kernels, in this order): the fused RMSNorm of x (x·w_norm inside the loads, the
 * inverse RMS of each x row from the same loads: no separate norm pass), the bias, the gate/up
 * pair act(gate)·up (rows j and j + PAIR of W: SwiGLU or GeGLU(tanh)), the soft-cap
 * cap·tanh(v/cap), and the residual add (y += v in place, for o_proj and down_proj).
 *
 * No subnormal constants; tanh's argument is clamped to ±15 (tanh(15) rounds to 1 in f32, and
 * some GPUs' tanh returns NaN for large arguments).
 */
import { DimsLayout, type Kernel } from './runtime.ts';

export type Act = 'silu' | 'gelu_tanh';

export interface LinearShape {
  /** rows of x (tokens); M ≤ GEMV_MAX_ROWS takes the GEMV */
  M: number;
  /** real inner size (the norm's mean divides by it); rows are stored padded to KP */
  K: number;
  /** output columns (with `pair`: the pairs, i.e. the intermediate size) */
  N: number;
  w: 'f32' | 'f16';
  /** x row stride in floats (a multiple of 8, ≥ KP) */
  xStride: number;
  /** y row stride in floats, and the column where this output starts */
  yStride: number;
  yOffset?: number;
  /** fused RMSNorm of x rows with a weight [KP] (already the effective weight: Gemma's 1 + w) */
  norm?: { eps: number } | null;
  bias?: boolean;
  pair?: Act | null;
  softcap?: number | null;
  residual?: boolean;
  /**
   * Row maps from the step buffer (u32 words): x row m is step[xRowAt + m], y row m is
   * step[yRowAt + m] (the head of a prefill reads its last token and writes its cache row).
   */
  rowMap?: { xRowAt: number; yRowAt: number } | null;
  /**
   * GEMV only: split K across this many workgroups per row group (≥ 2), for narrow outputs with a
   * long K: partial sums (and the norm's partial sums of squares) go to a scratch buffer 'part',
   * and a second dispatch adds them up and runs the epilogue.
   */
  splitK?: number;
}

export const GEMV_MAX_ROWS = 8;
export const LINEAR_WG = 64;
/** rows of W one GEMV workgroup covers, by M (more rows per group where M leaves registers free) */
export function gemvRows(M: number): number {
  return M <= 2 ? 4 : M <= 4 ? 2 : 1;
}

export function padK(k: number): number {
  return Math.ceil(k / 8) * 8;
}

/** f32 literal for WGSL (finite, never subnormal: callers pass eps, caps, scales). */
export function f32(v: number): string {
  if (!Number.isFinite(v)) throw new Error(`WGSL constant ${v} is not finite`);
  if (v !== 0 && Math.abs(v) < 1.1754943508222875e-38) throw new Error(`WGSL constant ${v} is subnormal`);
  const s = Math.fround(v).toPrecision(9);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** WGSL of the activation functions (shared with other kernels). */
export const ACT_WGSL = /* wgsl */ `
fn silu(g: f32) -> f32 { return g / (1.0 + exp(-g)); }
fn gelu_tanh(g: f32) -> f32 {
  let inner = clamp(0.7978845608 * (g + 0.044715 * g * g * g), -15.0, 15.0);
  return 0.5 * g * (1.0 + tanh(inner));
}
`;

/** The runtime shape of a linear kernel (everything but M, the flags and the storage dtype). */
const DIMS = new DimsLayout([
  ['k', 'f32'],
  ['kc', 'u32'],
  ['n', 'u32'],
  ['xs', 'u32'],
  ['ys', 'u32'],
  ['yo', 'u32'],
  ['eps', 'f32'],
  ['cap', 'f32'],
  ['xrow', 'u32'],
  ['yrow', 'u32'],
  ['m', 'u32'],
  ['slices', 'u32'],
  ['cs', 'u32'],
] as const);

function chunks(s: LinearShape): number {
  const KP = padK(s.K);
  return s.w === 'f16' ? KP / 8 : KP / 4;
}

function dimsOf(s: LinearShape): Uint32Array {
  const S = s.splitK ?? 1;
  return DIMS.pack({
    k: s.K,
    kc: chunks(s),
    n: s.N,
    xs: s.xStride / 4,
    ys: s.yStride,
    yo: s.yOffset ?? 0,
    eps: s.norm?.eps ?? 1,
    cap: s.softcap ?? 1,
    xrow: s.rowMap?.xRowAt ?? 0,
    yrow: s.rowMap?.yRowAt ?? 0,
    m: s.M,
    slices: S,
    cs: Math.ceil(chunks(s) / S),
  });
}

/** Words of the split-K scratch ('part') a shape needs: per slice and row, the partial sums and the sum of squares. */
export function splitScratchWords(s: LinearShape): number {
  return (s.splitK ?? 1) * s.M * ((s.pair ? 2 : 1) * s.N + 1);
}

/**
 * How many K slices a decode GEMV should take (1 = none): only where the output leaves few
 * workgroups (< 1024 groups of 64 lanes, too few to keep a large GPU's memory busy) and K is long
 * enough that every lane still streams ≥ 4 chunks of 16 bytes per slice; at most 8. Untuned: a
 * starting point to measure on a real GPU (lavapipe cannot tell).
 */
export function autoSplitK(s: LinearShape): number {
  if (s.M > GEMV_MAX_ROWS) return 1;
  const groups = Math.ceil(s.N / gemvRows(s.M));
  if (groups >= 1024) return 1;
  const S = Math.min(8, Math.ceil(1024 / groups), Math.floor(chunks(s) / (LINEAR_WG * 4)));
  return S >= 2 ? S : 1;
}

/** The code variant: what is compiled in (everything else is in the dims). */
function variant(s: LinearShape): string {
  return `${s.w}${s.norm ? ' norm' : ''}${s.bias ? ' bias' : ''}${s.pair ? ` ${s.pair}` : ''}${s.softcap ? ' softcap' : ''}${s.residual ? ' +res' : ''}${s.rowMap ? ' rowmap' : ''}`;
}

function split(s: LinearShape): boolean {
  return (s.splitK ?? 1) > 1;
}

function bindings(s: LinearShape): string[] {
  const b = ['dims', 'x', 'w'];
  if (s.norm) b.push('nw');
  if (s.bias && !split(s)) b.push('bias');
  if (s.rowMap) b.push('step');
  b.push(split(s) ? 'part' : 'y');
  return b;
}

function header(s: LinearShape): string {
  const names = bindings(s);
  const decl: Record<string, string> = {
    x: 'var<storage, read> x: array<vec4<f32>>;',
    w: s.w === 'f32' ? 'var<storage, read> w: array<vec4<f32>>;' : 'var<storage, read> w: array<vec4<u32>>;',
    nw: 'var<storage, read> nw: array<vec4<f32>>;',
    bias: 'var<storage, read> bias: array<f32>;',
    step: 'var<storage, read> step: array<u32>;',
    y: 'var<storage, read_write> y: array<f32>;',
    part: 'var<storage, read_write> part: array<f32>;',
  };
  return [DIMS.wgsl(0), ...names.slice(1).map((n, i) => `@group(0) @binding(${i + 1}) ${decl[n]}`)].join('\n');
}

/** The epilogue: v (and u, the up value, with pairs) → y[row m, column j]. */
function epilogue(s: LinearShape): string {
  const lines: string[] = [];
  lines.push(`fn finish(m: u32, j: u32, g_in: f32, u_in: f32, ss: f32) {`);
  lines.push(`  var g = g_in;`);
  if (s.pair) lines.push(`  var u = u_in;`);
  if (s.norm) {
    lines.push(`  let inv = inverseSqrt(ss / d.k + d.eps);`);
    lines.push(`  g = g * inv;`);
    if (s.pair) lines.push(`  u = u * inv;`);
  }
  if (s.bias) {
    lines.push(`  g = g + bias[j];`);
    if (s.pair) lines.push(`  u = u + bias[j + d.n];`);
  }
  if (s.pair) lines.push(`  g = ${s.pair}(g) * u;`);
  if (s.softcap) lines.push(`  g = tanh(clamp(g / d.cap, -15.0, 15.0)) * d.cap;`);
  const yRow = s.rowMap ? `step[d.yrow + m]` : 'm';
  lines.push(`  let o = ${yRow} * d.ys + d.yo + j;`);
  lines.push(s.residual ? `  y[o] = y[o] + g;` : `  y[o] = g;`);
  lines.push(`}`);
  return lines.join('\n');
}

function xRow(s: LinearShape, m: string): string {
  return s.rowMap ? `step[d.xrow + ${m}]` : m;
}

// ---------------------------------------------------------------------------------------------
// GEMV

/** The GEMV kernel for shape `s` (M ≤ GEMV_MAX_ROWS). Dispatch gemvGroups(s) workgroups (2-D if needed). */
export function gemvKernel(s: LinearShape): Kernel {
  const M = s.M;
  const R = gemvRows(M);
  const P = s.pair ? 2 : 1;
  const f16 = s.w === 'f16';
  const O = R * M * P; // accumulators per lane
  const slots = O + (s.norm ? M : 0);
  const code = /* wgsl */ `
${header(s)}
const WG = ${LINEAR_WG}u;
const M = ${M}u;
const R = ${R}u;
var<workgroup> red: array<f32, ${slots * LINEAR_WG}>;
${s.pair && !split(s) ? ACT_WGSL : ''}
${split(s) ? '' : epilogue(s)}

@compute @workgroup_size(${LINEAR_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let N = d.n;
${
  split(s)
    ? `  // split-K: workgroup row wid.y takes slice wid.y of the chunks
  let slice = wid.y;
  let c0 = slice * d.cs;
  let KC = min(d.kc, c0 + d.cs);
  let j0 = wid.x * R;`
    : `  let c0 = 0u;
  let KC = d.kc;
  let j0 = (wid.x + wid.y * nwg.x) * R;`
}
  if (j0 >= N) { return; }
  var acc: array<f32, ${O}>;
  var ss: array<f32, ${M}>;
  for (var c = c0 + t; c < KC; c = c + WG) {
${
  f16
    ? `    var xa: array<vec4<f32>, ${M}>;
    var xb: array<vec4<f32>, ${M}>;
    for (var m = 0u; m < M; m = m + 1u) {
      let base = ${xRow(s, 'm')} * d.xs + 2u * c;
      var a = x[base];
      var b = x[base + 1u];
${
  s.norm
    ? `      ss[m] = ss[m] + dot(a, a) + dot(b, b);
      a = a * nw[2u * c];
      b = b * nw[2u * c + 1u];`
    : ''
}
      xa[m] = a;
      xb[m] = b;
    }
    for (var r = 0u; r < R; r = r + 1u) {
      let j = min(j0 + r, N - 1u);
      for (var p = 0u; p < ${P}u; p = p + 1u) {
        let q = w[(j + p * N) * d.kc + c];
        let wa = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
        let wb = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
        for (var m = 0u; m < M; m = m + 1u) {
          let i = (r * ${P}u + p) * M + m;
          acc[i] = acc[i] + dot(wa, xa[m]) + dot(wb, xb[m]);
        }
      }
    }`
    : `    var xa: array<vec4<f32>, ${M}>;
    for (var m = 0u; m < M; m = m + 1u) {
      var a = x[${xRow(s, 'm')} * d.xs + c];
${
  s.norm
    ? `      ss[m] = ss[m] + dot(a, a);
      a = a * nw[c];`
    : ''
}
      xa[m] = a;
    }
    for (var r = 0u; r < R; r = r + 1u) {
      let j = min(j0 + r, N - 1u);
      for (var p = 0u; p < ${P}u; p = p + 1u) {
        let wv = w[(j + p * N) * d.kc + c];
        for (var m = 0u; m < M; m = m + 1u) {
          let i = (r * ${P}u + p) * M + m;
          acc[i] = acc[i] + dot(wv, xa[m]);
        }
      }
    }`
}
  }
  for (var i = 0u; i < ${O}u; i = i + 1u) { red[i * WG + t] = acc[i]; }
${s.norm ? `  for (var m = 0u; m < M; m = m + 1u) { red[(${O}u + m) * WG + t] = ss[m]; }` : ''}
  workgroupBarrier();
  for (var o = t; o < R * M; o = o + WG) {
    let r = o / M;
    let m = o % M;
    let j = j0 + r;
    if (j >= N) { continue; }
    var g = 0.0;
    var u = 0.0;
    var sq = 0.0;
    for (var l = 0u; l < WG; l = l + 1u) {
      g = g + red[((r * ${P}u) * M + m) * WG + l];
${s.pair ? `      u = u + red[((r * ${P}u + 1u) * M + m) * WG + l];` : ''}
${s.norm ? `      sq = sq + red[(${O}u + m) * WG + l];` : ''}
    }
${
  split(s)
    ? `    let pb = (slice * M + m) * (${P}u * N + 1u);
    part[pb + j] = g;
${s.pair ? '    part[pb + N + j] = u;' : ''}
    if (j == 0u) { part[pb + ${P}u * N] = sq; }`
    : '    finish(m, j, g, u, sq);'
}
  }
}
`;
  return { label: `gemv M${M} ${variant(s)}`, code, entry: 'main', bindings: bindings(s), dims: dimsOf(s) };
}

export function gemvGroups(s: LinearShape): number | [number, number] {
  const groups = Math.ceil(s.N / gemvRows(s.M));
  return split(s) ? [groups, s.splitK!] : groups;
}

/** The split-K reduction: y = epilogue(Σ over slices). Dispatch [ceil(N / 64), M]. */
export function splitReduceKernel(s: LinearShape): Kernel {
  const P = s.pair ? 2 : 1;
  const names = ['dims', 'part', ...(s.bias ? ['bias'] : []), ...(s.rowMap ? ['step'] : []), 'y'];
  const decl: Record<string, string> = {
    part: 'var<storage, read> part: array<f32>;',
    bias: 'var<storage, read> bias: array<f32>;',
    step: 'var<storage, read> step: array<u32>;',
    y: 'var<storage, read_write> y: array<f32>;',
  };
  const code = /* wgsl */ `
${DIMS.wgsl(0)}
${names
  .slice(1)
  .map((n, i) => `@group(0) @binding(${i + 1}) ${decl[n]}`)
  .join('\n')}
${s.pair ? ACT_WGSL : ''}
${epilogue(s)}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let j = wid.x * 64u + t;
  let m = wid.y;
  let N = d.n;
  if (j >= N) { return; }
  var g = 0.0;
  var u = 0.0;
  var sq = 0.0;
  for (var sl = 0u; sl < d.slices; sl = sl + 1u) {
    let pb = (sl * d.m + m) * (${P}u * N + 1u);
    g = g + part[pb + j];
${s.pair ? '    u = u + part[pb + N + j];' : ''}
    sq = sq + part[pb + ${P}u * N];
  }
  finish(m, j, g, u, sq);
}
`;
  return { label: `gemv-reduce ${variant(s)}`, code, entry: 'main', bindings: names, dims: dimsOf(s) };
}

// ---------------------------------------------------------------------------------------------
// GEMM

const TM = 64;
const TN = 64;
const TK = 16;

/** The tiled GEMM for shape `s` (any M). Dispatch gemmGroups(s) = [column tiles, row tiles]. */
export function gemmKernel(s: LinearShape): Kernel {
  const P = s.pair ? 2 : 1;
  const f16 = s.w === 'f16';
  const code = /* wgsl */ `
${header(s)}
var<workgroup> As: array<vec4<f32>, ${(TK * TM) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(TK * TN * P) / 4}>;
var<workgroup> ssr: array<f32, 256>;
${s.pair ? ACT_WGSL : ''}
${epilogue(s)}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let M = d.m;
  let N = d.n;
  let KC = d.kc;
  let KP = KC * ${f16 ? 8 : 4}u;
  let n0 = wid.x * ${TN}u;
  let m0 = wid.y * ${TM}u;
  let tx = t % 16u;
  let ty = t / 16u;
  // the A tile: lane t loads row t / 4, 4 consecutive k at (t % 4) · 4
  let am = t / 4u;
  let ak = (t % 4u) * 4u;
  let arow = min(m0 + am, M - 1u);
  var ss = 0.0;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
${
  s.pair
    ? `  var accu0 = vec4<f32>(0.0);
  var accu1 = vec4<f32>(0.0);
  var accu2 = vec4<f32>(0.0);
  var accu3 = vec4<f32>(0.0);`
    : ''
}
  for (var k0 = 0u; k0 < KP; k0 = k0 + ${TK}u) {
    var a = vec4<f32>(0.0);
    if (k0 + ak < KP) {
      a = x[${xRow(s, 'arow')} * d.xs + (k0 + ak) / 4u];
${
  s.norm
    ? `      ss = ss + dot(a, a);
      a = a * nw[(k0 + ak) / 4u];`
    : ''
}
    }
    if (m0 + am >= M) { a = vec4<f32>(0.0); }
    As[(ak + 0u) * 16u + am / 4u][am % 4u] = a.x;
    As[(ak + 1u) * 16u + am / 4u][am % 4u] = a.y;
    As[(ak + 2u) * 16u + am / 4u][am % 4u] = a.z;
    As[(ak + 3u) * 16u + am / 4u][am % 4u] = a.w;
${
  f16
    ? `    // the W tile: lanes < 128 · P load 8 halves of row (t / 2) at k (t % 2) · 8
    if (t < ${128 * P}u) {
      let p = t / 128u;
      let bt = t % 128u;
      let bn = bt / 2u;
      let bk = (bt % 2u) * 8u;
      var wa = vec4<f32>(0.0);
      var wb = vec4<f32>(0.0);
      let j = n0 + bn;
      if (k0 + bk < KP && j < N) {
        let q = w[(j + p * N) * KC + (k0 + bk) / 8u];
        wa = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
        wb = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
      }
      let o = p * ${(TK * TN) / 4}u + bn / 4u;
      let c = bn % 4u;
      Bs[o + (bk + 0u) * 16u][c] = wa.x;
      Bs[o + (bk + 1u) * 16u][c] = wa.y;
      Bs[o + (bk + 2u) * 16u][c] = wa.z;
      Bs[o + (bk + 3u) * 16u][c] = wa.w;
      Bs[o + (bk + 4u) * 16u][c] = wb.x;
      Bs[o + (bk + 5u) * 16u][c] = wb.y;
      Bs[o + (bk + 6u) * 16u][c] = wb.z;
      Bs[o + (bk + 7u) * 16u][c] = wb.w;
    }`
    : `    // the W tile: lane t loads row t / 4, 4 consecutive k at (t % 4) · 4 (and the up rows)
    for (var p = 0u; p < ${P}u; p = p + 1u) {
      let j = n0 + am;
      var wv = vec4<f32>(0.0);
      if (k0 + ak < KP && j < N) { wv = w[(j + p * N) * KC + (k0 + ak) / 4u]; }
      let o = p * ${(TK * TN) / 4}u + am / 4u;
      let c = am % 4u;
      Bs[o + (ak + 0u) * 16u][c] = wv.x;
      Bs[o + (ak + 1u) * 16u][c] = wv.y;
      Bs[o + (ak + 2u) * 16u][c] = wv.z;
      Bs[o + (ak + 3u) * 16u][c] = wv.w;
    }`
}
    workgroupBarrier();
    for (var k = 0u; k < ${TK}u; k = k + 1u) {
      let a = As[k * 16u + ty];
      let b = Bs[k * 16u + tx];
      acc0 = acc0 + a.x * b;
      acc1 = acc1 + a.y * b;
      acc2 = acc2 + a.z * b;
      acc3 = acc3 + a.w * b;
${
  s.pair
    ? `      let bu = Bs[${(TK * TN) / 4}u + k * 16u + tx];
      accu0 = accu0 + a.x * bu;
      accu1 = accu1 + a.y * bu;
      accu2 = accu2 + a.z * bu;
      accu3 = accu3 + a.w * bu;`
    : ''
}
    }
    workgroupBarrier();
  }
${
  s.norm
    ? `  ssr[t] = ss;
  workgroupBarrier();`
    : ''
}
  // lane (tx, ty) owns rows ty·4 + i and columns tx·4 + jj
  for (var e = 0u; e < 16u; e = e + 1u) {
    let i = e / 4u;
    let jj = e % 4u;
    let ml = ty * 4u + i;
    let m = m0 + ml;
    let j = n0 + tx * 4u + jj;
    if (m >= M || j >= N) { continue; }
    let sq = ${s.norm ? 'ssr[ml * 4u] + ssr[ml * 4u + 1u] + ssr[ml * 4u + 2u] + ssr[ml * 4u + 3u]' : '0.0'};
    var g = acc0[jj];
    if (i == 1u) { g = acc1[jj]; } else if (i == 2u) { g = acc2[jj]; } else if (i == 3u) { g = acc3[jj]; }
${
  s.pair
    ? `    var u = accu0[jj];
    if (i == 1u) { u = accu1[jj]; } else if (i == 2u) { u = accu2[jj]; } else if (i == 3u) { u = accu3[jj]; }`
    : '    let u = 0.0;'
}
    finish(m, j, g, u, sq);
  }
}
`;
  return { label: `gemm ${variant(s)}`, code, entry: 'main', bindings: bindings(s), dims: dimsOf(s) };
}

export function gemmGroups(s: LinearShape): [number, number] {
  return [Math.ceil(s.N / TN), Math.ceil(s.M / TM)];
}

/**
 * The dispatches a linear layer of this shape takes: the GEMV for few rows (and, split over K, its
 * reduction), the tiled GEMM beyond.
 */
export function linearKernels(s: LinearShape): { kernel: Kernel; groups: number | [number, number] }[] {
  if (s.M > GEMV_MAX_ROWS) return [{ kernel: gemmKernel({ ...s, splitK: 1 }), groups: gemmGroups(s) }];
  if (!split(s)) return [{ kernel: gemvKernel(s), groups: gemvGroups(s) }];
  return [
    { kernel: gemvKernel(s), groups: gemvGroups(s) },
    { kernel: splitReduceKernel(s), groups: [Math.ceil(s.N / 64), s.M] },
  ];
}
