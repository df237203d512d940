/**
 * The transactional outbox dispatcher. Rows written in the same transaction as the change they
 * announce are claimed by deleting them (`FOR UPDATE SKIP LOCKED`, so several API replicas share the
 * work without doing any row twice) and moved on in that same transaction; a row that could not be
 * moved on is written back with its backoff (the outbox holds pending rows only):
 *
 * - `job.enqueue` → the job's BullMQ queue with `jobId = job.id` (adding twice is harmless), unless
 *   the job was canceled meanwhile. A finished BullMQ job of the same id (a retry) is removed first.
 * - `job.event`   → a webhook_deliveries row + a `webhooks` queue job for jobs whose spec has a
 *   webhook subscribed to the event. The delivery id derives from the outbox row id, so a row
 *   dispatched twice after a crash still makes one delivery.
 *
 * BullMQ is written before the transaction commits: a crash in between re-dispatches the row, which
 * the ids above make idempotent. For the same reason the pass commits without waiting for the WAL
 * flush (`synchronous_commit = off` for its transaction only): losing the delete costs a re-dispatch.
 * Wakes on `wake()` (a request in this process wrote rows) and polls.
 * Wake-ups coalesce under load: when more than one request woke it since the previous pass began,
 * or that pass moved more than one request's rows, the next starts no sooner than `coalesceMs`
 * after it, so one pass (one transaction, one BullMQ round-trip) carries the rows of many
 * requests. A pass costs the API process far more than a row does: without this, submissions
 * committed together (db/jobInsertBatch.ts) woke a pass each, and at 8 concurrent clients the
 * passes cost as much CPU as the submissions (BENCHMARKS.md). When requests come one at a time, a
 * wake-up runs a pass at once (dispatch latency stays one Redis write).
 */
import { createHash } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Logger } from '../common/logger.js';
import type { TransactionSql } from 'postgres';
import type { Sql } from '../db/client.js';
import { OUTBOX_TOPICS, webhookWants, type EnqueueMessage, type JobEventMessage } from '../contracts/outbox.js';
import { queueForJobType, type RunJobPayload, type WebhookPayload } from '../contracts/queues.js';
import type { Queues } from './deps.js';

export interface DispatcherOptions {
  sql: Sql;
  queues: Queues;
  logger: Logger;
  pollMs?: number;
  /** Least time between the starts of two passes under load. Default 25 ms (a pass costs ~1.4 ms of CPU besides its rows: BENCHMARKS.md). */
  coalesceMs?: number;
  batchSize?: number;
  webhookAttempts?: number;
  webhookBackoffMs?: number;
  /** Backoff of a row that failed to dispatch: first delay and cap (see outboxBackoffMs). */
  rowBackoffBaseMs?: number;
  rowBackoffCapMs?: number;
}

/** An outbox row as a pass claims it, with the job its payload names (null columns when none). */
interface OutboxRow {
  id: number;
  topic: string;
  payload: any;
  attempts: number;
  /** As Postgres wrote it (text): written back unchanged when the row is not dispatched. */
  created_at: string;
  job_id: string | null;
  job_state: string;
  job_attempt: number;
  job_webhook: { url: string; events?: string[] } | null;
}

/** A submission writes one or two rows (enqueue; job.queued when its webhook wants it); a pass with more served several requests. */
const ROWS_PER_SUBMISSION = 2;

/**
 * A row that failed is not claimed again before its backoff has passed: exponential from
 * `baseMs`, capped at `capMs`, with full jitter in its upper half so that many rows failed by one
 * Redis outage do not all come back in the same pass. A row is never abandoned: a job whose enqueue
 * keeps failing stays visible (`attempts`, `last_error`) and goes out as soon as Redis takes writes.
 */
export function outboxBackoffMs(failures: number, o: { baseMs?: number; capMs?: number; random?: () => number } = {}): number {
  const base = o.baseMs ?? 500;
  const cap = o.capMs ?? 60_000;
  const ceiling = Math.min(cap, base * 2 ** Math.min(30, Math.max(0, failures - 1)));
  return Math.round(ceiling / 2 + (o.random ?? Math.random)() * (ceiling / 2));
}

