/**
 * Postgres is the source of truth, Redis only delivers. The reconciler finds jobs Postgres says are
 * waiting to run (`queued`/`requeued`, already dispatched from the outbox, unchanged for a grace
 * period) that BullMQ no longer holds (Redis flushed, restarted without persistence, a finished
 * copy left behind) and puts them back, with the same jobId.
 */
import type { Logger } from '../common/logger.js';
import type { Sql } from '../db/client.js';
import { OUTBOX_TOPICS } from '../contracts/outbox.js';
import { queueForJobType } from '../contracts/queues.js';
import type { JobType } from '../contracts/jobSpec.js';
import type { Queues } from './deps.js';
import { enqueueRun } from './dispatcher.js';

export interface ReconcilerOptions {
  sql: Sql;
  queues: Queues;
  logger: Logger;
  intervalMs?: number;
  /** Jobs younger than this (since their last change) are left alone: the dispatcher may be on them. */
  graceMs?: number;
  batchSize?: number;
}

export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly o: ReconcilerOptions) {}

  start(): void {
    const tick = () => {
      this.running = this.reconcileOnce()
        .catch((err) => this.o.logger.error({ err }, 'reconciler pass failed'))
        .finally(() => {
          this.running = undefined;
          if (this.timer) this.timer = setTimeout(tick, this.o.intervalMs ?? 30_000);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass; returns the ids it re-enqueued. */
  async reconcileOnce(): Promise<string[]> {
    const graceMs = this.o.graceMs ?? 10_000;
    const candidates = await this.o.sql<{ id: string; tenant_id: string; type: JobType }[]>`
      select j.id, j.tenant_id, j.type from jobs j
      where j.state in ('queued', 'requeued')
        and j.updated_at < now() - make_interval(secs => ${graceMs / 1000})
        and not exists (
          select 1 from outbox o
          where o.dispatched_at is null and o.topic = ${OUTBOX_TOPICS.enqueue} and o.payload->>'jobId' = j.id::text)
      order by j.updated_at
      limit ${this.o.batchSize ?? 1000}`;
    const requeued: string[] = [];
    for (const job of candidates) {
      const outcome = await enqueueRun(this.o.queues[queueForJobType(job.type)], { jobId: job.id, tenantId: job.tenant_id, type: job.type });
      if (outcome === 'added') requeued.push(job.id);
    }
    if (requeued.length) this.o.logger.warn({ count: requeued.length, jobIds: requeued.slice(0, 20) }, 're-enqueued jobs that BullMQ had lost');
    return requeued;
  }
}
