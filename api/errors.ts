/**
 * The API's error vocabulary. Every 4xx (and the rare 5xx) leaves as
 * `{ "error": { "code", "message", "details" } }` (DESIGN.md section 6); details name the offending
 * field as a dotted path (`optim.batch`) so a user can fix the request without reading our code.
 */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import { errorCodes } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { rememberKnownFields, unknownFieldMessage } from './fieldSuggestions.js';

rememberKnownFields();

export interface ErrorDetail {
  /** Dotted path of the field (`optim.batch`, `webhook.url`); empty for the whole body. */
  path: string;
  message: string;
  /** Where the field lives: body, query, path or header. */
  in?: 'body' | 'query' | 'path' | 'header';
}

export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly details: ErrorDetail[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const notFound = (what: string, id: string, path?: string) =>
  new ApiError(404, 'not_found', `${what} ${JSON.stringify(id)} not found`, path ? [{ path, message: 'not found', in: 'path' }] : []);

export const invalid = (path: string, message: string, code = 'validation_failed') =>
  new ApiError(400, code, `${path}: ${message}`, [{ path, message, in: 'body' }]);

/** A reference in a well-formed body that names nothing the caller owns (dataset, job, checkpoint). */
export const unresolvable = (code: string, path: string, message: string) =>
  new ApiError(422, code, `${path}: ${message}`, [{ path, message, in: 'body' }]);

export const conflict = (code: string, message: string, details: ErrorDetail[] = []) => new ApiError(409, code, message, details);

export function errorBody(code: string, message: string, details: ErrorDetail[] = []) {
  return { error: { code, message, details } };
}

const TARGET_NAMES = { json: 'body', query: 'query', param: 'path', header: 'header', form: 'body', cookie: 'header' } as const;

/** zod issues → details; an unknown key becomes one detail per key so that each is named. */
export function issuesToDetails(issues: readonly z.core.$ZodIssue[], where: ErrorDetail['in'] = 'body'): ErrorDetail[] {
  const details: ErrorDetail[] = [];
  for (const issue of issues) {
    const base = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) details.push({ path: [...base, key].join('.'), message: unknownFieldMessage(issue.keys, key), in: where });
    } else {
      details.push({ path: base.join('.'), message: issue.message, in: where });
    }
  }
  return details;
}

/** The defaultHook of every OpenAPIHono router: a failed schema becomes a 400 naming each field. */
export function validationHook(
  result: { success: boolean; error?: { issues: readonly z.core.$ZodIssue[] }; target: keyof typeof TARGET_NAMES },
  c: Context,
) {
  if (result.success || !result.error) return;
  const failed = schemaFailed(result.error.issues, TARGET_NAMES[result.target] ?? 'body');
  return c.json(errorBody(failed.code, failed.message, failed.details), 400);
}

/** A failed schema as the 400 every route answers: each field named, the first in the message. */
export function schemaFailed(issues: readonly z.core.$ZodIssue[], where: NonNullable<ErrorDetail['in']>): ApiError {
  const details = issuesToDetails(issues, where);
  const first = details[0];
  return new ApiError(400, 'validation_failed', first ? `${first.path || where}: ${first.message}` : 'invalid request', details);
}

/** What Hono's JSON validator throws for a body that does not parse (errorAnswer turns it into `malformed_json`). */
export const malformedJson = () => new HTTPException(400, { message: 'Malformed JSON in request body' });

/** The status, headers and JSON body an error is answered with (shared by app.onError and the fast paths, api/fastPath.ts). */
export interface ErrorAnswer {
  status: ContentfulStatusCode;
  headers: Record<string, string>;
  body: ReturnType<typeof errorBody>;
}

/** Known errors keep their status; anything else is logged and answered 500 without internals. */
export function errorAnswer(err: Error, logger: Logger, request: { method: string; path: string }): ErrorAnswer {
  const answer = (status: ContentfulStatusCode, body: ErrorAnswer['body'], headers: Record<string, string> = {}) => ({ status, headers, body });
  if (err instanceof ApiError) return answer(err.status, errorBody(err.code, err.message, err.details), err.headers);
  if (err instanceof HTTPException) {
    const status = err.status;
    if (status === 413) return answer(413, errorBody('payload_too_large', 'request body too large'));
    if (status === 415) {
      return answer(
        415,
        errorBody('unsupported_media_type', 'send the body as application/json', [{ path: 'content-type', message: 'must be application/json', in: 'header' }]),
      );
    }
    if (status === 400 && /json/i.test(err.message)) {
      return answer(400, errorBody('malformed_json', 'request body is not valid JSON', [{ path: '', message: err.message, in: 'body' }]));
    }
    if (status < 500) return answer(status as ContentfulStatusCode, errorBody(httpCode(status), err.message));
  }
  if (isBackendUnavailable(err)) {
    // Postgres restarting, failing over or unreachable: nothing was applied; the client retries.
    logger.warn({ err: err.message, codes: errorCodes(err), path: request.path }, 'a backend is unavailable');
    return answer(503, errorBody('unavailable', 'a backend service is briefly unavailable; the request was not applied, retry it'), { 'Retry-After': '2' });
  }
  logger.error({ err, method: request.method, path: request.path }, 'unhandled error');
  return answer(500, errorBody('internal', 'internal error; the request was not applied or is safe to retry'));
}

/** app.onError: see {@link errorAnswer}. */
export function errorHandler(logger: Logger) {
  return (err: Error, c: Context) => {
    const { status, headers, body } = errorAnswer(err, logger, { method: c.req.method, path: c.req.path });
    for (const [k, v] of Object.entries(headers)) c.header(k, v);
    return c.json(body, status);
  };
}

/** Connection-level failures of Postgres (and the socket errors under them), and Redis calls past their deadline: the service, not the request. Also when wrapped (drizzle's DrizzleQueryError). */
const UNAVAILABLE_CODES = new Set(['REDIS_TIMEOUT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT', '57P01', '57P02', '57P03', '08000', '08001', '08003', '08006']);

export function isBackendUnavailable(err: unknown): boolean {
  return errorCodes(err).some((code) => UNAVAILABLE_CODES.has(code));
}

function httpCode(status: number): string {
  return ({ 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 405: 'method_not_allowed', 409: 'conflict' } as Record<number, string>)[status] ?? 'bad_request';
}
