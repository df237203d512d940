/** What every run's supervisor is handed, and what it hands back. */
import type { Config } from '../../common/config.js';
import type { Logger } from '../../common/logger.js';
import type { Storage } from '../../common/storage.js';
import type { Db, Sql } from '../../db/client.js';
import type { JobRow } from '../../db/jobs.js';
import type { CancelWatch } from './cancelWatch.js';
import type { DeviceSlot } from './deviceSlots.js';
import type { RunControl } from './runControl.js';
import type { Progress } from './metricsWriter.js';

/** Long-lived services of one runner process. */
export interface RunnerServices {
  config: Config;
  db: Db;
  sql: Sql;
  storage: Storage;
  log: Logger;
  cancelWatch: CancelWatch;
  /** Identifies this runner process in job metadata and logs (host:pid:random). */
  runnerId: string;
}

/** One attempt of one job. */
export interface RunContext extends RunnerServices {
  job: JobRow;
  attempt: number;
  /** Carries jobId and attempt on every line. */
  log: Logger;
  control: RunControl;
  /** A local scratch directory of this attempt, removed when it ends. */
  workDir: string;
  /** This run's GPU and share of the cores (train queue); none for ingestion. */
  deviceSlot?: DeviceSlot;
  /** Live progress for the queue (BullMQ job.updateProgress). */
  publishProgress(p: Progress): Promise<void>;
}

/** How an attempt ended, as the job's lifecycle needs to know it. */
export type RunOutcome =
  | { kind: 'succeeded'; result: Record<string, unknown> }
  | { kind: 'canceled'; reason: string }
  /** Stopped so that another runner continues it (SIGTERM, scale-in, spot preemption). */
  | { kind: 'preempted'; reason: string }
  /** `retryable`: another attempt may succeed (a crash, a lost service); else it would fail the same way. */
  | { kind: 'failed'; reason: string; retryable: boolean }
  /** Another attempt of the job started meanwhile (this runner lost its lock): write nothing more. */
  | { kind: 'superseded'; reason: string };

/** A failure another attempt would repeat (bad spec, missing dataset): fail the job, do not retry. */
export class PermanentRunError extends Error {
  override name = 'PermanentRunError';
}

/** The runner's configuration as environment variables, for its child processes. */
export function configEnv(config: Config): Record<string, string> {
  // Unset optional settings stay unset (String(undefined) would be the value "undefined").
  return Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]));
}
