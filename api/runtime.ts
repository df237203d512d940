/**
 * Wiring for a real process: connections from the configuration, the app, and the background
 * services (outbox dispatcher, reconciler, webhook delivery worker), each of which can run alone.
 */
import type { Worker } from 'bullmq';
import type { Config } from '../common/config.js';
import type { Logger } from '../common/logger.js';
import { createRedis } from '../common/redis.js';
import { Storage, storageConfigFrom } from '../common/storage.js';
import { connectDatabase, type Database } from '../db/client.js';
import { closeQueues, createQueues, systemClock, type AppDeps } from './deps.js';
import { OutboxDispatcher } from './dispatcher.js';
import { Reconciler } from './reconciler.js';
import { SweepDriver } from './sweeps/driver.js';
import { UploadSweeper } from './uploadSweeper.js';
import { createWebhookWorker } from './webhooks/worker.js';

export const ROLES = ['http', 'dispatcher', 'reconciler', 'webhooks', 'sweeps'] as const;
export type Role = (typeof ROLES)[number];

export interface Runtime {
  deps: AppDeps;
  database: Database;
  close(): Promise<void>;
}

export function connect(config: Config, logger: Logger, signingKey: string): Runtime {
  const database = connectDatabase(config.DATABASE_URL, { max: config.DATABASE_POOL_MAX });
  const redis = createRedis(config.REDIS_URL);
  redis.on('error', (err) => logger.warn({ err: err.message }, 'redis connection error'));
  const storage = new Storage(storageConfigFrom(config));
  const queues = createQueues(config, redis);
  const deps: AppDeps = {
    config,
    db: database.db,
    sql: database.sql,
    storage,
    redis,
    queues,
    logger,
    clock: systemClock,
    webhookSigningKey: signingKey,
  };
  return {
    deps,
    database,
    async close() {
      await closeQueues(queues);
      await redis.quit().catch(() => redis.disconnect());
      storage.destroy();
      await database.close();
    },
  };
}

export interface Background {
  dispatcher?: OutboxDispatcher;
  reconciler?: Reconciler;
  webhookWorker?: Worker;
  sweepDriver?: SweepDriver;
  uploadSweeper?: UploadSweeper;
  stop(): Promise<void>;
}

export function startBackground(deps: AppDeps, roles: ReadonlySet<Role>): Background {
  const bg: Background = {
    async stop() {
      await Promise.all([bg.dispatcher?.stop(), bg.reconciler?.stop(), bg.webhookWorker?.close(), bg.sweepDriver?.stop(), bg.uploadSweeper?.stop()]);
    },
  };
  if (roles.has('dispatcher')) {
    bg.dispatcher = new OutboxDispatcher({ sql: deps.sql, queues: deps.queues, logger: deps.logger.child({ component: 'dispatcher' }) });
    bg.dispatcher.start();
    // Requests in this process wake it at once: dispatch latency is then one Redis write, not a poll.
    deps.onOutboxWritten = () => bg.dispatcher!.wake();
  }
  if (roles.has('reconciler')) {
    bg.reconciler = new Reconciler({
      sql: deps.sql,
      db: deps.db,
      queues: deps.queues,
      logger: deps.logger.child({ component: 'reconciler' }),
      // A runner renews its lock every RUNNER_LOCK_MS/2; two lock periods without a live queue job is a lost run.
      staleRunMs: deps.config.RUNNER_LOCK_MS * 2,
    });
    bg.reconciler.start();
    // Dataset uploads nobody finalized: closed after their deadline, multipart uploads aborted.
    bg.uploadSweeper = new UploadSweeper({ db: deps.db, storage: deps.storage, logger: deps.logger.child({ component: 'uploads' }) });
    bg.uploadSweeper.start();
  }
  if (roles.has('sweeps')) {
    // Submits each sweep's next jobs and probes as earlier ones finish (api/sweeps/driver.ts).
    bg.sweepDriver = new SweepDriver({ deps, logger: deps.logger.child({ component: 'sweeps' }) });
    bg.sweepDriver.start();
  }
  if (roles.has('webhooks')) {
    bg.webhookWorker = createWebhookWorker({
      sql: deps.sql,
      connection: deps.redis,
      prefix: deps.config.QUEUE_PREFIX,
      logger: deps.logger.child({ component: 'webhooks' }),
      signingKey: deps.webhookSigningKey!,
      allowPrivate: deps.config.WEBHOOK_ALLOW_PRIVATE,
    });
  }
  return bg;
}
