/**
 * Bearer authentication and scope checks. Key lookups are cached for a short time (1 s by default):
 * a submission then costs no database round-trip for auth, and a revoked key still stops working
 * within that second on every replica (this process drops its whole cache at once on a revoke).
 */
import type { MiddlewareHandler } from 'hono';
import type { Db } from '../../db/client.js';
import { findKeyByHash, touchApiKey, type KeyPrincipal } from '../../db/apiKeys.js';
import { ApiError } from '../errors.js';
import type { AppEnv } from '../deps.js';
import type { Logger } from '../../common/logger.js';
import { hashApiKey } from './keys.js';
import { requestHeader } from '../nodeHttp.js';
import { hasScope, type Scope } from './scopes.js';

const MAX_CACHED_KEYS = 10_000;
/** last_used_at is a hint for humans; writing it once a minute per key is plenty. */
const TOUCH_EVERY_MS = 60_000;

export class KeyCache {
  private readonly entries = new Map<string, { principal: KeyPrincipal | undefined; expires: number }>();
  private readonly touched = new Map<string, number>();

  constructor(
    private readonly db: Db,
    private readonly ttlMs: number,
    private readonly logger: Logger,
  ) {}

  async lookup(secret: string): Promise<KeyPrincipal | undefined> {
    const hash = hashApiKey(secret);
    const now = Date.now();
    const hit = this.entries.get(hash);
    if (hit && hit.expires > now) return hit.principal;
    const principal = await findKeyByHash(this.db, hash);
    if (this.ttlMs > 0) {
      if (this.entries.size >= MAX_CACHED_KEYS) this.entries.clear();
      this.entries.set(hash, { principal, expires: now + this.ttlMs });
    }
    return principal;
  }

  /** Forget everything: called when a key is revoked through this process. */
  invalidate(): void {
    this.entries.clear();
  }

  touch(keyId: string): void {
    const now = Date.now();
    if ((this.touched.get(keyId) ?? 0) + TOUCH_EVERY_MS > now) return;
    if (this.touched.size >= MAX_CACHED_KEYS) this.touched.clear();
    this.touched.set(keyId, now);
    touchApiKey(this.db, keyId).catch((err) => this.logger.warn({ err, keyId }, 'could not record key use'));
  }
}

const unauthorized = (message: string) =>
  new ApiError(401, 'unauthorized', message, [{ path: 'authorization', message, in: 'header' }], {
    'WWW-Authenticate': 'Bearer realm="momentum"',
  });

export function authenticate(cache: KeyCache): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    // From Node's parsed headers when served by Node (api/nodeHttp.ts); Node keeps the first of duplicate Authorization headers.
    const header = requestHeader(c, 'authorization');
    if (!header) throw unauthorized('missing Authorization header; send "Authorization: Bearer <api key>"');
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) throw unauthorized('Authorization must be "Bearer <api key>"');
    const principal = await cache.lookup(match[1]!);
    if (!principal) throw unauthorized('invalid API key');
    if (principal.revoked) throw unauthorized('API key revoked');
    c.set('principal', principal);
    cache.touch(principal.keyId);
    await next();
  };
}

/** Route middleware: 403 unless the key holds `scope` (or admin). */
export function requireScope(scope: Scope): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const { scopes } = c.get('principal');
    if (!hasScope(scopes, scope)) {
      throw new ApiError(403, 'forbidden', `this API key lacks the "${scope}" scope`, [
        { path: 'authorization', message: `needs scope ${scope}`, in: 'header' },
      ]);
    }
    await next();
  };
}
