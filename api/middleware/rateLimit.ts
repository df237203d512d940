/**
 * Per-key rate limit: a fixed one-minute window counted in Redis, so that every replica shares the
 * budget. Over budget → 429 with Retry-After (seconds to the next window).
 *
 * A Redis round-trip per request was ~12 % of a submission's CPU (profile in BENCHMARKS.md), so each
 * process counts locally and sends its hits to Redis in batches: at most one INCRBY in flight per key,
 * carrying every hit since the previous one, and under a steady stream of requests no sooner than
 * `flushIntervalMs` after the previous one started (otherwise a busy key sent one INCRBY per Redis
 * round-trip, thousands a second: 8 % of a read's CPU). A hit that finds no flush running is sent at
 * once. A request is judged on `count Redis last returned + hits in flight + hits not yet sent`,
 * which within one process is the exact count (so a lone replica limits exactly, even under
 * concurrency), and across replicas lags the others' hits by at most one round-trip plus
 * `flushIntervalMs`. The first request of a window in a process waits for Redis, so a replica joining
 * mid-window starts from the shared count, not from zero.
 * If Redis fails or does not answer within `timeoutMs` (a hung Redis), the local count still limits
 * and requests are otherwise let through: a limiter must not take the API down, nor hold requests.
 */
import type { MiddlewareHandler } from 'hono';
import type { Redis } from 'ioredis';
import type { Logger } from '../../common/logger.js';
import { withRedisDeadline } from '../../common/redis.js';
import type { AppEnv } from '../deps.js';
import { ApiError } from '../errors.js';
import { setResponseHeader } from '../nodeHttp.js';

const WINDOW_MS = 60_000;
/** Keys tracked per process before the table is cleared (bounds memory; a cleared key re-reads Redis). */
const MAX_TRACKED_KEYS = 10_000;
const SCRIPT = `local n = redis.call('INCRBY', KEYS[1], ARGV[1]) if n == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return n`;

type LimitedRedis = Redis & { momentumRateLimitBy(key: string, hits: number, ttlMs: number): Promise<number> };

function withScript(redis: Redis): LimitedRedis {
  // defineCommand sends EVALSHA, falling back to EVAL once when Redis lacks the script.
  if (!('momentumRateLimitBy' in redis)) redis.defineCommand('momentumRateLimitBy', { numberOfKeys: 1, lua: SCRIPT });
  return redis as LimitedRedis;
}

/** One key's count in one window, as this process knows it. */
interface WindowCount {
  window: number;
  /** What Redis answered last: every replica's hits it had seen then. */
  shared: number;
  inFlight: number;
  unsent: number;
  /** Redis has answered (or failed) once in this window. */
  seeded: boolean;
  /** Set while a flush runs (all its rounds). */
  flushing: Promise<void> | undefined;
}

/** Least time between the starts of two rounds of one flush (hits meanwhile are counted locally and sent together). */
export const FLUSH_INTERVAL_MS = 20;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

