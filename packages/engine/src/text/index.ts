/** Text layer: tokenizers, chat templates, streaming detokenizer, generation_config. */
export * from './tokenizer.ts';
export * from './chat.ts';
export * from './prompt.ts';
export * from './token-text.ts';
export * from './detokenizer.ts';
export * from './generation-config.ts';
