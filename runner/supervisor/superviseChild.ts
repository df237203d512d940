/**
 * Runs one child process for an attempt and keeps the outside world informed while it works:
 * metrics and progress (batched), log lines, where it runs (jobs.runtime), and stop requests in
 * (cancel, SIGTERM, max runtime). Checkpoints are handed to the caller, which uploads them one at a
 * time in step order; the outcome is reported only after every upload settled.
 */
import { hostname } from 'node:os';
import { recordJobEvent } from '../../db/jobs.js';
import { setRuntime, SupersededError } from '../../db/runs.js';
import { codeVersion } from '../codeVersion.js';
import { RunChild, type ChildOutcome } from './childProcess.js';
import { configEnv, type RunContext } from './context.js';
import { slotEnvironment } from './deviceSlots.js';
import { JobLogWriter } from './jobLogWriter.js';
import { MetricsWriter } from './metricsWriter.js';
import { SpikeDetector, watchedSeries, type Spike } from '../moco/spikes.js';
import type { CheckpointReady, ChildTask, RuntimeInfo, StopReason } from './protocol.js';

export interface SuperviseOptions {
  /** Seconds the attempt may still run before it is stopped for exceeding the job's max runtime. */
  remainingSeconds: number;
  /**
   * Called for each checkpoint, in order; the next one waits for the previous to settle. Must not
   * throw; `kill` ends the child at once (this attempt was superseded, say).
   */
  onCheckpoint?(ck: CheckpointReady, run: { kill(): void }): Promise<void>;
  /** GPUs the job asked for (resources.gpus): 0 hides every GPU from the run. */
  gpus?: number;
}

export interface SupervisedResult {
  outcome: ChildOutcome;
  stopReason: StopReason | undefined;
  runtime: RuntimeInfo | undefined;
  /** The newest step the child reported. */
  lastStep: number | undefined;
}

export async function superviseChild(ctx: RunContext, task: ChildTask, opts: SuperviseOptions): Promise<SupervisedResult> {
  const { log, db, job } = ctx;
  // Asked to stop while preparing (SIGTERM during a download, say): do not start what would stop at once.
  if (ctx.control.stopReason) {
    return { outcome: { kind: 'stopped' }, stopReason: ctx.control.stopReason, runtime: undefined, lastStep: undefined };
  }
  // Set when a fenced write was refused: another attempt owns the job, this one must stop writing.
  let superseded: string | undefined;
  const metrics = new MetricsWriter({
    db,
    jobId: job.id,
    attempt: ctx.attempt,
    log,
    publishProgress: (p) => ctx.publishProgress(p),
    onSuperseded(reason) {
      superseded = reason;
      log.warn({ reason }, 'another attempt owns the job; stopping this run without writing more');
      child.kill();
    },
  });
  const logs = new JobLogWriter(db, job.id, ctx.attempt, log);
  let runtime: RuntimeInfo | undefined;
  let lastStep: number | undefined;
  let totalSteps: number | undefined;
  let checkpoints: Promise<void> = Promise.resolve();
  // The run's own GPU (or none) and share of the cores; recorded with where it runs.
  const slot = ctx.deviceSlot ? slotEnvironment(ctx.deviceSlot, opts.gpus ?? 1) : undefined;
  // Loss and gradient-norm spikes of a pretrain run become `spike` events (docs/trainer.md).
  const spikes = task.kind === 'pretrain' ? new SpikeDetector() : undefined;
  const recordSpike = (s: Spike) => {
    const reason = `${s.series} ${s.value.toPrecision(4)} > ${s.factor}× its running median ${s.median.toPrecision(4)}`;
    logs.add('warn', `spike at step ${s.step}: ${reason}`);
    void recordJobEvent(db, job.id, 'spike', { attempt: ctx.attempt, reason, data: s }).catch((err: unknown) =>
      log.warn({ err: (err as Error).message }, 'could not record a spike event'),
    );
  };

  const child = RunChild.start(
    task,
    {
      onReady(msg) {
        runtime = msg.runtime;
        totalSteps = msg.totalSteps;
        const where = { ...msg.runtime, ...(slot ? { deviceSlot: slot.device } : {}), hostname: hostname(), pid: process.pid, childPid: child.pid, runnerId: ctx.runnerId, attempt: ctx.attempt, code: codeVersion() };
        log.info({ runtime: where, totalSteps, startStep: msg.startStep }, 'run started');
        logs.add('info', `attempt ${ctx.attempt} on ${where.hostname} (${msg.runtime.backend}${msg.runtime.device ? ', ' + msg.runtime.device : ''})${msg.startStep ? `, resuming at step ${msg.startStep}` : ''}`);
        void setRuntime(db, job.id, where, ctx.attempt).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'could not record runtime'));
      },
      onStep(msg) {
        lastStep = msg.metrics.step;
        totalSteps = msg.totalSteps ?? totalSteps;
        metrics.add(msg.metrics, totalSteps);
        spikes?.observe(msg.metrics.step, watchedSeries(msg.metrics)).forEach(recordSpike);
      },
      onCheckpoint(msg) {
        const handle = opts.onCheckpoint;
        if (!handle) return;
        // Serial: versions are numbered in the order the checkpoints were taken.
        checkpoints = checkpoints.then(async () => {
          await metrics.flush();
          await handle(msg, { kill: () => child.kill() });
        });
      },
      onEvent(msg) {
        void recordJobEvent(db, job.id, msg.kind, { attempt: ctx.attempt, data: msg.data }).catch((err: unknown) =>
          log.warn({ err: (err as Error).message, kind: msg.kind }, 'could not record a run event'),
        );
      },
      onLog(msg) {
        log[msg.level]({ from: 'trainer' }, msg.message);
        if (msg.level !== 'debug') logs.add(msg.level, msg.message);
      },
    },
    { env: { ...process.env, ...configEnv(ctx.config), ...slot?.env } },
  );

  const unsubscribeStop = ctx.control.onStop((reason) => {
    log.info({ reason, atStep: lastStep }, 'asking the run to checkpoint and stop');
    child.stop(reason);
    // Kept with the job: when the request reached the run, so its last checkpoint can be judged.
    void recordJobEvent(db, job.id, 'stop-requested', { attempt: ctx.attempt, reason, data: { atStep: lastStep ?? null } }).catch((err: unknown) =>
      log.warn({ err: (err as Error).message }, 'could not record the stop request'),
    );
  });
  const unsubscribeKill = ctx.control.onKill(() => child.kill());
  const unwatchCancel = ctx.cancelWatch.watch(job.id, () => ctx.control.request('cancel'));
  const maxRuntimeTimer = longTimeout(() => ctx.control.request('max-runtime'), Math.max(0, opts.remainingSeconds) * 1000);

  try {
    const outcome = await child.outcome;
    await checkpoints;
    if (superseded) throw new SupersededError(superseded);
    return { outcome, stopReason: ctx.control.stopReason, runtime, lastStep };
  } finally {
    maxRuntimeTimer.clear();
    unwatchCancel();
    unsubscribeStop();
    unsubscribeKill();
    child.kill();
    await metrics.close();
    await logs.flush();
  }
}

/** setTimeout for delays beyond its 24.8-day limit (max runtimes go up to 30 days). */
function longTimeout(fn: () => void, ms: number): { clear(): void } {
  const MAX = 2 ** 31 - 1;
  let timer: NodeJS.Timeout;
  const arm = (left: number) => {
    timer = setTimeout(() => (left > MAX ? arm(left - MAX) : fn()), Math.min(left, MAX));
  };
  arm(ms);
  return { clear: () => clearTimeout(timer) };
}
