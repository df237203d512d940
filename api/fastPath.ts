/**
 * What the API's fast paths share (api/fastJobRead.ts, api/fastJobSubmit.ts): the Node request
 * listener's front, the test that a request's key certainly passes authentication, and the answer
 * with the headers the generic routes send.
 *
 * A fast path serves one frequent route on Node's own request and response, before
 * @hono/node-server and Hono, with the app's own pieces (key cache, rate limiter, histogram, error
 * answers). It takes only a request that will certainly pass authentication and the checks it can
 * make before touching anything; every other request goes to the generic route untouched, so the
 * auth guard, the key lookup and the 4xx answers of those checks stay in one place.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../common/logger.js';
import type { KeyPrincipal } from '../db/apiKeys.js';
import { bearerKey, type KeyCache } from './auth/middleware.js';
import { hashApiKey } from './auth/keys.js';
import { hasScope, type Scope } from './auth/scopes.js';
import type { RateLimiter, RateLimitState } from './middleware/rateLimit.js';

/** A Node request listener's front: true when it answered the request, false to hand it to the app. */
export type FastPath = (req: IncomingMessage, res: ServerResponse) => boolean;

/** The app's pieces a fast path uses: the same instances as the generic routes'. */
export interface FastPathDeps {
  logger: Logger;
  keyCache: KeyCache;
  limiter: RateLimiter;
  observe: (method: string, route: string, status: number, seconds: number) => void;
}

/** The first of `paths` that takes the request answers it. */
export function firstFastPath(...paths: FastPath[]): FastPath {
  return (req, res) => {
    for (const path of paths) if (path(req, res)) return true;
    return false;
  };
}

/**
 * The key's principal when the request certainly passes authentication and holds `scope`: a bearer
 * key that is valid in the key cache. Undefined otherwise (missing, unknown, uncached or revoked
 * key, missing scope): the generic route then authenticates it and answers.
 */
export function vouchedPrincipal(keyCache: KeyCache, headers: IncomingHttpHeaders, scope: Scope): KeyPrincipal | undefined {
  const authorization = headers.authorization;
  const key = authorization === undefined ? undefined : bearerKey(authorization);
  if (key === undefined) return undefined;
  const principal = keyCache.cachedValid(hashApiKey(key));
  return principal && hasScope(principal.scopes, scope) ? principal : undefined;
}

/**
 * Counts the request against its key's rate limit (one count per key whichever path serves it). A
 * promise only when Redis must be asked first: the caller awaits only then (no microtask per request).
 */
export function countRequest(deps: FastPathDeps, principal: KeyPrincipal): RateLimitState | Promise<RateLimitState> {
  deps.keyCache.touch(principal.keyId);
  return deps.limiter.hit(principal.keyId);
}

/** A JSON answer; every answer carries the RateLimit-* headers once the request was counted, as the generic routes' do. */
export function sendJson(res: ServerResponse, status: number, limit: RateLimitState | undefined, extra: Record<string, string>, body: string | Buffer): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string | number> = {};
  if (limit) {
    headers['RateLimit-Limit'] = limit.limit;
    headers['RateLimit-Remaining'] = limit.remaining;
    headers['RateLimit-Reset'] = limit.reset;
  }
  Object.assign(headers, extra);
  headers['content-type'] = 'application/json';
  headers['Content-Length'] = Buffer.byteLength(body);
  res.writeHead(status, headers);
  res.end(body);
}
