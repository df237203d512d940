/**
 * Postgres is the source of truth, Redis only delivers. The reconciler repairs what Redis lost
 * (flushed, restarted without persistence, a job removed by hand), one pass every `intervalMs`:
 *
 * - Waiting jobs: `queued`/`requeued`, unchanged for `graceMs`, that BullMQ no longer holds (or holds
 *   only a finished copy of) → put back with the same jobId. A job whose enqueue is still in the
 *   outbox is the dispatcher's, unless that row is older than `staleOutboxMs`: then the dispatcher
 *   has been failing on it (Redis refusing writes, a bug) and the row counts as lost work; the job
 *   is enqueued here and the row settled.
 * - Stale runs: `running` or `canceling`, unchanged for `staleRunMs`, whose BullMQ job is gone or
 *   finished (so no runner holds its lock) → `running` becomes `requeued` (with the reason, and an
 *   enqueue in the outbox in the same transaction; the next runner resumes from the newest
 *   checkpoint, and RUNNER_MAX_ATTEMPTS still bounds the attempts); `canceling` becomes `canceled`.
 * - Webhook deliveries still `pending`/`retrying` after `graceMs` whose queue job is gone or
 *   finished → queued again with the attempts they have left.
 *
 * A BullMQ job that is active, waiting, delayed or prioritized is alive: it is never touched.
 */
import type { Job, Queue } from 'bullmq';
import type { Logger } from '../common/logger.js';
import type { Db, Sql } from '../db/client.js';
import { transitionJob } from '../db/jobs.js';
import { OUTBOX_TOPICS, type EnqueueMessage } from '../contracts/outbox.js';
import { queueForJobType } from '../contracts/queues.js';
import type { JobType } from '../contracts/jobSpec.js';
import type { Queues } from './deps.js';
import { enqueueDelivery, enqueueRun, type DeliveryRetryOptions } from './dispatcher.js';

export interface ReconcilerOptions {
  sql: Sql;
  /** For job transitions (db/jobs.ts). */
  db: Db;
  queues: Queues;
  logger: Logger;
  intervalMs?: number;
  /** Jobs and deliveries younger than this (since their last change) are left alone: the dispatcher may be on them. */
  graceMs?: number;
  /**
   * A running job whose BullMQ job is gone is recovered only after this long without a change: a
   * runner that lost its lock has had time to notice. The server passes RUNNER_LOCK_MS × 2.
   */
  staleRunMs?: number;
  /** An undispatched enqueue row older than this is treated as lost work (default 60 s). */
  staleOutboxMs?: number;
  batchSize?: number;
  /** Retry policy of re-queued webhook deliveries; matches the dispatcher's. */
  webhooks?: DeliveryRetryOptions;
}

export interface ReconcileReport {
  /** Waiting jobs put back on their queue. */
  reenqueued: string[];
  /** Jobs whose enqueue had been stuck in the outbox past `staleOutboxMs`, now on their queue (also in `reenqueued` when added). */
  recoveredFromOutbox: string[];
  /** Running jobs with no live BullMQ job, now `requeued` and on their queue again. */
  requeuedRuns: string[];
  /** Canceling jobs with no live BullMQ job, now `canceled`. */
  canceledRuns: string[];
  /** Webhook deliveries put back on the webhooks queue. */
  redelivered: string[];
}

/** States in which BullMQ still holds the job for a worker, now or later. */
const ALIVE = new Set(['active', 'waiting', 'delayed', 'prioritized', 'waiting-children']);

