/**
 * Bearer authentication and scope checks. Key lookups are cached for a short time (1 s by default):
 * a submission then costs no database round-trip for auth, and a revoked key still stops working
 * within that second on every replica (this process drops its whole cache at once on a revoke).
 * A key not in the cache passes the AuthGuard (guard.ts) before it is looked up: a flood of bad keys
 * is refused with 429 instead of costing Postgres a query each.
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
import type { AuthGuard } from './guard.js';

const MAX_CACHED_KEYS = 10_000;
/** last_used_at is a hint for humans; writing it once a minute per key is plenty. */
const TOUCH_EVERY_MS = 60_000;

export class KeyCache {
  private readonly entries = new Map<string, { principal: KeyPrincipal | undefined; expires: number }>();
  private readonly touched = new Map<string, number>();
  /** One lookup per key in flight: requests arriving together when an entry expires share it. */
  private readonly inFlight = new Map<string, Promise<KeyPrincipal | undefined>>();
  /** Lookups that went to Postgres (exposed for tests and the flood figures). */
  dbLookups = 0;
  private generation = 0;

  constructor(
    private readonly db: Db,
    private readonly ttlMs: number,
    private readonly logger: Logger,
  ) {}

  /** Whether looking up the key of this hash ({@link hashApiKey}) costs nothing: a fresh cache entry, or a lookup already in flight. */
  isFree(hash: string): boolean {
    const hit = this.entries.get(hash);
    return (hit !== undefined && hit.expires > Date.now()) || this.inFlight.has(hash);
  }

  /** A valid key's principal when a fresh cache entry holds it (no lookup, no promise); otherwise undefined. */
  cachedValid(hash: string): KeyPrincipal | undefined {
    const hit = this.entries.get(hash);
    return hit !== undefined && hit.expires > Date.now() && hit.principal && !hit.principal.revoked ? hit.principal : undefined;
  }

  lookup(secret: string): Promise<KeyPrincipal | undefined> {
    return this.lookupHash(hashApiKey(secret));
  }

  /** {@link lookup} by the key's hash: a request that checked {@link isFree} first hashes the key once. */
  async lookupHash(hash: string): Promise<KeyPrincipal | undefined> {
    const hit = this.entries.get(hash);
    if (hit && hit.expires > Date.now()) return hit.principal;
    const pending = this.inFlight.get(hash);
    if (pending) return pending;
    const lookup: Promise<KeyPrincipal | undefined> = this.load(hash).finally(() => {
      if (this.inFlight.get(hash) === lookup) this.inFlight.delete(hash);
    });
    this.inFlight.set(hash, lookup);
    return lookup;
  }

  private async load(hash: string): Promise<KeyPrincipal | undefined> {
    const now = Date.now();
    const generation = this.generation;
    this.dbLookups++;
    const principal = await findKeyByHash(this.db, hash);
    // A revoke through this process while the query ran: its answer may predate the revoke.
    if (this.ttlMs > 0 && generation === this.generation) {
      // A full cache drops its oldest entry, not every entry: bad keys cannot flush the good ones.
      this.entries.delete(hash);
      if (this.entries.size >= MAX_CACHED_KEYS) this.entries.delete(this.entries.keys().next().value!);
      this.entries.set(hash, { principal, expires: now + this.ttlMs });
    }
    return principal;
  }

  /** Forget everything: called when a key is revoked through this process. */
  invalidate(): void {
    this.generation++;
    this.inFlight.clear();
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

/** The key of an `Authorization: Bearer <key>` header, or undefined when the header has another form. */
export function bearerKey(header: string): string | undefined {
  return /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
}

export function authenticate(cache: KeyCache, guard: AuthGuard): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const address = guard.clientAddress(c);
    const fail = (message: string) => {
      guard.recordFailure(address);
      return unauthorized(message);
    };
    // From Node's parsed headers when served by Node (api/nodeHttp.ts); Node keeps the first of duplicate Authorization headers.
    const header = requestHeader(c, 'authorization');
    if (!header) throw fail('missing Authorization header; send "Authorization: Bearer <api key>"');
    const key = bearerKey(header);
    if (!key) throw fail('Authorization must be "Bearer <api key>"');
    const hash = hashApiKey(key);
    // Only a key that would cost a Postgres query is judged by the guard first.
    if (!cache.isFree(hash)) guard.admitLookup(address);
    const principal = await cache.lookupHash(hash);
    if (!principal) throw fail('invalid API key');
    if (principal.revoked) throw fail('API key revoked');
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
