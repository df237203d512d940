/**
 * Tells a run that its job was canceled. The API sets jobs.cancel_requested (state `canceling`)
 * and NOTIFYs CANCEL_CHANNEL with the job id; one LISTEN per runner process hears it within
 * milliseconds. NOTIFY is fire-and-forget (lost while the listening connection reconnects), so
 * each watched job's flag is also polled every few seconds as a fallback.
 */
import { eq } from 'drizzle-orm';
import type { Db, Sql } from '../../db/client.js';
import { jobs } from '../../db/schema.js';
import { CANCEL_CHANNEL } from '../../contracts/outbox.js';
import type { Logger } from '../../common/logger.js';

export interface CancelWatchOptions {
  db: Db;
  sql: Sql;
  log: Logger;
  pollIntervalMs?: number;
}

export class CancelWatch {
  private readonly watched = new Map<string, () => void>();
  private listening: Promise<{ unlisten(): Promise<void> }> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly pollIntervalMs: number;

  constructor(private readonly opts: CancelWatchOptions) {
    this.pollIntervalMs = opts.pollIntervalMs ?? 3000;
  }

  /** Starts listening (once per process). Resolves when the LISTEN is in place. */
  async start(): Promise<void> {
    this.listening ??= this.opts.sql.listen(CANCEL_CHANNEL, (payload) => this.fire(payload.trim(), 'notify'));
    await this.listening;
    this.timer ??= setInterval(() => void this.poll(), this.pollIntervalMs);
    this.timer.unref();
  }

  /**
   * Calls `onCancel` (once) when the job is canceled. Checks the flag right away too: a cancel that
   * came before the watch began is not missed. Returns the function that ends the watch.
   */
  watch(jobId: string, onCancel: () => void): () => void {
    let fired = false;
    this.watched.set(jobId, () => {
      if (fired) return;
      fired = true;
      onCancel();
    });
    void this.check(jobId);
    return () => {
      this.watched.delete(jobId);
    };
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const l = this.listening;
    this.listening = undefined;
    if (l) await (await l).unlisten().catch(() => {});
  }

  private fire(jobId: string, via: string): void {
    const cb = this.watched.get(jobId);
    if (!cb) return;
    this.opts.log.info({ jobId, via }, 'cancel requested');
    cb();
  }

  private async poll(): Promise<void> {
    await Promise.all([...this.watched.keys()].map((id) => this.check(id)));
  }

  private async check(jobId: string): Promise<void> {
    try {
      const [row] = await this.opts.db
        .select({ cancelRequested: jobs.cancelRequested, state: jobs.state })
        .from(jobs)
        .where(eq(jobs.id, jobId));
      if (row && (row.cancelRequested || row.state === 'canceling')) this.fire(jobId, 'poll');
    } catch (err) {
      this.opts.log.warn({ jobId, err: (err as Error).message }, 'cancel flag poll failed');
    }
  }
}
