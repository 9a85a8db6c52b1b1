/**
 * WGSL: the step's q/k/v heads from the fused projection, in one dispatch: per-head RMSNorm of q
 * and k (Qwen3, Gemma 3), RoPE on the first `rot` dimensions of each q and k head (full or partial
 * rotary, rotate-half layout as HF), the attention scale on q, and the KV-cache append in place:
 * k and v are written into their row's cache at slot = position mod S (S = the capacity, or a
 * sliding layer's ring), and the slot's position (+1; 0 = empty) into the row's slot table, which
 * attention's mask reads.
 *
 * RoPE angles come from host tables [P, rot/2] of cos and sin (built by `ropeTable`, in float64
 * from the f32-rounded angle, exactly as @moi/core's ropeTables): GPU cos/sin of large angles are
 * too coarse (WGSL promises 2^-11 absolute only on [−π, π]). Every scaling the models use
 * (default, linear, llama3, dynamic within max_position_embeddings) is in the table.
 *
 * Grid: (nH + 2·nKV heads, M token rows), 64 invocations; D ≤ 256.
 */
import { ropeInvFreq, type RopeSpec } from '../../nn.ts';
import { DimsLayout, type Kernel } from './runtime.ts';

export interface RopeShape {
  M: number;
  D: number;
  nH: number;
  nKV: number;
  /** rotary dimensions (even, ≤ D) */
  rot: number;
  /** cache slots per row */
  S: number;
  /** q/k RMSNorm (weights [2, D]: q's, then k's) with this eps, or null */
  qkNorm: { eps: number } | null;
  /** multiplies q after norm and rotation */
  qScale: number;
  /** qkv row stride (floats) and q's (floats) */
  qkvStride: number;
  qStride: number;
  /** where the step buffer holds each token's cache row and position (u32 words) */
  rowsAt: number;
  posAt: number;
}

/**
 * cos then sin, each [positions, rot/2], f32: the half-frequencies of positions 0 … positions−1
 * (HF rounds the angle invFreq·p to float32, then takes cos/sin; the attention scaling multiplies).
 */
export function ropeTable(spec: RopeSpec, positions: number): Float32Array {
  const half = spec.dim / 2;
  const { invFreq, attentionScaling } = ropeInvFreq(spec, positions);
  const out = new Float32Array(2 * positions * half);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const ang = Math.fround(Math.fround(invFreq[i]) * p);
      out[p * half + i] = Math.cos(ang) * attentionScaling;
      out[(positions + p) * half + i] = Math.sin(ang) * attentionScaling;
    }
  }
  return out;
}

const DIMS = new DimsLayout([
  ['d', 'u32'],
  ['df', 'f32'],
  ['nh', 'u32'],
  ['nkv', 'u32'],
  ['half', 'u32'],
  ['s', 'u32'],
  ['sinAt', 'u32'],
  ['eps', 'f32'],
  ['qscale', 'f32'],
  ['qkvs', 'u32'],
  ['qs', 'u32'],
  ['rows', 'u32'],
  ['pos', 'u32'],
] as const);

/** Dispatch [nH + 2·nKV, M]. Bindings: dims, qkv, (nw), tab, step, q, kc, vc, slots. */
export function ropeKernel(s: RopeShape, positions: number): Kernel {
  if (s.D > 256) throw new Error(`rope kernel: head_dim ${s.D} > 256`);
  const half = s.rot / 2;
  const names = ['dims', 'qkv', ...(s.qkNorm ? ['nw'] : []), 'tab', 'step', 'q', 'kc', 'vc', 'slots'];
  const decl: Record<string, string> = {
    qkv: 'var<storage, read> qkv: array<f32>;',
    nw: 'var<storage, read> nw: array<f32>;',
    tab: 'var<storage, read> tab: array<f32>;',
    step: 'var<storage, read> step: array<u32>;',
    q: 'var<storage, read_write> q: array<f32>;',
    kc: 'var<storage, read_write> kc: array<f32>;',
    vc: 'var<storage, read_write> vc: array<f32>;',
    slots: 'var<storage, read_write> slots: array<u32>;',
  };
  const code = /* wgsl */ `
${DIMS.wgsl(0)}
${names
  .slice(1)
  .map((n, i) => `@group(0) @binding(${i + 1}) ${decl[n]}`)
  .join('\n')}
var<workgroup> xs: array<f32, 256>;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let D = d.d;
  let NH = d.nh;
  let NKV = d.nkv;
  let HALF = d.half;
  let S = d.s;
  let hd = wid.x;
  let m = wid.y;
  let row = step[d.rows + m];
  let pos = step[d.pos + m];
  let slot = pos % S;
  var ss = 0.0;
  for (var k = t; k < D; k = k + 64u) {
    let v = qkv[m * d.qkvs + hd * D + k];
    xs[k] = v;
    ss = ss + v * v;
  }
  red[t] = ss;
  workgroupBarrier();
  for (var w = 32u; w > 0u; w = w / 2u) {
    if (t < w) { red[t] = red[t] + red[t + w]; }
    workgroupBarrier();
  }
  let isQ = hd < NH;
  let isK = hd >= NH && hd < NH + NKV;
${
  s.qkNorm
    ? `  let inv = inverseSqrt(red[0] / d.df + d.eps);
  let nwo = select(D, 0u, isQ);
  if (isQ || isK) {
    for (var k = t; k < D; k = k + 64u) { xs[k] = xs[k] * inv * nw[nwo + k]; }
  }
  workgroupBarrier();`
    : ''
}
  for (var k = t; k < D; k = k + 64u) {
    var v = xs[k];
    if ((isQ || isK) && k < 2u * HALF) {
      let i = k % HALF;
      let c = tab[pos * HALF + i];
      let sn = tab[d.sinAt + pos * HALF + i];
      var other = 0.0;
      if (k < HALF) { other = -xs[k + HALF]; } else { other = xs[k - HALF]; }
      v = v * c + other * sn;
    }
    if (isQ) {
      q[m * d.qs + hd * D + k] = v * d.qscale;
    } else if (isK) {
      kc[((row * NKV + hd - NH) * S + slot) * D + k] = v;
    } else {
      vc[((row * NKV + hd - NH - NKV) * S + slot) * D + k] = v;
    }
  }
  if (hd == NH && t == 0u) { slots[row * S + slot] = pos + 1u; }
}
`;
  return {
    label: `rope${s.qkNorm ? ' qknorm' : ''}`,
    code,
    entry: 'main',
    bindings: names,
    dims: DIMS.pack({
      d: s.D,
      df: s.D,
      nh: s.nH,
      nkv: s.nKV,
      half,
      s: s.S,
      sinAt: positions * half,
      eps: s.qkNorm?.eps ?? 1,
      qscale: s.qScale,
      qkvs: s.qkvStride,
      qs: s.qStride,
      rows: s.rowsAt,
      pos: s.posAt,
    }),
  };
}
