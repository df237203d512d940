/**
 * What stands between an unknown API key and Postgres. A key that is not cached costs a database
 * lookup, so before that lookup (issue 10):
 *
 * - failed authentications are counted per client address in a one-minute window; past
 *   `failuresPerMinute` that address gets 429 for keys it has not been seen to hold, without a
 *   lookup (a key still in the cache passes: it costs nothing);
 * - uncached lookups share a per-process token bucket of `lookupsPerSecond` (a burst of one second):
 *   a flood of bad keys from many addresses costs Postgres at most that many queries a second.
 *
 * Both are counted in this process only: they must not depend on Redis, and a replica's share of a
 * flood is what reaches its own pool. The tables are bounded; a full table drops its oldest entry.
 */
import type { Context } from 'hono';
import { ApiError } from '../errors.js';

const WINDOW_MS = 60_000;
const MAX_ADDRESSES = 50_000;

export interface AuthGuardOptions {
  failuresPerMinute: number;
  lookupsPerSecond: number;
  /** Take the client's address from X-Forwarded-For (its last entry): only behind a proxy that sets it. */
  trustProxy: boolean;
  now?: () => number;
}

export class AuthGuard {
  private readonly failures = new Map<string, { window: number; count: number }>();
  private tokens: number;
  private refilledAt: number;
  private readonly now: () => number;

  constructor(private readonly o: AuthGuardOptions) {
    this.now = o.now ?? Date.now;
    this.tokens = o.lookupsPerSecond;
    this.refilledAt = this.now();
  }

  /** The client's address: the socket's (Node server), or the proxy's report when trusted. */
  clientAddress(c: Context): string {
    if (this.o.trustProxy) {
      const forwarded = c.req.header('x-forwarded-for')?.split(',').at(-1)?.trim();
      if (forwarded) return forwarded;
    }
    const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined;
    return env?.incoming?.socket?.remoteAddress ?? 'unknown';
  }

  /** Throws 429 when this address may not cause another lookup now; otherwise takes a lookup token. */
  admitLookup(address: string): void {
    const now = this.now();
    const f = this.failures.get(address);
    if (f && f.window === Math.floor(now / WINDOW_MS) && f.count >= this.o.failuresPerMinute) {
      const retry = Math.ceil(((f.window + 1) * WINDOW_MS - now) / 1000);
      throw tooMany(`too many failed authentications from this address (${this.o.failuresPerMinute} a minute); retry in ${retry} s`, retry);
    }
    this.tokens = Math.min(this.o.lookupsPerSecond, this.tokens + ((now - this.refilledAt) / 1000) * this.o.lookupsPerSecond);
    this.refilledAt = now;
    if (this.tokens < 1) throw tooMany('too many API key lookups on this server right now; retry in 1 s', 1);
    this.tokens -= 1;
  }

  recordFailure(address: string): void {
    const window = Math.floor(this.now() / WINDOW_MS);
    const f = this.failures.get(address);
    if (f && f.window === window) {
      f.count++;
      return;
    }
    if (f) this.failures.delete(address); // re-inserted last: the map's order stays oldest first
    else if (this.failures.size >= MAX_ADDRESSES) this.failures.delete(this.failures.keys().next().value!);
    this.failures.set(address, { window, count: 1 });
  }
}

function tooMany(message: string, retryAfter: number): ApiError {
  return new ApiError(429, 'rate_limited', message, [{ path: 'authorization', message: 'authentication rate limited', in: 'header' }], {
    'Retry-After': String(retryAfter),
  });
}
