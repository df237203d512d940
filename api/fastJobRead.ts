/**
 * `GET /v1/jobs/{id}` served on Node's request and response, before @hono/node-server and Hono
 * (the pieces every fast path shares: api/fastPath.ts).
 *
 * Why: the read is the API's most frequent request, and through the generic stack it cost ~150 µs
 * of CPU against ~65 µs for a bare Hono route (BENCHMARKS.md): the WHATWG Request and Response
 * objects of the Node adapter, Hono's router, context and middleware chain, the param validator,
 * prom-client's label lookup. Here the same steps run straight on Node's objects, with the app's
 * own instances: the key cache, the rate limiter (one count per key whichever path serves it), the
 * request histogram, the scope check, the tenant-scoped query and the error shapes.
 *
 * Only a request that will certainly succeed through authentication and validation is taken: a
 * well-formed id, no body, a valid key in the key cache holding `jobs:read`. Anything else (a
 * missing, unknown, expired-from-cache or revoked key, a missing scope, a malformed id, a body) is
 * left to the generic route before this path has done anything, so the auth guard, the key lookup
 * and every error answer stay in one place. Once taken, the request counts against the rate limit
 * and is answered here: 200, 404 (no such job in the key's tenant), 429 or a backend error, with
 * the bodies and headers the generic route sends (test/integration/api/fastJobRead.test.ts).
 */
import type { ServerResponse } from 'node:http';
import { z } from '@hono/zod-openapi';
import type { Sql } from '../db/client.js';
import { getTenantJobApiJson } from '../db/jobQueries.js';
import type { KeyPrincipal } from '../db/apiKeys.js';
import { errorAnswer, notFound } from './errors.js';
import { countRequest, sendJson, vouchedPrincipal, type FastPath, type FastPathDeps } from './fastPath.js';
import type { RateLimitState } from './middleware/rateLimit.js';

const PREFIX = '/v1/jobs/';
/** The route template the request histogram files these reads under (the generic route's `routePath`). */
export const JOB_READ_ROUTE = '/v1/jobs/:id';
/** The schema of the generic route's `id` param (api/openapi.ts JobIdParam), compiled once. */
const jobId = z.uuid();

export interface FastJobReadDeps extends FastPathDeps {
  sql: Sql;
}

export function fastJobRead(deps: FastJobReadDeps): FastPath {
  return (req, res) => {
    if (req.method !== 'GET') return false;
    const url = req.url ?? '';
    if (!url.startsWith(PREFIX)) return false;
    const query = url.indexOf('?');
    const id = url.slice(PREFIX.length, query === -1 ? undefined : query);
    // A path that needs decoding or more segments is the router's business, and so is a bad id (400).
    if (id.length !== 36 || !jobId.safeParse(id).success) return false;
    const headers = req.headers;
    if (headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined) return false;
    const principal = vouchedPrincipal(deps.keyCache, headers, 'jobs:read');
    if (!principal) return false;
    void answer(deps, principal, id, res, performance.now());
    return true;
  };
}

async function answer(deps: FastJobReadDeps, principal: KeyPrincipal, id: string, res: ServerResponse, start: number): Promise<void> {
  let status = 200;
  let limit: RateLimitState | undefined;
  try {
    const counted = countRequest(deps, principal);
    limit = counted instanceof Promise ? await counted : counted;
    if (limit.exceeded) throw limit.exceeded;
    const json = await getTenantJobApiJson(deps.sql, principal.tenantId, id);
    if (json === undefined) throw notFound('job', id, 'id');
    sendJson(res, 200, limit, {}, json);
  } catch (err) {
    const e = errorAnswer(err as Error, deps.logger, { method: 'GET', path: PREFIX + id });
    status = e.status;
    sendJson(res, status, limit, e.headers, JSON.stringify(e.body));
  } finally {
    deps.observe('GET', JOB_READ_ROUTE, status, (performance.now() - start) / 1000);
  }
}
