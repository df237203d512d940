/**
 * Per-key rate limit: a fixed one-minute window counted in Redis (one small Lua script: INCR, and
 * PEXPIRE on the first hit; one command per request, measured cheaper than MULTI/EXEC),
 * so that every replica shares the budget. Over budget → 429 with Retry-After (seconds to the next
 * window). If Redis fails, requests are let through: a limiter must not take the API down.
 */
import type { MiddlewareHandler } from 'hono';
import type { Redis } from 'ioredis';
import type { Logger } from '../../common/logger.js';
import type { AppEnv } from '../deps.js';
import { ApiError } from '../errors.js';

const WINDOW_MS = 60_000;
const SCRIPT = `local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n`;

type LimitedRedis = Redis & { momentumRateLimit(key: string, ttlMs: number): Promise<number> };

function withScript(redis: Redis): LimitedRedis {
  // defineCommand sends EVALSHA, falling back to EVAL once when Redis lacks the script.
  if (!('momentumRateLimit' in redis)) redis.defineCommand('momentumRateLimit', { numberOfKeys: 1, lua: SCRIPT });
  return redis as LimitedRedis;
}

export function rateLimit(opts: { redis: Redis; prefix: string; perMinute: number; logger: Logger }): MiddlewareHandler<AppEnv> {
  const redis = withScript(opts.redis);
  return async (c, next) => {
    const { keyId } = c.get('principal');
    const now = Date.now();
    const window = Math.floor(now / WINDOW_MS);
    const key = `${opts.prefix}:ratelimit:${keyId}:${window}`;
    let count = 0;
    try {
      count = Number(await redis.momentumRateLimit(key, WINDOW_MS * 2));
    } catch (err) {
      opts.logger.warn({ err }, 'rate limiter unavailable; letting the request through');
    }
    const remaining = Math.max(0, opts.perMinute - count);
    const reset = Math.ceil(((window + 1) * WINDOW_MS - now) / 1000);
    c.header('RateLimit-Limit', String(opts.perMinute));
    c.header('RateLimit-Remaining', String(remaining));
    c.header('RateLimit-Reset', String(reset));
    if (count > opts.perMinute) {
      throw new ApiError(429, 'rate_limited', `rate limit of ${opts.perMinute} requests per minute exceeded for this API key; retry in ${reset} s`, [], {
        'Retry-After': String(reset),
      });
    }
    await next();
  };
}
