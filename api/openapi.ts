/** Shared OpenAPI pieces: the error shape, common responses, security, and small schema helpers. */
import { OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from './deps.js';
import { validationHook } from './errors.js';

export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'validation_failed' }),
      message: z.string().openapi({ example: 'optim.batch: Too small: expected number to be >=2' }),
      details: z.array(
        z.object({
          path: z.string().openapi({ example: 'optim.batch' }),
          message: z.string(),
          in: z.enum(['body', 'query', 'path', 'header']).optional(),
        }),
      ),
    }),
  })
  .openapi('Error');

const err = (description: string) => ({ description, content: { 'application/json': { schema: ErrorSchema } } });

/** The failures every authenticated route can answer. */
export const commonErrors = {
  400: err('Invalid request: malformed JSON, wrong type, unknown field, out-of-range value'),
  401: err('Missing, invalid or revoked API key'),
  403: err('The API key lacks the scope'),
  429: err('Rate limit exceeded; see Retry-After'),
} as const;
export const notFoundError = { 404: err('Not found in this tenant') } as const;
export const conflictError = { 409: err('Conflicts with the current state') } as const;
export const unprocessableError = { 422: err('A reference in the body names nothing in this tenant') } as const;
export const uploadMismatchError = { 422: err('The uploaded archive is not the size the version declared (upload_size_mismatch)') } as const;
export const unavailableError = { 503: err('A backing service (Postgres, Redis) did not answer in time; see Retry-After') } as const;

export const security = [{ bearer: [] }];

export function json<T extends z.ZodType>(schema: T, description = 'OK') {
  return { description, content: { 'application/json': { schema } } };
}
/** The `Idempotency-Key` request header of the submitting routes (jobs, sweeps, retrains). */
export function idempotencyKeyHeader(description?: string) {
  return z.object({
    'idempotency-key': z
      .string()
      .min(1)
      .max(255)
      .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
      .optional()
      .openapi({ param: { name: 'idempotency-key', in: 'header' }, ...(description ? { description } : {}) }),
  });
}

export function jsonBody<T extends z.ZodType>(schema: T) {
  return { required: true, content: { 'application/json': { schema } } };
}

export const JobIdParam = z.object({
  id: z.uuid().openapi({ param: { name: 'id', in: 'path' }, example: '0b5c4f8e-5d5a-4c53-9d1e-0d6f6a8e2b11' }),
});

/** A router whose schema failures answer in the DESIGN section 6 shape. */
export function router() {
  return new OpenAPIHono<AppEnv>({ defaultHook: validationHook as never });
}

export const Json = z.record(z.string(), z.unknown());
