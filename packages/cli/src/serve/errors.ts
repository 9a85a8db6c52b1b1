/** OpenAI-shaped errors: `{"error": {message, type, param, code}}` with the HTTP status. */
import { MoiError, UsageError } from '@moi/core';
import type { ZodError } from 'zod';

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null, readonly type = typeFor(status)) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: number } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.status } };
  }
}

function typeFor(status: number): string {
  switch (status) {
    case 400: return 'BadRequestError';
    case 401: return 'AuthenticationError';
    case 404: return 'NotFoundError';
    case 413: return 'RequestTooLargeError';
    case 429: return 'RateLimitError';
    case 503: return 'ServiceUnavailableError';
    default: return 'InternalServerError';
  }
}

/** A zod failure: 400 naming the first bad field. */
export function fromZod(e: ZodError): ApiError {
  const issue = e.issues[0];
  const param = issue.path.length ? issue.path.join('.') : null;
  return new ApiError(400, `${param ?? 'body'}: ${issue.message}`, param);
}

/** Engine errors: a bad request (E_REQUEST, E_CONTEXT, E_MOI, ...) is a 400, a full queue a 429, others 500. */
export function fromEngine(e: unknown, param: string | null = null): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof MoiError) {
    if (e.code === 'E_QUEUE_FULL') return new ApiError(429, e.message);
    if (e.code === 'E_CLOSED') return new ApiError(503, 'the server is shutting down');
    if (e.code === 'E_NONFINITE' || e.code === 'E_INTERNAL') return new ApiError(500, e.message);
    if (e instanceof UsageError) {
      const p = e.code === 'E_CONTEXT' ? param ?? 'messages' : e.code === 'E_MOI' ? 'moi_mode' : param;
      return new ApiError(400, e.message, p);
    }
    return new ApiError(500, e.message);
  }
  return new ApiError(500, `internal error: ${e instanceof Error ? e.message : String(e)}`);
}
