/** Text layer: tokenizers, chat templates, streaming detokenizer, generation_config. */
export * from './tokenizer.ts';
export * from './chat.ts';
export * from './detokenizer.ts';
export * from './generation-config.ts';
