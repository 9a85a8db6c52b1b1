/**
 * WGSL RMSNorm with the residual add, for what the linear layers cannot fuse: Gemma 2/3's
 * post-attention and post-feed-forward norms, which normalize a layer's output before it joins the
 * residual stream: h[m] += rmsNorm(a[m]) · w (or, without `residual`, y[m] = rmsNorm(a[m]) · w).
 * The weight is the effective one (Gemma's 1 + w is folded in on the host). One workgroup of 64
 * invocations per row; the sum of squares meets in workgroup memory.
 */
import { DimsLayout, type Kernel } from './runtime.ts';

export interface NormShape {
  /** rows (tokens) */
  M: number;
  /** features */
  H: number;
  eps: number;
  /** row strides (floats) of the input a and the output h */
  aStride: number;
  hStride: number;
  /** h += norm(a)·w instead of h = norm(a)·w */
  residual: boolean;
}

export const NORM_WG = 64;

const DIMS = new DimsLayout([
  ['h', 'u32'],
  ['hf', 'f32'],
  ['eps', 'f32'],
  ['astr', 'u32'],
  ['hs', 'u32'],
] as const);

/** Dispatch M workgroups. Bindings: dims, a (read), nw (read), h (read_write). */
export function normKernel(s: NormShape): Kernel {
  const code = /* wgsl */ `
${DIMS.wgsl(0)}
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> nw: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;
const WG = ${NORM_WG}u;
var<workgroup> red: array<f32, ${NORM_WG}>;

@compute @workgroup_size(${NORM_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let m = wid.x;
  let H = d.h;
  let ab = m * d.astr;
  let hb = m * d.hs;
  var ss = 0.0;
  for (var k = t; k < H; k = k + WG) { let v = a[ab + k]; ss = ss + v * v; }
  red[t] = ss;
  workgroupBarrier();
  for (var w = WG / 2u; w > 0u; w = w / 2u) {
    if (t < w) { red[t] = red[t] + red[t + w]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(red[0] / d.hf + d.eps);
  for (var k = t; k < H; k = k + WG) {
    let v = a[ab + k] * inv * nw[k];
    ${s.residual ? 'h[hb + k] = h[hb + k] + v;' : 'h[hb + k] = v;'}
  }
}
`;
  return {
    label: `rmsnorm${s.residual ? ' +res' : ''}`,
    code,
    entry: 'main',
    bindings: ['dims', 'a', 'nw', 'h'],
    dims: DIMS.pack({ h: s.H, hf: s.H, eps: s.eps, astr: s.aStride, hs: s.hStride }),
  };
}
