/** Sampling: parameters, seeded RNG, logits processors and the batched on-device sampler. */
export * from './params.ts';
export * from './rng.ts';
export * from './processors.ts';
export * from './sampler.ts';
