/**
 * Counts of our own kernels dispatched, per kernel name, for the bench (kernels per decode step
 * next to tfjs's own profile). Counting costs one map update per call.
 */
const counts = new Map<string, number>();

export function countDispatch(name: string): void {
  counts.set(name, (counts.get(name) ?? 0) + 1);
}

/** Dispatches per kernel name since the last reset. */
export function kernelDispatches(): Record<string, number> {
  return Object.fromEntries(counts);
}

export function resetKernelDispatches(): void {
  counts.clear();
}
