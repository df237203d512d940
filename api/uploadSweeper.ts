/**
 * Closes dataset uploads nobody finalized: a version still `awaiting_upload` after its deadline
 * (creation + the upload URL's lifetime + a grace period) becomes `failed` ("upload expired"), its
 * multipart uploads are aborted (S3 keeps the parts of an unfinished multipart upload, and bills
 * them, until it is aborted) and whatever was uploaded is deleted. Runs with the reconciler role.
 *
 * The state change comes first and is conditional: a finalize that won the race keeps its version;
 * the bytes are deleted only after the version can no longer be finalized.
 */
import type { Logger } from '../common/logger.js';
import type { Storage } from '../common/storage.js';
import type { Db } from '../db/client.js';
import { closeExpiredUpload, expiredUploads } from '../db/datasets.js';
import { abortIssuedUploads } from './uploads.js';

export interface UploadSweeperOptions {
  db: Db;
  storage: Storage;
  logger: Logger;
  intervalMs?: number;
  batchSize?: number;
  now?: () => Date;
}

export interface UploadSweepReport {
  /** Versions closed in this pass. */
  closed: string[];
  /** Multipart upload ids aborted. */
  aborted: string[];
}

export class UploadSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly o: UploadSweeperOptions) {}

  start(): void {
    const every = this.o.intervalMs ?? 60_000;
    const tick = () => {
      this.running = this.sweep()
        .catch((err) => this.o.logger.warn({ err }, 'upload sweep failed; next pass retries'))
        .finally(() => {
          this.running = undefined;
          if (this.timer) this.timer = setTimeout(tick, every);
        });
    };
    this.timer = setTimeout(tick, every);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  async sweep(): Promise<UploadSweepReport> {
    const now = (this.o.now ?? (() => new Date()))();
    const report: UploadSweepReport = { closed: [], aborted: [] };
    for (const v of await expiredUploads(this.o.db, now, this.o.batchSize ?? 100)) {
      const reason = `upload expired: not finalized by ${v.uploadDeadline!.toISOString()}; create a new version and upload again`;
      if (!(await closeExpiredUpload(this.o.db, v.id, reason))) continue;
      report.closed.push(v.id);
      const { settled, failed } = await abortIssuedUploads(this.o.storage, v.uploadKey);
      report.aborted.push(...settled);
      if (failed.length) this.o.logger.warn({ versionId: v.id, uploadIds: failed }, 'could not abort multipart uploads; the bucket lifecycle rule must');
      await this.o.storage.deletePrefix(v.uploadKey);
      this.o.logger.info({ versionId: v.id, aborted: settled.length }, 'upload expired; version closed');
    }
    return report;
  }
}
