/**
 * Typed errors. Every failure a user can cause (bad file, bad config, bad request) is a
 * MoiError subclass with a stable `code` and a message that names the file, tensor or field.
 */
export class MoiError extends Error {
  readonly code: string;
  /**
   * Where a bad request value was, as its path in a GenerateRequest (`sampling.topP`,
   * `mix.soft.gumbelTau`, `maxTokens`), so that a server can name its own field for it.
   */
  readonly field?: string;
  constructor(code: string, message: string, options?: { cause?: unknown; field?: string }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
    if (options?.field !== undefined) this.field = options.field;
  }
}

/** A safetensors file or index is malformed (names the file and, where known, the tensor). */
export class SafetensorsError extends MoiError {
  readonly file: string;
  readonly tensor?: string;
  constructor(code: string, file: string, message: string, tensor?: string) {
    super(code, `${file}${tensor ? ` [${tensor}]` : ''}: ${message}`);
    this.file = file;
    this.tensor = tensor;
  }
}

/** A requested backend cannot start, or none can. */
export class BackendError extends MoiError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_BACKEND', message, options);
  }
}

/** A model folder, config or checkpoint does not fit what the graph needs. */
export class ModelError extends MoiError {}

/** A caller passed an invalid option or request (bad flag, bad sampling value, context overflow). */
export class UsageError extends MoiError {}
