/** OpenAI-shaped errors: `{"error": {message, type, param, code}}` with the HTTP status. */
import { MoiError, UsageError } from '@moi/core';
import { serverFieldOf, type Endpoint } from '@moi/engine';
import type { ZodError } from 'zod';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly type = typeFor(status),
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: number } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.status } };
  }
}

function typeFor(status: number): string {
  switch (status) {
    case 400:
      return 'BadRequestError';
    case 401:
      return 'AuthenticationError';
    case 404:
      return 'NotFoundError';
    case 405:
      return 'MethodNotAllowedError';
    case 413:
      return 'RequestTooLargeError';
    case 415:
      return 'UnsupportedMediaTypeError';
    case 429:
      return 'RateLimitError';
    case 503:
      return 'ServiceUnavailableError';
    default:
      return 'InternalServerError';
  }
}

/** A zod failure: 400 naming the first bad field (a settings-table field's message names it already). */
export function fromZod(e: ZodError): ApiError {
  const issue = e.issues[0];
  const param = issue.path.length ? issue.path.join('.') : null;
  const named = param !== null && issue.message.startsWith(`${param} `);
  return new ApiError(400, named ? issue.message : `${param ?? 'body'}: ${issue.message}`, param);
}

/** Request paths outside the settings table that an engine error may name, as request fields. */
const OTHER_FIELDS: Record<string, string> = { stopTokenIds: 'stop_token_ids' };

/**
 * Engine errors: a bad request (E_REQUEST, E_CONTEXT, E_MOI, ...) is a 400 whose param is the
 * field the error names (its request path, as this endpoint calls it; else `param`), a full queue
 * a 429, others 500.
 */
export function fromEngine(e: unknown, param: string | null = null, endpoint?: Endpoint): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof MoiError) {
    if (e.code === 'E_QUEUE_FULL') return new ApiError(429, e.message);
    if (e.code === 'E_CLOSED') return new ApiError(503, 'the server is shutting down');
    if (e.code === 'E_NONFINITE' || e.code === 'E_INTERNAL') return new ApiError(500, e.message);
    if (e instanceof UsageError) {
      const named =
        (endpoint && serverFieldOf(e.field, endpoint)) ?? (e.field !== undefined ? OTHER_FIELDS[e.field] : undefined);
      const p = named ?? (e.code === 'E_CONTEXT' ? (param ?? 'messages') : e.code === 'E_MOI' ? 'moi_mode' : param);
      return new ApiError(400, e.message, p);
    }
    return new ApiError(500, e.message);
  }
  return new ApiError(500, `internal error: ${e instanceof Error ? e.message : String(e)}`);
}
