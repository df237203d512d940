/**
 * Moves sweeps forward. Postgres holds every sweep's state; `advanceSweep` looks at it and acts:
 * a probe for each pretrain job that succeeded, new pretrain jobs while fewer than
 * `budget.maxConcurrent` of the sweep's jobs are queued or running, the sweep `completed` when
 * every run is done, or stopped (its jobs canceled) once its jobs ran `budget.totalMinutes`.
 * It is safe to call any time from any process: an advisory lock lets one advancer act at a time,
 * and every job it submits has an Idempotency-Key derived from the sweep, run and kind, so a repeat
 * gets the same job. The API calls it after creating a sweep; `SweepDriver` calls it every couple
 * of seconds for every running sweep (the API's `sweeps` role).
 */
import type { Logger } from '../../common/logger.js';
import { getTenantJob } from '../../db/jobQueries.js';
import { finishSweep, getSweep, runningSweepIds, setRunError, setRunJob, sweepMinutesUsed, sweepRunStates, withSweepLock, type SweepRow } from '../../db/sweeps.js';
import { pretrainSpec, probeSpec, type PretrainSpec, type ProbeSpec } from '../../contracts/jobSpec.js';
import type { SweepSpec } from '../../contracts/sweepSpec.js';
import type { AppDeps } from '../deps.js';
import { ApiError } from '../errors.js';
import { submitJob } from '../jobSubmission.js';
import { cancelJob } from '../routes/jobs.js';

const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);

export const sweepJobKey = (sweepId: string, index: number, kind: 'pretrain' | 'probe') => `sweep:${sweepId}:${index}:${kind}`;

export async function advanceSweep(deps: AppDeps, sweepId: string): Promise<void> {
  await withSweepLock(deps.sql, sweepId, false, async () => {
    const sweep = await getSweep(deps.sql, sweepId);
    if (!sweep || sweep.state !== 'running') return;
    const spec = sweep.spec as SweepSpec;

    if (spec.budget.totalMinutes !== undefined) {
      const used = await sweepMinutesUsed(deps.sql, sweepId);
      if (used >= spec.budget.totalMinutes) {
        await stopSweep(deps, sweep, 'completed', `budget: its jobs ran ${used.toFixed(1)} of ${spec.budget.totalMinutes} minutes; the jobs still queued or running were canceled`);
        return;
      }
    }

    const runs = await sweepRunStates(deps.sql, sweepId);
    const active = (state: string | undefined) => state !== undefined && !TERMINAL.has(state);
    let busy = runs.reduce((n, r) => n + (active(r.pretrain?.state) ? 1 : 0) + (active(r.probe?.state) ? 1 : 0), 0);
    const free = () => busy < spec.budget.maxConcurrent;

    // Probes first: they finish runs, and they are short.
    for (const run of runs) {
      if (!free()) break;
      if (run.pretrain?.state !== 'succeeded' || run.probe || run.error) continue;
      const probe: ProbeSpec = probeSpec.parse({
        ...spec.probe,
        type: 'probe',
        source: { job: run.pretrain.id, checkpoint: 'latest' },
        labels: { ...(run.spec.labels ?? {}) },
      });
      if (await submitFor(deps, sweep, run.index, 'probe', probe)) busy++;
    }
    for (const run of runs) {
      if (!free()) break;
      if (run.pretrain || run.error) continue;
      if (await submitFor(deps, sweep, run.index, 'pretrain', pretrainSpec.parse(run.spec))) busy++;
    }

    const fresh = await sweepRunStates(deps.sql, sweepId);
    const done = fresh.every(
      (r) => r.error || (r.pretrain && TERMINAL.has(r.pretrain.state) && (r.pretrain.state !== 'succeeded' || (r.probe && TERMINAL.has(r.probe.state)))),
    );
    if (done) await finishSweep(deps.sql, sweepId, 'completed', null);
  });
}

/** Submits one job of a run; a refusal (dataset gone, say) is kept as the run's error, not thrown. */
async function submitFor(deps: AppDeps, sweep: SweepRow, index: number, kind: 'pretrain' | 'probe', spec: PretrainSpec | ProbeSpec): Promise<boolean> {
  try {
    const { jobId } = await submitJob(deps, spec, { tenantId: sweep.tenantId, idempotencyKey: sweepJobKey(sweep.id, index, kind), operation: `sweep:${sweep.id}` });
    await setRunJob(deps.sql, sweep.id, index, kind, jobId);
    return true;
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    await setRunError(deps.sql, sweep.id, index, `${kind} not submitted: ${err.message}`);
    return false;
  }
}

/** Ends a running sweep and cancels its unfinished jobs. Returns the sweep as it is afterwards. */
export async function stopSweep(deps: AppDeps, sweep: SweepRow, state: 'completed' | 'canceled', reason: string): Promise<SweepRow> {
  const finished = (await finishSweep(deps.sql, sweep.id, state, reason)) ?? (await getSweep(deps.sql, sweep.id))!;
  for (const run of await sweepRunStates(deps.sql, sweep.id)) {
    for (const j of [run.pretrain, run.probe]) {
      if (!j || TERMINAL.has(j.state)) continue;
      const job = await getTenantJob(deps.sql, sweep.tenantId, j.id);
      if (!job) continue;
      await cancelJob(deps, job).catch((err: unknown) => {
        // It finished meanwhile (409): nothing to cancel.
        if (!(err instanceof ApiError)) throw err;
      });
    }
  }
  return finished;
}

/** Cancels a sweep at the user's request: no new jobs, the unfinished ones canceled. */
export async function cancelSweep(deps: AppDeps, sweep: SweepRow): Promise<SweepRow> {
  return (await withSweepLock(deps.sql, sweep.id, true, () => stopSweep(deps, sweep, 'canceled', 'canceled by user')))!;
}

/** The background loop: every running sweep advanced every `intervalMs`. */
export class SweepDriver {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly o: { deps: AppDeps; logger: Logger; intervalMs?: number }) {}

  start(): void {
    const tick = () => {
      this.running = this.passOnce()
        .catch((err: unknown) => this.o.logger.error({ err }, 'sweep driver pass failed'))
        .finally(() => {
          this.running = undefined;
          if (!this.stopped) this.timer = setTimeout(tick, this.o.intervalMs ?? 2000);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async passOnce(): Promise<void> {
    for (const id of await runningSweepIds(this.o.deps.sql)) {
      await advanceSweep(this.o.deps, id).catch((err: unknown) => this.o.logger.warn({ err, sweepId: id }, 'could not advance sweep'));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
