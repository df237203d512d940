/**
 * Checkpoint versions in S3 and Postgres. A version is uploaded file by file (multipart for large
 * files, sha256 of each recorded), and only then registered in one transaction (db/runs.ts), so a
 * registered version always has all its bytes. Downloads verify every file's sha256. Retention
 * keeps the newest K versions plus the aliased and evaluated ones.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Db } from '../../db/client.js';
import {
  checkpointsBeyondRetention,
  deleteCheckpointRows,
  isCurrentAttempt,
  SupersededError,
  listCheckpoints,
  nextCheckpointVersion,
  registerCheckpoint,
  type CheckpointFiles,
  type CheckpointRow,
} from '../../db/runs.js';
import { CHECKPOINT_FILES, checkpointAttemptPrefix } from '../../contracts/storageKeys.js';
import { NotFoundError, sha256Hex, type Storage } from '../../common/storage.js';
import type { Logger } from '../../common/logger.js';
import type { CheckpointReady } from './protocol.js';

export const ALL_CHECKPOINT_FILES: readonly string[] = Object.values(CHECKPOINT_FILES);
export const BACKBONE_FILES: readonly string[] = [CHECKPOINT_FILES.backbone, CHECKPOINT_FILES.backboneMeta];
export const STATE_FILES: readonly string[] = [CHECKPOINT_FILES.state, CHECKPOINT_FILES.stateMeta];

export class ChecksumMismatchError extends Error {
  override name = 'ChecksumMismatchError';
}

export interface RunIdentity {
  jobId: string;
  tenantId: string;
  attempt: number;
}

function contentType(file: string): string {
  return file.endsWith('.json') ? 'application/json' : 'application/octet-stream';
}

export class CheckpointStore {
  constructor(
    private readonly db: Db,
    private readonly storage: Storage,
    private readonly log: Logger,
  ) {}

  /** Uploads a checkpoint the child wrote to disk, then registers it as the job's next version. */
  async publish(run: RunIdentity, ck: CheckpointReady): Promise<CheckpointRow> {
    const missing = ALL_CHECKPOINT_FILES.filter((f) => !ck.files.includes(f));
    if (missing.length) throw new Error(`checkpoint at step ${ck.step} lacks ${missing.join(', ')}`);
    // An attempt that lost the job uploads nothing (saves the bytes; the registration is the fence).
    if (!(await isCurrentAttempt(this.db, run.jobId, run.attempt))) {
      throw new SupersededError(`attempt ${run.attempt} of job ${run.jobId} was superseded; checkpoint at step ${ck.step} not uploaded`);
    }
    // max+1 read now is the version we will register; the registration re-checks it. Each attempt
    // uploads under a folder of its own, so a zombie attempt that computed the same version never
    // overwrites the bytes of the attempt that registered it. Objects uploaded but never registered
    // (a crash in between) are overwritten by a retry of the same attempt or removed by retention.
    const version = await nextCheckpointVersion(this.db, run.jobId);
    const prefix = checkpointAttemptPrefix(run.tenantId, run.jobId, version, run.attempt);
    const files: CheckpointFiles = {};
    let bytes = 0;
    for (const name of ALL_CHECKPOINT_FILES) {
      const put = await this.storage.putFile(prefix + name, join(ck.dir, name), contentType(name));
      files[name] = { key: put.key, bytes: put.bytes, sha256: put.sha256 };
      bytes += put.bytes;
    }
    const row = await registerCheckpoint(this.db, {
      jobId: run.jobId,
      attempt: run.attempt,
      version,
      step: ck.step,
      epoch: ck.epoch ?? null,
      s3Prefix: prefix,
      files,
      bytes,
      sha256: files[CHECKPOINT_FILES.state].sha256,
      metrics: ck.metrics ?? null,
      reason: ck.reason,
    });
    this.log.info({ version, step: ck.step, bytes, reason: ck.reason }, 'checkpoint registered');
    return row;
  }

  /** Deletes versions beyond the newest `keep` (aliased and evaluated ones stay): S3 objects first, then rows. */
  async applyRetention(jobId: string, keep: number): Promise<number[]> {
    const doomed = await checkpointsBeyondRetention(this.db, jobId, keep);
    if (!doomed.length) return [];
    // A row without its bytes would be a lie; bytes without a row are only garbage. So the row goes
    // last — unless it got pinned meanwhile, in which case its bytes are gone and it must go too.
    // The whole version folder: its attempt's files and whatever a zombie attempt left beside them.
    for (const ck of doomed) await this.storage.deletePrefix(ck.s3Prefix.replace(/a\d+\/$/, ''));
    const deleted = new Set(await deleteCheckpointRows(this.db, doomed.map((c) => c.id)));
    const survivors = doomed.filter((c) => !deleted.has(c.id));
    if (survivors.length) {
      this.log.warn({ versions: survivors.map((c) => c.version) }, 'versions pinned during retention lost their files');
    }
    const versions = doomed.filter((c) => deleted.has(c.id)).map((c) => c.version);
    this.log.info({ versions, keep }, 'old checkpoint versions deleted');
    return versions;
  }

  /** Downloads files of a version into `dir`, verifying each one's sha256 against the registry. */
  async download(ck: CheckpointRow, dir: string, names: readonly string[] = ALL_CHECKPOINT_FILES): Promise<void> {
    const files = ck.files as CheckpointFiles;
    await mkdir(dir, { recursive: true });
    for (const name of names) {
      const record = files[name];
      if (!record) throw new ChecksumMismatchError(`checkpoint v${ck.version} has no ${name}`);
      const bytes = await this.storage.get(record.key);
      const sha256 = sha256Hex(bytes);
      if (sha256 !== record.sha256 || bytes.byteLength !== record.bytes) {
        throw new ChecksumMismatchError(
          `checkpoint v${ck.version} ${name}: sha256 ${sha256} (${bytes.byteLength} bytes) does not match the registered ${record.sha256} (${record.bytes} bytes)`,
        );
      }
      await writeFile(join(dir, name), bytes);
    }
  }

  /**
   * Downloads the newest version of a job that verifies, into `dir`. A version whose bytes are
   * damaged or missing is skipped (and said so) in favour of the one before it. Null when the job
   * has none. Any other failure (S3 unreachable) is thrown: skipping every version for it would
   * restart the job from scratch while its checkpoints are intact.
   */
  async downloadNewestValid(jobId: string, dir: string): Promise<CheckpointRow | null> {
    for (const ck of await listCheckpoints(this.db, jobId)) {
      try {
        await this.download(ck, dir);
        return ck;
      } catch (err) {
        if (!(err instanceof ChecksumMismatchError || err instanceof NotFoundError)) throw err;
        this.log.warn({ version: ck.version, err: (err as Error).message }, 'checkpoint unusable; trying the previous version');
      }
    }
    return null;
  }
}

/** Reads checkpoint files from a directory into the map the trainer takes. */
export async function readCheckpointDir(dir: string, names: readonly string[] = ALL_CHECKPOINT_FILES): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const name of names) out[name] = new Uint8Array(await readFile(join(dir, name)));
  return out;
}
