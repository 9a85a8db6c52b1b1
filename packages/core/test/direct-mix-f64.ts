/**
 * The direct mixture of one step, in float64 (README, "Mixture of Inputs, exactly"): candidates =
 * the top-20 of the logits (ties: the lower id) plus y if outside; w = softmax over them; the input
 * is Σ w_i E[i] (E [V, H] row-major) times the model's embedding scale. The independent reference
 * the GPU plan's direct mode is teacher-forced against (core's plan test and the engine's).
 */
export function directMixF64(
  logits: number[],
  y: number,
  E: Float32Array,
  H: number,
  embedScale: number | null | undefined,
): Float32Array {
  const order = logits
    .map((x, i) => [x, i])
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, 20)
    .map(([, i]) => i);
  if (!order.includes(y)) order.push(y);
  const top = Math.max(...order.map((i) => logits[i]));
  const e = order.map((i) => Math.exp(logits[i] - top));
  const z = e.reduce((a, b) => a + b, 0);
  const out = new Float64Array(H);
  order.forEach((id, j) => {
    for (let k = 0; k < H; k++) out[k] += (e[j] / z) * E[id * H + k];
  });
  return Float32Array.from(out, (v) => v * (embedScale ?? 1));
}
