/**
 * The live (SSE) streams this process holds open, so that none outlives its welcome (issue 10):
 *
 * - at most `maxPerTenant` at once per tenant (429 `too_many_streams` beyond, before anything is sent);
 * - each ends after `maxLifetimeMs` with `event: close` `{ reason: "max-lifetime" }` (clients
 *   reconnect with Last-Event-ID and lose nothing);
 * - the key that opened it is checked again every `recheckMs`: revoked (or deleted), the stream ends
 *   with `event: error` `{ code: "unauthorized" }`;
 * - on SIGTERM `closeAll()` ends every stream (`{ reason: "shutdown" }`) and refuses new ones (503),
 *   so the server can close its connections instead of waiting on streams that never end.
 */
import { ApiError } from './errors.js';
import type { KeyCache } from './auth/middleware.js';

export interface LiveStreamsOptions {
  maxPerTenant: number;
  maxLifetimeMs: number;
  recheckMs: number;
  keyCache: KeyCache;
}

export type StreamEnd = { event: 'close'; reason: 'max-lifetime' | 'shutdown' } | { event: 'error'; code: 'unauthorized'; message: string };

export class LiveStream {
  private readonly startedAt = Date.now();
  private checkedAt = Date.now();
  stopped: StreamEnd | undefined;

  constructor(
    private readonly owner: LiveStreams,
    readonly tenantId: string,
    private readonly secret: string,
  ) {}

  /** Why the stream must end now (checked once per poll), or undefined to go on. */
  async shouldEnd(): Promise<StreamEnd | undefined> {
    if (this.stopped) return this.stopped;
    const now = Date.now();
    if (now - this.startedAt >= this.owner.o.maxLifetimeMs) return (this.stopped = { event: 'close', reason: 'max-lifetime' });
    if (now - this.checkedAt >= this.owner.o.recheckMs) {
      this.checkedAt = now;
      const principal = await this.owner.o.keyCache.lookup(this.secret);
      if (!principal || principal.revoked) return (this.stopped = { event: 'error', code: 'unauthorized', message: 'API key revoked' });
    }
    return undefined;
  }

  release(): void {
    this.owner.release(this);
  }
}

export class LiveStreams {
  private readonly byTenant = new Map<string, Set<LiveStream>>();
  private closing = false;
  private drained: (() => void) | undefined;

  constructor(readonly o: LiveStreamsOptions) {}

  /** A slot for a new stream of `tenantId`, opened with the key `secret`; throws 429 at the cap, 503 when shutting down. */
  admit(tenantId: string, secret: string): LiveStream {
    if (this.closing) throw new ApiError(503, 'unavailable', 'the server is shutting down; reconnect to another replica', [], { 'Retry-After': '1' });
    const set = this.byTenant.get(tenantId) ?? new Set<LiveStream>();
    if (set.size >= this.o.maxPerTenant) {
      throw new ApiError(429, 'too_many_streams', `this tenant already has ${set.size} live streams open (at most ${this.o.maxPerTenant}); close one or poll without Accept: text/event-stream`, [], { 'Retry-After': '5' });
    }
    const live = new LiveStream(this, tenantId, secret);
    set.add(live);
    this.byTenant.set(tenantId, set);
    return live;
  }

  release(live: LiveStream): void {
    const set = this.byTenant.get(live.tenantId);
    set?.delete(live);
    if (set && !set.size) this.byTenant.delete(live.tenantId);
    if (this.closing && !this.count()) this.drained?.();
  }

  count(tenantId?: string): number {
    if (tenantId) return this.byTenant.get(tenantId)?.size ?? 0;
    let n = 0;
    for (const s of this.byTenant.values()) n += s.size;
    return n;
  }

  /** Ends every stream at its next poll and refuses new ones; resolves when all are gone (or after `timeoutMs`). */
  async closeAll(timeoutMs = 5000): Promise<void> {
    this.closing = true;
    for (const set of this.byTenant.values()) for (const live of set) live.stopped = { event: 'close', reason: 'shutdown' };
    if (!this.count()) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
