/**
 * `POST /v1/jobs` served on Node's request and response, before @hono/node-server and Hono (the
 * pieces every fast path shares: api/fastPath.ts).
 *
 * Why: submission is the API's busiest write, and the generic stack around it (the WHATWG Request
 * and Response of the Node adapter, Hono's router, context and middleware chain, the header and
 * body validator middleware) cost a fifth of the API's CPU per submission (BENCHMARKS.md). The
 * steps are the generic route's, in its order, with its own code: body read under the body limit,
 * rate limit, the `Idempotency-Key` header schema, JSON parse, the job spec schema, `submitJob`
 * (api/jobSubmission.ts) and the error answers (api/errors.ts).
 *
 * Taken only when nothing before the body can fail: exactly `/v1/jobs`, a JSON body of declared
 * length within the body limit (not chunked), a well-formed `Idempotency-Key` when there is one,
 * and a valid key in the key cache holding `jobs:write`. Everything else goes to the generic route
 * untouched. Once taken, the request is answered here: 201 (new or replayed), 400 (malformed JSON,
 * a field of the spec), 409, 422, 429 or a backend error, with the generic route's bodies and
 * headers (test/integration/api/fastJobSubmit.test.ts compares both paths case by case).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KeyPrincipal } from '../db/apiKeys.js';
import { jobSpec } from '../contracts/jobSpec.js';
import type { AppDeps } from './deps.js';
import { errorAnswer, malformedJson, schemaFailed } from './errors.js';
import { countRequest, sendJson, vouchedPrincipal, type FastPath, type FastPathDeps } from './fastPath.js';
import { submitJob } from './jobSubmission.js';
import { readBodyText } from './middleware/bodyLimit.js';
import type { RateLimitState } from './middleware/rateLimit.js';
import { idempotencyKeyHeader } from './openapi.js';

const PATH = '/v1/jobs';
/** The generic route accepts any JSON media type; this path takes the common spellings only. */
const JSON_CONTENT_TYPE = /^application\/json(;\s*charset=utf-8)?$/i;
/** The generic route's header schema (api/routes/jobs.ts), compiled once. */
const idempotencyHeader = idempotencyKeyHeader();

export interface FastJobSubmitDeps extends FastPathDeps {
  app: AppDeps;
  maxBodyBytes: number;
}

export function fastJobSubmit(deps: FastJobSubmitDeps): FastPath {
  return (req, res) => {
    if (req.method !== 'POST' || req.url !== PATH) return false;
    const headers = req.headers;
    const contentType = headers['content-type'];
    if (contentType === undefined || !JSON_CONTENT_TYPE.test(contentType)) return false;
    // Declared (so not chunked: Node refuses a request with both) and within the limit: the generic route's 413 cannot happen here.
    const length = Number(headers['content-length']);
    if (!Number.isInteger(length) || length > deps.maxBodyBytes) return false;
    const idempotencyKey = headers['idempotency-key'];
    if (Array.isArray(idempotencyKey)) return false;
    if (idempotencyKey !== undefined && !idempotencyHeader.safeParse({ 'idempotency-key': idempotencyKey }).success) return false;
    const principal = vouchedPrincipal(deps.keyCache, headers, 'jobs:write');
    if (!principal) return false;
    void answer(deps, principal, idempotencyKey, req, res, performance.now());
    return true;
  };
}

async function answer(
  deps: FastJobSubmitDeps,
  principal: KeyPrincipal,
  idempotencyKey: string | undefined,
  req: IncomingMessage,
  res: ServerResponse,
  start: number,
): Promise<void> {
  let status = 201;
  let limit: RateLimitState | undefined;
  try {
    // The generic route reads the body first too (its body limit runs before authentication).
    const text = await readBodyText(req, deps.maxBodyBytes);
    const counted = countRequest(deps, principal);
    limit = counted instanceof Promise ? await counted : counted;
    if (limit.exceeded) throw limit.exceeded;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw malformedJson();
    }
    const spec = jobSpec.safeParse(body);
    if (!spec.success) throw schemaFailed(spec.error.issues, 'body');
    const submitted = await submitJob(deps.app, spec.data, { tenantId: principal.tenantId, idempotencyKey, operation: 'submit' });
    const extra: Record<string, string> = submitted.replayed ? { 'Idempotent-Replayed': 'true' } : {};
    extra.Location = `/v1/jobs/${submitted.jobId}`;
    sendJson(res, 201, limit, extra, submitted.json);
  } catch (err) {
    const e = errorAnswer(err as Error, deps.logger, { method: 'POST', path: PATH });
    status = e.status;
    sendJson(res, status, limit, e.headers, JSON.stringify(e.body));
  } finally {
    deps.observe('POST', PATH, status, (performance.now() - start) / 1000);
  }
}
