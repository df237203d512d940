/**
 * Job lifecycle writes shared by the API and the runners. Every state change is a conditional
 * UPDATE (from an allowed state) plus an event row, in one transaction: two runners, or a runner
 * and a cancel, racing on the same job cannot both win.
 */
import { and, eq, inArray, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { jobEvents, jobs, outbox, type JobState } from './schema.js';
import { OUTBOX_TOPICS, type JobEventMessage } from '../contracts/outbox.js';
import type { JobEventName } from '../contracts/lifecycle.js';

export type JobRow = typeof jobs.$inferSelect;
type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];
export type DbOrTx = Db | Tx;

export interface TransitionOptions {
  /** Only from these states; the transition is refused (returns null) from any other. */
  from: readonly JobState[];
  to: JobState;
  reason?: string;
  data?: unknown;
  /** Columns to set along with the state. */
  patch?: Partial<Pick<JobRow, 'attempt' | 'attemptBase' | 'error' | 'result' | 'runtime' | 'progress' | 'startedAt' | 'finishedAt' | 'cancelRequested'>>;
  /** Also enqueue an outbox message in the same transaction. */
  outbox?: { topic: string; payload: unknown };
  /**
   * Fencing token: only while the job's attempt is still this one. A runner writes with its own
   * attempt number, so one that lost its lock cannot move a job another attempt has taken over.
   */
  attempt?: number;
}

/** Moves a job to `to` if it is in one of `from`; records the event. Returns the new row, or null. */
export async function transitionJob(db: Db, jobId: string, opts: TransitionOptions): Promise<JobRow | null> {
  return db.transaction(async (tx) => {
    const [current] = await tx.select({ state: jobs.state, attempt: jobs.attempt }).from(jobs).where(eq(jobs.id, jobId)).for('update');
    if (!current || !opts.from.includes(current.state)) return null;
    if (opts.attempt !== undefined && current.attempt !== opts.attempt) return null;
    const terminal = opts.to === 'succeeded' || opts.to === 'failed' || opts.to === 'canceled';
    const [row] = await tx
      .update(jobs)
      .set({
        ...opts.patch,
        state: opts.to,
        updatedAt: sql`now()`,
        ...(terminal && !opts.patch?.finishedAt ? { finishedAt: sql`now()` } : {}),
      })
      .where(and(eq(jobs.id, jobId), inArray(jobs.state, [...opts.from])))
      .returning();
    if (!row) return null;
    await tx.insert(jobEvents).values({
      jobId,
      kind: 'state',
      fromState: current.state,
      toState: opts.to,
      attempt: row.attempt,
      reason: opts.reason ?? null,
      data: opts.data ?? null,
    });
    // Every transition is announced (webhooks, SSE listeners) through the outbox, atomically with it.
    const event: JobEventMessage = { jobId, event: `job.${opts.to}` as JobEventName, at: new Date().toISOString(), data: { reason: opts.reason ?? null, attempt: row.attempt } };
    await tx.insert(outbox).values({ topic: OUTBOX_TOPICS.event, payload: event });
    if (opts.outbox) await tx.insert(outbox).values({ topic: opts.outbox.topic, payload: opts.outbox.payload });
    return row;
  });
}

/** Records an event that is not a state change (checkpoint written, step milestone, warning). */
export async function recordJobEvent(
  db: DbOrTx,
  jobId: string,
  kind: string,
  fields: { attempt?: number; reason?: string; data?: unknown } = {},
): Promise<void> {
  await db.insert(jobEvents).values({ jobId, kind, attempt: fields.attempt ?? null, reason: fields.reason ?? null, data: fields.data ?? null });
}

export async function getJob(db: DbOrTx, jobId: string): Promise<JobRow | undefined> {
  const [row] = await db.select().from(jobs).where(eq(jobs.id, jobId));
  return row;
}
