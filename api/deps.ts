/**
 * What the app needs from the outside world, passed in so that a test builds an app against its own
 * database, bucket and queue prefix, and a server builds one against the configured services.
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../common/config.js';
import type { Logger } from '../common/logger.js';
import type { Storage } from '../common/storage.js';
import type { Db, Sql } from '../db/client.js';
import { QUEUES, type QueueName } from '../contracts/queues.js';
import type { KeyPrincipal } from '../db/apiKeys.js';

export interface Clock {
  now(): Date;
}
export const systemClock: Clock = { now: () => new Date() };

export type Queues = Record<QueueName, Queue>;

export interface AppDeps {
  config: Config;
  /** drizzle over `sql`: both share one pool; hot paths use `sql` directly for prepared statements. */
  db: Db;
  sql: Sql;
  storage: Storage;
  /** A non-blocking connection: rate limits, queue reads. */
  redis: Redis;
  queues: Queues;
  logger: Logger;
  clock?: Clock;
  /** Called after a request committed outbox rows: lets an in-process dispatcher move them at once. */
  onOutboxWritten?: () => void;
  /** Webhook signing root (see api/webhooks/signing.ts); defaults to WEBHOOK_SIGNING_KEY. */
  webhookSigningKey?: string;
  /** How long an authenticated key stays cached; revocation takes effect within this. Default 1000 ms. */
  authCacheMs?: number;
  /**
   * How long a count of a tenant's active jobs lets later submissions skip counting while the tenant
   * is clearly below TENANT_MAX_ACTIVE_JOBS (api/quotas.ts ActiveJobCounts). Default 1000 ms; 0: count every time.
   */
  quotaCountMs?: number;
  /** How often the SSE stream polls for new events. Default 500 ms. */
  ssePollMs?: number;
  /**
   * Aborted when the process starts shutting down (api/server.ts): /readyz answers 503 `draining`
   * on connections that are still open (live streams are ended by liveStreams.closeAll()).
   */
  draining?: AbortSignal;
  /** How often a live stream re-checks the key that opened it (revoked: the stream ends). Default 5000 ms. */
  sseRecheckMs?: number;
}

/** The queues this deployment uses, all under the configured prefix, sharing one connection. */
export function createQueues(config: Config, connection: Redis): Queues {
  const make = (name: QueueName) => new Queue(name, { connection, prefix: config.QUEUE_PREFIX });
  return { train: make(QUEUES.train), ingest: make(QUEUES.ingest), webhooks: make(QUEUES.webhooks) };
}

export async function closeQueues(queues: Queues): Promise<void> {
  await Promise.all(Object.values(queues).map((q) => q.close()));
}

/** Per-request values set by middleware. */
export interface AppEnv {
  Variables: {
    principal: KeyPrincipal;
  };
}
