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