/** A stable UUID-shaped id from a string, so that re-dispatching a row reuses its delivery id. */
export function derivedUuid(seed: string): string {
  const h = createHash('sha256').update(seed).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const RUN_JOB_OPTIONS = { removeOnComplete: { age: 24 * 3600 }, removeOnFail: { age: 7 * 24 * 3600 } };

/** Puts a job on its queue with jobId = job.id; a finished copy of it (an earlier attempt) is cleared first. */
export async function enqueueRun(queue: Queue, payload: RunJobPayload): Promise<'added' | 'present'> {
  const existing = await queue.getJob(payload.jobId);
  if (existing) {
    const state = await existing.getState();
    if (state !== 'completed' && state !== 'failed') return 'present';
    await existing.remove();
  }
  await queue.add(payload.type, payload, { jobId: payload.jobId, ...RUN_JOB_OPTIONS });
  return 'added';
}

export interface DeliveryRetryOptions {
  /** BullMQ attempts for this queue job. Default 8. */
  attempts?: number;
  /** First retry delay; doubles each time. Default 2000 ms. */
  backoffMs?: number;
}

/** Puts a webhook delivery on the webhooks queue with jobId = delivery id (adding twice is harmless). */
export async function enqueueDelivery(queue: Queue, deliveryId: string, o: DeliveryRetryOptions = {}): Promise<void> {
  const data: WebhookPayload = { deliveryId };
  await queue.add('deliver', data, {
    jobId: deliveryId,
    attempts: o.attempts ?? 8,
    // Jittered: receivers that were down together do not get every retry in the same second.
    backoff: { type: 'exponential', delay: o.backoffMs ?? 2000, jitter: 0.5 },
    removeOnComplete: { age: 24 * 3600 },
    removeOnFail: { age: 7 * 24 * 3600 },
  });
}

export class OutboxDispatcher {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;
  private readonly pollMs: number;
  private readonly coalesceMs: number;
  private readonly batchSize: number;
  private lastPassAt = -Infinity;
  /** Rows the last pass claimed: more than one request's worth means load, and wake-ups coalesce. */
  private lastPassRows = 0;
  /** When the pending timer fires (performance.now() time). */
  private timerDue = Infinity;
  /** Requests that woke the dispatcher since the last pass began. */
  private wakesSincePass = 0;

  constructor(private readonly o: DispatcherOptions) {
    this.pollMs = o.pollMs ?? 250;
    this.coalesceMs = o.coalesceMs ?? 25;
    this.batchSize = o.batchSize ?? 200;
  }

  start(): void {
    this.stopped = false;
    this.pass();
  }

  /** A request wrote rows: runs a pass now or, under load, once `coalesceMs` passed since the last began. */
  wake(): void {
    this.wakesSincePass++;
    this.pass();
  }

  private pass(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    const now = performance.now();
    const startAt = this.lastPassAt + this.coalesceMs;
    const underLoad = this.wakesSincePass > 1 || this.lastPassRows > ROWS_PER_SUBMISSION;
    if (underLoad && startAt > now) {
      if (this.timerDue > startAt) this.schedule(startAt - now);
      return;
    }
    clearTimeout(this.timer);
    this.timerDue = Infinity;
    this.lastPassAt = now;
    this.wakesSincePass = 0;
    this.running = this.loop().finally(() => {
      this.running = undefined;
      if (!this.stopped) this.schedule(this.again ? 0 : this.pollMs);
      this.again = false;
    });
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timerDue = performance.now() + delayMs;
    this.timer = setTimeout(() => {
      this.timerDue = Infinity;
      this.pass();
    }, delayMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private async loop(): Promise<void> {
    try {
      // Drain: keep going while full batches come back.
      do this.lastPassRows = await this.dispatchOnce();
      while (this.lastPassRows === this.batchSize && !this.stopped);
    } catch (err) {
      this.o.logger.error({ err }, 'outbox dispatch failed; retrying');
    }
  }

  /** One batch; returns how many rows it claimed. */
  async dispatchOnce(): Promise<number> {
    const { sql } = this.o;
    return sql.begin(async (tx) => {
      // Claiming is deleting: the rows (and the jobs they concern) come back from the delete that
      // takes them, locked by it until this transaction ends, so other replicas skip them. A row
      // that cannot be handed on is written back below; a crash before the commit brings them all
      // back. Two round-trips and one row version less per pass than selecting, then deleting.
      // `= any(array(…))` rather than `in (…)`: the locking subquery is an init plan, run once, so
      // the rows deleted are exactly the rows it locked (a semi-join could run it again on a rescan).
      //
      // This transaction only records what was already handed on, and handing a row on twice is
      // harmless (the ids above): its commit need not wait for the WAL flush (set here rather than
      // by a statement of its own, one round-trip less). A crash that loses it re-dispatches its
      // rows. A jobId that is not a UUID joins nothing instead of failing the cast.
      const rows = await tx<OutboxRow[]>`
        with claimed as (
          delete from outbox o
          where o.id = any(array(
            select id from outbox where next_attempt_at is null or next_attempt_at <= now()
            order by id limit ${this.batchSize} for update skip locked))
          returning o.*
        )
        select c.id, c.topic, c.payload, c.attempts, c.created_at::text as created_at, j.id as job_id, j.state as job_state, j.attempt as job_attempt,
               j.spec->'webhook' as job_webhook, set_config('synchronous_commit', 'off', true) as async_commit
        from claimed c
        left join jobs j on j.id = case when c.payload->>'jobId' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then (c.payload->>'jobId')::uuid end
        order by c.id`;
      if (!rows.length) return 0;
      const byId = new Map(rows.filter((r) => r.job_id !== null).map((r) => [r.job_id!, { id: r.job_id!, state: r.job_state, attempt: r.job_attempt, webhook: r.job_webhook }]));
      const done = new Set<number>();
      // First enqueues of fresh jobs go in one round-trip per queue; BullMQ ignores an id it already has.
      const fresh = rows.filter((r) => {
        const job = byId.get(r.payload?.jobId);
        return r.topic === OUTBOX_TOPICS.enqueue && job?.state === 'queued' && job.attempt === 0;
      });
      try {
        await this.enqueueFresh(fresh.map((r) => r.payload as EnqueueMessage));
        for (const r of fresh) done.add(r.id);
      } catch (err) {
        this.o.logger.warn({ err, count: fresh.length }, 'bulk enqueue failed; trying one by one');
      }
      for (const row of rows) {
        if (done.has(row.id)) continue;
        try {
          if (row.topic === OUTBOX_TOPICS.enqueue) await this.enqueue(row.payload as EnqueueMessage, byId.get(row.payload.jobId)?.state);
          else if (row.topic === OUTBOX_TOPICS.event) await this.event(tx, row.id, row.payload as JobEventMessage, byId.get(row.payload.jobId)?.webhook ?? null);
          else this.o.logger.warn({ outboxId: row.id, topic: row.topic }, 'outbox row of unknown topic; dropping it');
          done.add(row.id);
        } catch (err) {
          this.o.logger.warn({ err, outboxId: row.id, topic: row.topic }, 'outbox row not dispatched; will retry');
          // Written back under its own id (it is pending again, in its place), with its backoff.
          const delayMs = outboxBackoffMs(row.attempts + 1, { baseMs: this.o.rowBackoffBaseMs, capMs: this.o.rowBackoffCapMs });
          await tx`
            insert into outbox (id, topic, payload, created_at, attempts, last_error, next_attempt_at)
            values (${row.id}, ${row.topic}, ${JSON.stringify(row.payload)}::jsonb, ${row.created_at}::timestamptz, ${row.attempts + 1},
                    ${String((err as Error).message ?? err).slice(0, 2000)}, now() + make_interval(secs => ${delayMs / 1000}))`;
        }
      }
      return rows.length;
    });
  }

  private async enqueueFresh(messages: EnqueueMessage[]): Promise<void> {
    const byQueue = new Map<Queue, RunJobPayload[]>();
    for (const m of messages) {
      const queue = this.o.queues[queueForJobType(m.type)];
      byQueue.set(queue, [...(byQueue.get(queue) ?? []), { jobId: m.jobId, tenantId: m.tenantId, type: m.type }]);
    }
    for (const [queue, payloads] of byQueue) {
      await queue.addBulk(payloads.map((p) => ({ name: p.type, data: p, opts: { jobId: p.jobId, ...RUN_JOB_OPTIONS } })));
    }
  }

  private async enqueue(msg: EnqueueMessage, state: string | undefined): Promise<void> {
    // Canceled (or gone) before it reached the queue: nothing to run.
    if (state !== 'queued' && state !== 'requeued') return;
    await enqueueRun(this.o.queues[queueForJobType(msg.type)], { jobId: msg.jobId, tenantId: msg.tenantId, type: msg.type });
  }

  private async event(tx: TransactionSql, outboxId: number, msg: JobEventMessage, webhook: { url: string; events?: string[] } | null): Promise<void> {
    if (!webhook || !webhookWants(webhook, msg.event)) return;
    const deliveryId = derivedUuid(`outbox:${outboxId}`);
    const payload = { type: msg.event, timestamp: msg.at, data: { jobId: msg.jobId, ...(msg.data ?? {}) } };
    await tx`
      insert into webhook_deliveries (id, job_id, event, url, payload, seq)
      values (${deliveryId}, ${msg.jobId}, ${msg.event}, ${webhook.url}, ${JSON.stringify(payload)}::jsonb, ${outboxId})
      on conflict (id) do nothing`;
    await enqueueDelivery(this.o.queues.webhooks, deliveryId, { attempts: this.o.webhookAttempts, backoffMs: this.o.webhookBackoffMs });
  }
}