/** True when BullMQ has no live copy of this job: none at all, or one finished more than `olderThanMs` ago. */
async function lostByQueue(queue: Queue, id: string, olderThanMs: number): Promise<boolean> {
  const job: Job | undefined = await queue.getJob(id);
  if (!job) return true;
  if (ALIVE.has(await job.getState())) return false;
  // Finished (or unknown): a runner finishing right now writes Postgres before BullMQ; give it time.
  return !job.finishedOn || Date.now() - job.finishedOn >= olderThanMs;
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

  /** One pass over all three kinds of loss. */
  async reconcileOnce(): Promise<ReconcileReport> {
    const report: ReconcileReport = {
      ...(await this.waitingJobs()),
      ...(await this.staleRuns()),
      redelivered: await this.lostDeliveries(),
    };
    const { logger } = this.o;
    if (report.recoveredFromOutbox.length) logger.warn({ count: report.recoveredFromOutbox.length, jobIds: report.recoveredFromOutbox.slice(0, 20) }, 'enqueued jobs whose outbox row the dispatcher could not deliver');
    if (report.reenqueued.length) logger.warn({ count: report.reenqueued.length, jobIds: report.reenqueued.slice(0, 20) }, 're-enqueued jobs that BullMQ had lost');
    if (report.requeuedRuns.length) logger.warn({ count: report.requeuedRuns.length, jobIds: report.requeuedRuns.slice(0, 20) }, 'requeued running jobs that no runner holds');
    if (report.canceledRuns.length) logger.warn({ count: report.canceledRuns.length, jobIds: report.canceledRuns.slice(0, 20) }, 'finished canceling jobs that no runner holds');
    if (report.redelivered.length) logger.warn({ count: report.redelivered.length, deliveryIds: report.redelivered.slice(0, 20) }, 're-queued webhook deliveries that BullMQ had lost');
    return report;
  }

  private get graceSecs(): number {
    return (this.o.graceMs ?? 10_000) / 1000;
  }

  private async waitingJobs(): Promise<Pick<ReconcileReport, 'reenqueued' | 'recoveredFromOutbox'>> {
    const staleOutboxSecs = (this.o.staleOutboxMs ?? 60_000) / 1000;
    const candidates = await this.o.sql<{ id: string; tenant_id: string; type: JobType; stuck: boolean }[]>`
      select j.id, j.tenant_id, j.type,
        exists (
          select 1 from outbox o
          where o.topic = ${OUTBOX_TOPICS.enqueue} and o.payload->>'jobId' = j.id::text) as stuck
      from jobs j
      where j.state in ('queued', 'requeued')
        and j.updated_at < now() - make_interval(secs => ${this.graceSecs})
        and not exists (
          select 1 from outbox o
          where o.topic = ${OUTBOX_TOPICS.enqueue} and o.payload->>'jobId' = j.id::text
            and o.created_at >= now() - make_interval(secs => ${staleOutboxSecs}))
      order by j.updated_at
      limit ${this.o.batchSize ?? 1000}`;
    const out: Pick<ReconcileReport, 'reenqueued' | 'recoveredFromOutbox'> = { reenqueued: [], recoveredFromOutbox: [] };
    for (const job of candidates) {
      let outcome: 'added' | 'present';
      try {
        outcome = await enqueueRun(this.o.queues[queueForJobType(job.type)], { jobId: job.id, tenantId: job.tenant_id, type: job.type });
      } catch (err) {
        // Redis still refusing: the next pass tries again; the other jobs of this pass still get their chance.
        this.o.logger.warn({ err, jobId: job.id }, 'reconciler could not enqueue a waiting job; will retry');
        continue;
      }
      if (outcome === 'added') out.reenqueued.push(job.id);
      if (job.stuck) {
        // The job is on its queue now: its stale rows are done (skipping one a dispatcher holds right now).
        const settled = await this.o.sql<{ attempts: number; last_error: string | null }[]>`
          delete from outbox
          where id in (
            select id from outbox
            where topic = ${OUTBOX_TOPICS.enqueue} and payload->>'jobId' = ${job.id}
            for update skip locked)
          returning attempts, last_error`;
        this.o.logger.warn({ jobId: job.id, outboxRows: settled.length, lastError: settled[0]?.last_error, attempts: settled[0]?.attempts }, 'the reconciler enqueued a job its stale outbox row had not; the row is settled');
        out.recoveredFromOutbox.push(job.id);
      }
    }
    return out;
  }

  private async staleRuns(): Promise<Pick<ReconcileReport, 'requeuedRuns' | 'canceledRuns'>> {
    const staleRunMs = this.o.staleRunMs ?? 120_000;
    const candidates = await this.o.sql<{ id: string; tenant_id: string; type: JobType; state: 'running' | 'canceling' }[]>`
      select id, tenant_id, type, state from jobs
      where state in ('running', 'canceling') and updated_at < now() - make_interval(secs => ${staleRunMs / 1000})
      order by updated_at
      limit ${this.o.batchSize ?? 1000}`;
    const out: Pick<ReconcileReport, 'requeuedRuns' | 'canceledRuns'> = { requeuedRuns: [], canceledRuns: [] };
    for (const job of candidates) {
      const queue = this.o.queues[queueForJobType(job.type)];
      if (!(await lostByQueue(queue, job.id, staleRunMs))) continue;
      if (job.state === 'canceling') {
        const row = await transitionJob(this.o.db, job.id, { from: ['canceling'], to: 'canceled', reason: 'canceled: its runner is gone (no live queue job)' });
        if (row) out.canceledRuns.push(job.id);
        continue;
      }
      const message: EnqueueMessage = { jobId: job.id, tenantId: job.tenant_id, type: job.type };
      const row = await transitionJob(this.o.db, job.id, {
        from: ['running'],
        to: 'requeued',
        reason: `attempt lost its runner: no live queue job for over ${Math.round(staleRunMs / 1000)} s; resuming from the newest checkpoint`,
        // The outbox row makes the re-enqueue durable with the transition; enqueuing here as well
        // saves waiting for a dispatcher pass (the same jobId makes the second add a no-op).
        outbox: { topic: OUTBOX_TOPICS.enqueue, payload: message },
      });
      if (!row) continue;
      await enqueueRun(queue, message);
      out.requeuedRuns.push(job.id);
    }
    return out;
  }

  private async lostDeliveries(): Promise<string[]> {
    const maxAttempts = this.o.webhooks?.attempts ?? 8;
    const candidates = await this.o.sql<{ id: string; attempts: number }[]>`
      select id, attempts from webhook_deliveries
      where status in ('pending', 'retrying') and created_at < now() - make_interval(secs => ${this.graceSecs})
      order by created_at
      limit ${this.o.batchSize ?? 1000}`;
    const redelivered: string[] = [];
    for (const d of candidates) {
      if (!(await lostByQueue(this.o.queues.webhooks, d.id, (this.o.graceMs ?? 10_000)))) continue;
      await (await this.o.queues.webhooks.getJob(d.id))?.remove(); // a finished copy would block the same jobId
      // The attempts already made count against the delivery's budget; at least one more try.
      await enqueueDelivery(this.o.queues.webhooks, d.id, { ...this.o.webhooks, attempts: Math.max(1, maxAttempts - d.attempts) });
      redelivered.push(d.id);
    }
    return redelivered;
  }
}
