export * from './errors.ts';
export * from './paths.ts';
export * from './safetensors.ts';
export * from './backend.ts';
export * from './nn.ts';
export * from './kernels/index.ts';
export * from './vocab-blocks.ts';
export * from './embed-source.ts';
