/** Redis connections for BullMQ. A clear line when Redis cannot be reached, not a retry storm. */
import { Redis, type RedisOptions } from 'ioredis';
import { UserFacingError } from './errors.js';
import { redactUrl } from './config.js';
import { BULLMQ_CONNECTION_OPTIONS } from '../contracts/queues.js';

/** A connection BullMQ can block on (`maxRetriesPerRequest: null`). */
export function createRedis(url: string, extra: RedisOptions = {}): Redis {
  return new Redis(url, { ...BULLMQ_CONNECTION_OPTIONS, enableReadyCheck: true, ...extra });
}

/** Pings Redis once with a short timeout; throws a UserFacingError naming REDIS_URL. */
export async function checkRedis(url: string, timeoutMs = 3000): Promise<void> {
  const probe = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  probe.on('error', () => {}); // reported below, once
  try {
    await probe.connect();
    await probe.ping();
  } catch (err) {
    throw new UserFacingError(`cannot reach Redis at REDIS_URL=${redactUrl(url)}: ${(err as Error).message}`);
  } finally {
    probe.disconnect();
  }
}

/** A Redis call in a request's path that did not answer in time (a hung or overloaded Redis). */
export class RedisTimeoutError extends Error {
  override name = 'RedisTimeoutError';
  /** Counted as a backend being unavailable: the API answers 503 with Retry-After (api/errors.ts). */
  readonly code = 'REDIS_TIMEOUT';
}

/**
 * `p`, or a RedisTimeoutError after `ms`. The connection BullMQ shares cannot take ioredis's
 * commandTimeout (its workers block on duplicates of it for seconds on purpose), so the calls made
 * while a request waits carry their own deadline; the command itself is left to finish or fail.
 */
export function withRedisDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new RedisTimeoutError(`Redis did not answer ${what} within ${ms} ms`)), ms);
    p.then(
      (v) => (clearTimeout(timer), resolve(v)),
      (e) => (clearTimeout(timer), reject(e)),
    );
  });
}
