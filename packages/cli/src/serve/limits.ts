/**
 * The server's per-request work limits (flags --max-prompt-chars, --max-list-items), in a module
 * of their own so that the CLI's option list reads them without loading fastify.
 *
 * vLLM bounds a request by tokens only, after tokenizing it; these bound the work before that:
 * 1 Mi characters is about 250k tokens of English, far past any context served here, and 2048
 * list items is OpenAI's own cap on a prompt (or input) array.
 */
export const DEFAULT_MAX_PROMPT_CHARS = 1 << 20;
export const DEFAULT_MAX_LIST_ITEMS = 2048;
