/**
 * A run's log lines into job_logs (what `GET /v1/jobs/{id}/logs` serves), batched once a second.
 * Losing a log line must never fail a run, so write errors are logged and dropped.
 */
import type { Db } from '../../db/client.js';
import { appendLogs, type LogLine } from '../../db/runs.js';
import type { Logger } from '../../common/logger.js';

/** Beyond this many unwritten lines (Postgres unreachable for long), the oldest are dropped. */
const MAX_PENDING = 5000;

export class JobLogWriter {
  private pending: LogLine[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Db,
    private readonly jobId: string,
    private readonly attempt: number,
    private readonly log: Logger,
    private readonly intervalMs = 1000,
  ) {}

  add(level: string, message: string): void {
    this.pending.push({ level, message, at: new Date() });
    if (this.pending.length > MAX_PENDING) this.pending.splice(0, this.pending.length - MAX_PENDING);
    this.timer ??= setTimeout(() => void this.flush(), this.intervalMs);
  }

  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const lines = this.pending;
    this.pending = [];
    this.writing = this.writing.then(() =>
      appendLogs(this.db, this.jobId, this.attempt, lines).catch((err: unknown) => {
        this.log.warn({ err: (err as Error).message, lines: lines.length }, 'job log write failed; lines dropped');
      }),
    );
    return this.writing;
  }
}