export class SharedWindowCounter {
  private readonly counts = new Map<string, WindowCount>();
  private readonly redis: LimitedRedis;

  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly logger: Logger,
    private readonly timeoutMs = 1000,
    /** Waits between two rounds of a flush; `ms` is what is left of the interval. */
    private readonly pause: (ms: number) => Promise<void> = sleep,
    private readonly flushIntervalMs = FLUSH_INTERVAL_MS,
  ) {
    this.redis = withScript(redis);
  }

  /** Counts one hit for `keyId` in `window`; gives the count including it (a promise only when Redis must be asked first). */
  hit(keyId: string, window: number): number | Promise<number> {
    let c = this.counts.get(keyId);
    if (!c || c.window !== window) {
      if (!c && this.counts.size >= MAX_TRACKED_KEYS) this.counts.clear();
      c = { window, shared: 0, inFlight: 0, unsent: 0, seeded: false, flushing: undefined };
      this.counts.set(keyId, c);
    }
    c.unsent++;
    const local = c.shared + c.inFlight + c.unsent;
    if (c.flushing) return local; // the running flush sends this hit in its next round
    const firstRound = this.flush(keyId, c);
    if (c.seeded) return local;
    // First hit of the window here: the first round carries it, and Redis's answer is its count.
    return firstRound.then((answer) => answer ?? local);
  }

  /** Sends unsent hits until none are left; resolves to Redis's answer to the first round (undefined if it failed). */
  private flush(keyId: string, c: WindowCount): Promise<number | undefined> {
    const key = `${this.prefix}:ratelimit:${keyId}:${c.window}`;
    const round = async (): Promise<number | undefined> => {
      c.inFlight = c.unsent;
      c.unsent = 0;
      try {
        c.shared = Number(await withRedisDeadline(this.redis.momentumRateLimitBy(key, c.inFlight, WINDOW_MS * 2), this.timeoutMs, 'the rate limit count'));
        return c.shared;
      } catch (err) {
        // Keep the hits (they still count here); Redis learns of them with the next flush.
        c.unsent += c.inFlight;
        this.logger.warn({ err }, 'rate limiter unavailable; counting locally');
        return undefined;
      } finally {
        c.inFlight = 0;
        c.seeded = true;
      }
    };
    let startedAt = performance.now();
    const first = round();
    c.flushing = (async () => {
      if ((await first) === undefined) return; // Redis is failing: the next hit tries again
      while (c.unsent > 0) {
        const left = startedAt + this.flushIntervalMs - performance.now();
        if (left > 0) await this.pause(left);
        startedAt = performance.now();
        if ((await round()) === undefined) return;
      }
    })().finally(() => (c.flushing = undefined));
    return first;
  }
}

/** Where a key stands after one more request: the RateLimit-* headers, and whether it is over. */
export interface RateLimitState {
  limit: string;
  remaining: string;
  reset: string;
  /** The 429 to answer when over the limit. */
  exceeded: ApiError | undefined;
}

/**
 * The per-key limit of this process: one counter shared by the middleware below and the fast read
 * route (api/fastJobRead.ts), so that a key's requests count once whichever path serves them.
 */
export class RateLimiter {
  private readonly counter: SharedWindowCounter;
  private readonly limit: string;

  constructor(private readonly opts: { redis: Redis; prefix: string; perMinute: number; logger: Logger; timeoutMs?: number }) {
    this.counter = new SharedWindowCounter(opts.redis, opts.prefix, opts.logger, opts.timeoutMs);
    this.limit = String(opts.perMinute);
  }

  /** Counts one request of `keyId` (a promise only when Redis must be asked first). */
  hit(keyId: string): RateLimitState | Promise<RateLimitState> {
    const now = Date.now();
    const window = Math.floor(now / WINDOW_MS);
    const counted = this.counter.hit(keyId, window);
    return typeof counted === 'number' ? this.state(counted, window, now) : counted.then((count) => this.state(count, window, now));
  }

  private state(count: number, window: number, now: number): RateLimitState {
    const perMinute = this.opts.perMinute;
    const reset = Math.ceil(((window + 1) * WINDOW_MS - now) / 1000);
    const exceeded =
      count > perMinute
        ? new ApiError(429, 'rate_limited', `rate limit of ${perMinute} requests per minute exceeded for this API key; retry in ${reset} s`, [], {
            'Retry-After': String(reset),
          })
        : undefined;
    return { limit: this.limit, remaining: String(Math.max(0, perMinute - count)), reset: String(reset), exceeded };
  }
}

export function rateLimit(limiter: RateLimiter): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const counted = limiter.hit(c.get('principal').keyId);
    const state = counted instanceof Promise ? await counted : counted;
    // On Node's response directly: a Hono c.header() here would cost every request a Headers object (api/nodeHttp.ts).
    setResponseHeader(c, 'RateLimit-Limit', state.limit);
    setResponseHeader(c, 'RateLimit-Remaining', state.remaining);
    setResponseHeader(c, 'RateLimit-Reset', state.reset);
    if (state.exceeded) throw state.exceeded;
    await next();
  };
}
