/**
 * The runner: BullMQ workers on the `train` queue (pretrain and probe) and the `ingest` queue, each
 * delivery handed to jobAttempt.ts, which runs the work in a child process. This process only
 * supervises, so its event loop is always free for what must never stall: BullMQ's lock renewal,
 * the cancel listener, metric writes.
 *
 * Lock settings, for jobs that run for hours:
 * - lockDuration = RUNNER_LOCK_MS (60 s by default), renewed by BullMQ every lockDuration/2. It is
 *   not the job's length; it is how long a dead runner keeps its job: after a crash or SIGKILL the
 *   job is handed to another runner within about lockDuration + 2 × stalledInterval.
 * - stalledInterval = lockDuration / 2: how often workers look for jobs whose lock lapsed.
 * - maxStalledCount = RUNNER_MAX_ATTEMPTS: every stall is a lost attempt, and Postgres counts
 *   attempts (jobs.attempt) and fails the job with its reasons past the limit; BullMQ must not give
 *   up first (after maxStalledCount stalls it would fail the job behind Postgres's back).
 * - concurrency = RUNNER_CONCURRENCY on `train` (1 per GPU), 1 on `ingest`. Each `train` run gets a
 *   device slot (supervisor/deviceSlots.ts): its own GPU of RUNNER_GPUS and cores / concurrency.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Worker, WaitingError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { createRedis } from '../common/redis.js';
import { QUEUES, type QueueName, type RunJobPayload } from '../contracts/queues.js';
import type { RunnerServices } from './supervisor/context.js';
import { RunControl } from './supervisor/runControl.js';
import { processDelivery, type AttemptResult } from './supervisor/jobAttempt.js';
import { DeviceSlots, resolveGpuCount } from './supervisor/deviceSlots.js';

export interface RunnerOptions {
  /** Take one job, run it, then stop (scale-to-zero runners, KEDA ScaledJobs). */
  once?: boolean;
  queues?: readonly QueueName[];
}

export function newRunnerId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

export class Runner {
  private readonly workers: Worker<RunJobPayload, AttemptResult>[] = [];
  private readonly connections: Redis[] = [];
  private readonly active = new Map<string, RunControl>();
  private stopping: Promise<void> | undefined;
  private takenOnce = false;
  private markStopped!: () => void;
  private slots: DeviceSlots | undefined;
  /** Resolves once the runner has stopped: after SIGTERM, or in one-job mode after its job. */
  readonly stopped = new Promise<void>((resolve) => (this.markStopped = resolve));

  constructor(
    private readonly services: RunnerServices,
    private readonly opts: RunnerOptions = {},
  ) {}

  async start(): Promise<void> {
    const { config, log } = this.services;
    await this.services.cancelWatch.start();
    const gpus = resolveGpuCount(config.RUNNER_GPUS);
    const trainRuns = this.opts.once ? 1 : config.RUNNER_CONCURRENCY;
    this.slots = new DeviceSlots(gpus, trainRuns);
    if (gpus > 0 && trainRuns > gpus) log.warn({ gpus, concurrency: trainRuns }, 'more concurrent runs than GPUs: the runs beyond them compute on the CPU');
    const queues = this.opts.queues ?? [QUEUES.train, QUEUES.ingest];
    for (const queue of queues) {
      const connection = createRedis(config.REDIS_URL);
      connection.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
      this.connections.push(connection);
      const worker = new Worker<RunJobPayload, AttemptResult>(queue, (job, token) => this.process(job, token), {
        connection,
        prefix: config.QUEUE_PREFIX,
        autorun: false,
        concurrency: this.opts.once ? 1 : queue === QUEUES.train ? config.RUNNER_CONCURRENCY : 1,
        lockDuration: config.RUNNER_LOCK_MS,
        stalledInterval: Math.max(500, Math.floor(config.RUNNER_LOCK_MS / 2)),
        maxStalledCount: config.RUNNER_MAX_ATTEMPTS,
        removeOnComplete: { age: 7 * 24 * 3600, count: 10_000 },
        removeOnFail: { age: 30 * 24 * 3600 },
      });
      worker.on('error', (err) => log.error({ err: err.message, queue }, 'worker error'));
      worker.on('stalled', (jobId) => log.warn({ jobId, queue }, 'job stalled (its runner vanished); it goes back to the queue'));
      worker.on('lockRenewalFailed', (jobIds) => {
        // Another runner may get these jobs now. Stop ours; Postgres' attempt fence keeps a late
        // write of this runner from clobbering the new attempt.
        for (const id of jobIds) {
          log.error({ jobId: id }, 'lost the queue lock of a running job; stopping it');
          this.active.get(id)?.request('preempt');
        }
      });
      this.workers.push(worker);
      void worker.run().catch((err: unknown) => log.error({ err, queue }, 'worker stopped with an error'));
      await worker.waitUntilReady();
    }
    log.info(
      { queues, concurrency: config.RUNNER_CONCURRENCY, gpus, coresPerRun: this.slots.coresPerSlot, lockMs: config.RUNNER_LOCK_MS, prefix: config.QUEUE_PREFIX, once: !!this.opts.once },
      'runner waiting for jobs',
    );
  }

  /** Jobs running now (their ids). */
  get running(): string[] {
    return [...this.active.keys()];
  }

  /**
   * SIGTERM: take no more jobs, ask every running job to checkpoint now and go back to the queue,
   * and end within `graceMs`: a run that has not finished checkpointing by then is killed (it
   * resumes from its previous checkpoint on another runner).
   */
  shutdown(graceMs = this.services.config.RUNNER_GRACE_SECONDS * 1000): Promise<void> {
    this.stopping ??= (async () => {
      const { log } = this.services;
      log.info({ running: this.running, graceMs }, 'shutting down: no new jobs; checkpointing running ones');
      for (const control of this.active.values()) control.request('preempt');
      // Leave a little of the grace period for the last transitions and the process's exit.
      const margin = Math.min(5000, graceMs * 0.2);
      const killTimer = setTimeout(() => {
        log.warn({ running: this.running }, 'grace period nearly over; killing runs that have not stopped');
        for (const control of this.active.values()) {
          control.request('preempt');
          control.kill();
        }
      }, graceMs - margin);
      killTimer.unref();
      try {
        await Promise.all(this.workers.map((w) => w.close()));
      } finally {
        clearTimeout(killTimer);
        for (const c of this.connections) c.disconnect();
        await this.services.cancelWatch.stop();
        this.markStopped();
      }
    })();
    return this.stopping;
  }

  private async process(job: Job<RunJobPayload>, token: string | undefined): Promise<AttemptResult> {
    if (!token) throw new Error('BullMQ delivered a job without a lock token');
    if (this.opts.once && this.takenOnce) {
      // One-job mode and another queue delivered at the same moment: hand this one back untouched.
      await job.moveToWait(token);
      throw new WaitingError();
    }
    if (this.stopping) {
      await job.moveToWait(token);
      throw new WaitingError();
    }
    this.takenOnce = true;
    const control = new RunControl();
    this.active.set(job.data.jobId, control);
    // A GPU and a share of the cores for a training or probe run; ingestion needs neither.
    const slot = job.queueName === QUEUES.train ? this.slots?.acquire() : undefined;
    try {
      return await processDelivery(this.services, job, token, control, slot);
    } finally {
      if (slot) this.slots?.release(slot);
      this.active.delete(job.data.jobId);
      if (this.opts.once) {
        // Closing waits for this processor to return, so it must not be awaited from inside it.
        setImmediate(() => void this.shutdown().catch(() => {}));
      }
    }
  }
}
