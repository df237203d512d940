/**
 * Batches a run's step metrics into Postgres: one upsert per second (or per `maxPoints`), keyed by
 * (job, name, step) so a resumed run that re-trains steps after its last checkpoint overwrites them
 * instead of duplicating them. Each flush also refreshes jobs.progress and the BullMQ job's progress,
 * which is what `GET /v1/jobs/{id}` and live dashboards show.
 */
import type { Db } from '../../db/client.js';
import { setProgress, SupersededError, upsertMetrics, type MetricPoint } from '../../db/runs.js';
import type { Logger } from '../../common/logger.js';
import type { StepMetrics } from './protocol.js';

export interface Progress {
  step: number;
  total?: number;
  epoch?: number;
  loss?: number;
  imagesPerSec?: number;
  at: string;
}

export interface MetricsWriterOptions {
  db: Db;
  jobId: string;
  /** Fencing token: every write is refused once another attempt owns the job. */
  attempt?: number;
  /** Called once when a write was refused because another attempt owns the job; the writer stops. */
  onSuperseded?: (reason: string) => void;
  log: Logger;
  /** Live progress for the queue (BullMQ job.updateProgress); errors are logged, never fatal. */
  publishProgress?: (p: Progress) => Promise<void>;
  flushIntervalMs?: number;
  maxPoints?: number;
}

/** Flattens a step's numbers into metric points: `{ grad: { patch: 1 } }` → `grad.patch`. */
export function metricPoints(m: StepMetrics): MetricPoint[] {
  const out: MetricPoint[] = [];
  const walk = (prefix: string, value: unknown) => {
    if (typeof value === 'number') {
      if (Number.isFinite(value)) out.push({ step: m.step, name: prefix, value });
    } else if (value && typeof value === 'object' && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) walk(prefix ? `${prefix}.${k}` : k, v);
    }
  };
  for (const [k, v] of Object.entries(m)) if (k !== 'step') walk(k, v);
  return out;
}

export class MetricsWriter {
  private pending = new Map<string, MetricPoint>();
  private latest: Progress | undefined;
  private progressDirty = false;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;
  /** Another attempt owns the job: nothing more is written. */
  private superseded = false;
  private readonly flushIntervalMs: number;
  private readonly maxPoints: number;

  constructor(private readonly opts: MetricsWriterOptions) {
    this.flushIntervalMs = opts.flushIntervalMs ?? 1000;
    this.maxPoints = opts.maxPoints ?? 2000;
  }

  /** Takes one step's metrics; they reach Postgres with the next flush. */
  add(m: StepMetrics, totalSteps?: number): void {
    if (this.superseded) return;
    for (const p of metricPoints(m)) this.pending.set(`${p.name}\u0000${p.step}`, p);
    this.latest = {
      step: m.step,
      total: totalSteps,
      epoch: typeof m.epoch === 'number' ? m.epoch : undefined,
      loss: typeof m.loss === 'number' ? m.loss : undefined,
      imagesPerSec: typeof m.imagesPerSec === 'number' ? m.imagesPerSec : undefined,
      at: new Date().toISOString(),
    };
    this.progressDirty = true;
    if (this.closed) return;
    if (this.pending.size >= this.maxPoints) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.flushIntervalMs);
  }

  get progress(): Progress | undefined {
    return this.latest;
  }

  /** Writes what is pending; flushes never overlap, and a failed one keeps its points for the next. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.writePending());
    return this.flushing;
  }

  /** Final flush; the writer takes nothing more after it. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private async writePending(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = [...this.pending.values()];
    this.pending.clear();
    const progress = this.progressDirty ? this.latest : undefined;
    this.progressDirty = false;
    try {
      if (batch.length) await upsertMetrics(this.opts.db, this.opts.jobId, batch, this.opts.attempt);
      if (progress) await setProgress(this.opts.db, this.opts.jobId, { ...progress }, this.opts.attempt);
    } catch (err) {
      if (err instanceof SupersededError) {
        // Not ours to write any more: drop everything and take nothing new.
        this.pending.clear();
        this.progressDirty = false;
        if (!this.superseded) this.opts.onSuperseded?.(err.message);
        this.superseded = this.closed = true;
        return;
      }
      // Keep them for the next flush unless newer values for the same step arrived meanwhile.
      for (const p of batch) {
        const key = `${p.name}\u0000${p.step}`;
        if (!this.pending.has(key)) this.pending.set(key, p);
      }
      if (progress) this.progressDirty = true;
      this.opts.log.warn({ err: (err as Error).message, points: batch.length }, 'metrics flush failed; will retry');
      if (!this.closed) this.timer ??= setTimeout(() => void this.flush(), this.flushIntervalMs * 5);
      return;
    }
    if (progress && this.opts.publishProgress) {
      await this.opts.publishProgress(progress).catch((err: unknown) => {
        this.opts.log.debug({ err: (err as Error).message }, 'queue progress update failed');
      });
    }
  }
}
