/**
 * One delivery of a queued job to this runner, start to end: decide whether it should run at all
 * (gone, finished, canceled, out of attempts), start attempt n+1 in Postgres, run it by type, and
 * turn its outcome into the job's next state and the queue's next move:
 *
 * | outcome                     | Postgres                       | BullMQ                               |
 * |-----------------------------|--------------------------------|--------------------------------------|
 * | succeeded                   | succeeded, result              | completed                            |
 * | canceled                    | canceled                       | completed                            |
 * | preempted (SIGTERM)         | requeued                       | moved back to wait (WaitingError)    |
 * | failed, retryable, n < max  | requeued, reason kept          | delayed with backoff (DelayedError)  |
 * | failed otherwise            | failed, reason                 | failed (UnrecoverableError)          |
 * | superseded (lock lost)      | untouched: another attempt owns it                                    |
 *
 * Retries are counted by Postgres (jobs.attempt, bounded by RUNNER_MAX_ATTEMPTS), never by BullMQ's
 * own attempts: a crash that kills the runner is a retry BullMQ cannot count.
 */
import { mkdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { DelayedError, UnrecoverableError, WaitingError, type Job } from 'bullmq';
import { desc, eq, isNotNull, and } from 'drizzle-orm';
import { getJob, transitionJob, type JobRow, type TransitionOptions } from '../../db/jobs.js';
import { jobEvents, type JobState } from '../../db/schema.js';
import { isTerminal } from '../../contracts/lifecycle.js';
import type { RunJobPayload } from '../../contracts/queues.js';
import { SupersededError } from '../../db/runs.js';
import { PermanentRunError, type RunContext, type RunnerServices, type RunOutcome } from './context.js';
import type { DeviceSlot } from './deviceSlots.js';
import type { RunControl } from './runControl.js';
import { runPretrain } from './pretrainRun.js';
import { runProbe } from './probeRun.js';
import { runIngest } from './ingestRun.js';

/** Backoff before retry n+1 after a failed attempt n: 2 s, 4 s, 8 s ... at most a minute. */
export function retryDelayMs(attempt: number): number {
  return Math.min(60_000, 2000 * 2 ** Math.max(0, attempt - 1));
}

export interface AttemptResult {
  state: JobState | 'skipped' | 'superseded';
  attempt?: number;
  reason?: string;
  result?: Record<string, unknown>;
}

export async function processDelivery(
  services: RunnerServices,
  bullJob: Job<RunJobPayload>,
  token: string,
  control: RunControl,
  deviceSlot?: DeviceSlot,
): Promise<AttemptResult> {
  const { db, config } = services;
  const jobId = bullJob.data.jobId;
  const log = services.log.child({ jobId });
  const row = await getJob(db, jobId);
  if (!row) {
    log.warn('job not found in Postgres; dropping the delivery');
    return { state: 'skipped', reason: 'no such job' };
  }
  if (isTerminal(row.state)) {
    log.info({ state: row.state }, 'job already finished; dropping the delivery');
    return { state: 'skipped', reason: `already ${row.state}` };
  }
  // The two early exits are fenced by the attempt this delivery read, like every other move: an
  // attempt that started since then owns the job (and sees the cancel itself), not this delivery.
  if (row.state === 'canceling' || row.cancelRequested) {
    const reason = 'canceled before it ran';
    if (!(await transitionJob(db, jobId, { from: ['queued', 'requeued', 'running', 'canceling'], to: 'canceled', reason, attempt: row.attempt }))) {
      log.info('job changed hands before it could be canceled; dropping the delivery');
      return { state: 'skipped', reason: 'state changed' };
    }
    return { state: 'canceled', reason };
  }
  if (row.attempt - row.attemptBase >= config.RUNNER_MAX_ATTEMPTS) {
    const reason = `gave up after ${row.attempt - row.attemptBase} attempts (RUNNER_MAX_ATTEMPTS=${config.RUNNER_MAX_ATTEMPTS}); last failure: ${await lastFailureReason(services, row)}`;
    if (!(await transitionJob(db, jobId, { from: ['queued', 'requeued', 'running'], to: 'failed', reason, patch: { error: reason }, attempt: row.attempt }))) {
      log.info('job changed hands before it could be failed; dropping the delivery');
      return { state: 'skipped', reason: 'state changed' };
    }
    throw new UnrecoverableError(reason);
  }

  const attempt = row.attempt + 1;
  const started = await transitionJob(db, jobId, {
    from: ['queued', 'requeued', 'running'],
    to: 'running',
    // Running → running means the previous attempt's runner vanished (crash, SIGKILL, lost lock):
    // that is its failure reason, and this event is where it is kept.
    reason:
      row.state === 'running'
        ? `attempt ${attempt} on ${hostname()}: attempt ${row.attempt} lost its runner (crash, kill or lost queue lock)`
        : `attempt ${attempt} on ${hostname()}`,
    patch: { attempt, startedAt: row.startedAt ?? new Date(), error: null },
    // Fenced: two deliveries of the same job starting at once cannot both become attempt n+1.
    attempt: row.attempt,
  });
  if (!started) {
    log.info('job changed state before it could start; dropping the delivery');
    return { state: 'skipped', reason: 'state changed' };
  }

  const runLog = services.log.child({ jobId, attempt, type: row.type });
  const workDir = join(config.DATA_DIR, 'runner', jobId, `a${attempt}`);
  await mkdir(workDir, { recursive: true });
  const ctx: RunContext = {
    ...services,
    job: started,
    attempt,
    log: runLog,
    control,
    deviceSlot,
    workDir,
    publishProgress: (p) => bullJob.updateProgress({ ...p }),
  };
  runLog.info('attempt started');
  let outcome: RunOutcome;
  try {
    outcome = await runByType(ctx);
  } catch (err) {
    outcome =
      err instanceof SupersededError
        ? { kind: 'superseded', reason: err.message }
        : err instanceof PermanentRunError || err instanceof RangeError
        ? { kind: 'failed', reason: err.message, retryable: false }
        : { kind: 'failed', reason: `runner error: ${(err as Error).message ?? String(err)}`, retryable: true };
    if (!(err instanceof PermanentRunError)) runLog.error({ err }, 'attempt failed with an error');
  } finally {
    await rm(workDir, { recursive: true, force: true }).catch(() => {});
  }
  runLog.info({ outcome: outcome.kind, reason: 'reason' in outcome ? outcome.reason : undefined }, 'attempt ended');
  return finish(ctx, bullJob, token, outcome);
}

function runByType(ctx: RunContext): Promise<RunOutcome> {
  switch (ctx.job.type) {
    case 'pretrain':
      return runPretrain(ctx);
    case 'probe':
      return runProbe(ctx);
    case 'ingest':
      return runIngest(ctx);
    default:
      throw new PermanentRunError(`unknown job type ${String(ctx.job.type)}`);
  }
}

async function finish(ctx: RunContext, bullJob: Job<RunJobPayload>, token: string, outcome: RunOutcome): Promise<AttemptResult> {
  const { db, log, attempt, config } = ctx;
  const jobId = ctx.job.id;
  const current = await getJob(db, jobId);
  if (outcome.kind === 'superseded' || !current || current.attempt !== attempt) {
    const reason = outcome.kind === 'superseded' ? outcome.reason : `attempt ${attempt} was superseded by attempt ${current?.attempt}`;
    log.warn({ reason }, 'another attempt owns the job now; leaving it alone');
    return { state: 'superseded', attempt, reason };
  }
  // A cancel that arrived while the attempt was ending wins over anything but success.
  if (current.state === 'canceling' && outcome.kind !== 'succeeded' && outcome.kind !== 'canceled') {
    outcome = { kind: 'canceled', reason: `canceled on request (${outcome.reason})` };
  }
  // Every finishing write is fenced by this attempt: a takeover between the check above and the
  // write leaves the job to the new attempt.
  const move = (opts: TransitionOptions) => transitionJob(db, jobId, { ...opts, attempt });
  switch (outcome.kind) {
    case 'succeeded':
      if (!(await move({ from: ['running', 'canceling'], to: 'succeeded', patch: { result: outcome.result, error: null } }))) return lostTheJob(ctx);
      return { state: 'succeeded', attempt, result: outcome.result };
    case 'canceled':
      if (!(await move({ from: ['running', 'canceling'], to: 'canceled', reason: outcome.reason }))) return lostTheJob(ctx);
      return { state: 'canceled', attempt, reason: outcome.reason };
    case 'preempted':
      // A preemption is not a failure: it does not count against RUNNER_MAX_ATTEMPTS (a spot
      // runner preempted five times must not fail the job), so the count's base moves with it.
      if (await move({ from: ['running'], to: 'requeued', reason: outcome.reason, patch: { attemptBase: ctx.job.attemptBase + 1 } })) {
        await bullJob.moveToWait(token);
        throw new WaitingError();
      }
      return { state: 'skipped', attempt, reason: 'state changed while preempting' };
    case 'failed': {
      if (outcome.retryable && attempt - ctx.job.attemptBase < config.RUNNER_MAX_ATTEMPTS) {
        const delay = retryDelayMs(attempt);
        const reason = `attempt ${attempt} failed: ${outcome.reason}; retrying in ${Math.round(delay / 1000)} s (attempt ${attempt + 1} of at most ${config.RUNNER_MAX_ATTEMPTS})`;
        if (await move({ from: ['running'], to: 'requeued', reason, patch: { error: outcome.reason } })) {
          await bullJob.moveToDelayed(Date.now() + delay, token);
          throw new DelayedError();
        }
        return { state: 'skipped', attempt, reason: 'state changed while requeueing' };
      }
      const reason = outcome.retryable ? `${outcome.reason} (gave up after ${attempt} attempts)` : outcome.reason;
      await move({ from: ['running', 'canceling'], to: 'failed', reason, patch: { error: reason } });
      throw new UnrecoverableError(reason);
    }
  }
}

/** A fenced finishing write was refused: the job changed hands (or state) after the attempt's check. */
async function lostTheJob(ctx: RunContext): Promise<AttemptResult> {
  const now = await getJob(ctx.db, ctx.job.id);
  const reason = `attempt ${ctx.attempt} could not finish the job: it is now attempt ${now?.attempt} in state ${now?.state}`;
  ctx.log.warn({ reason }, 'leaving the job alone');
  return { state: 'superseded', attempt: ctx.attempt, reason };
}

/** The newest reason recorded for the job (a failure, usually): what "gave up" should quote. */
async function lastFailureReason(services: RunnerServices, row: JobRow): Promise<string> {
  if (row.state === 'running') return `attempt ${row.attempt} lost its runner (crash, kill or lost queue lock)`;
  const [event] = await services.db
    .select({ reason: jobEvents.reason })
    .from(jobEvents)
    .where(and(eq(jobEvents.jobId, row.id), isNotNull(jobEvents.reason)))
    .orderBy(desc(jobEvents.id))
    .limit(1);
  return row.error ?? event?.reason ?? 'unknown';
}
