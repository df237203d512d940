/**
 * The runner's writes and reads around one run: metrics (idempotent per job, name and step), logs,
 * progress, checkpoint versions (registered after their upload, fenced by the attempt), aliases,
 * retention, evaluations, and the dataset and checkpoint look-ups a run starts from.
 */
import { and, desc, eq, inArray, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import type { DbOrTx, JobRow } from './jobs.js';
import { recordJobEvent } from './jobs.js';
import {
  checkpointAliases,
  checkpoints,
  datasets,
  datasetVersions,
  evaluations,
  jobLogs,
  jobs,
  metrics,
  modelVersions,
  outbox,
} from './schema.js';
import { OUTBOX_TOPICS, type JobEventMessage } from '../contracts/outbox.js';
import { parseDatasetRef } from '../contracts/jobSpec.js';

export type CheckpointRow = typeof checkpoints.$inferSelect;
export type DatasetVersionRow = typeof datasetVersions.$inferSelect;
export type EvaluationRow = typeof evaluations.$inferSelect;

/** One stored file of a checkpoint version, as kept in `checkpoints.files`. */
export interface CheckpointFileRecord {
  key: string;
  bytes: number;
  sha256: string;
}
export type CheckpointFiles = Record<string, CheckpointFileRecord>;

/** Another attempt of the job has started since this one did: this one must stop writing. */
export class SupersededError extends Error {
  override name = 'SupersededError';
}

// --- attempts ------------------------------------------------------------------------------------

/** True while `attempt` is still the job's current attempt (a fencing token against zombie runs). */
export async function isCurrentAttempt(db: DbOrTx, jobId: string, attempt: number): Promise<boolean> {
  const [row] = await db.select({ attempt: jobs.attempt }).from(jobs).where(eq(jobs.id, jobId));
  return row?.attempt === attempt;
}

/**
 * Seconds the job has spent in `running` so far over all its attempts, from its state events: each
 * entry into `running` counts until the next state event (or now, for one still open). A runner
 * starting a new attempt counts the open interval of a crashed one up to its own start.
 */
export async function runningSecondsSoFar(db: Db, jobId: string): Promise<number> {
  const rows = await db.execute<{ seconds: number | null }>(sql`
    select coalesce(sum(extract(epoch from (coalesce(next_at, now()) - at))), 0)::float8 as seconds
    from (
      select at, to_state, lead(at) over (order by id) as next_at
      from job_events where job_id = ${jobId} and kind = 'state'
    ) s
    where to_state = 'running'
      -- A retry (failed or canceled back to queued) starts the budget afresh.
      and at >= coalesce((select max(at) from job_events where job_id = ${jobId} and kind = 'state' and to_state = 'queued' and from_state in ('failed', 'canceled')), '-infinity')`);
  return Number(rows[0]?.seconds ?? 0);
}

// --- metrics, progress, logs ---------------------------------------------------------------------

export interface MetricPoint {
  step: number;
  name: string;
  value: number;
}

/**
 * Fences a write by the attempt that makes it: takes a share lock on the job row (a new attempt's
 * start, which takes the row for update, waits for the write to commit, or the write waits for the
 * start and then sees the new attempt) and refuses when the job's attempt is no longer `attempt`.
 */
async function assertCurrentAttempt(tx: DbOrTx, jobId: string, attempt: number): Promise<void> {
  const [row] = await tx.select({ attempt: jobs.attempt }).from(jobs).where(eq(jobs.id, jobId)).for('share');
  if (!row) throw new SupersededError(`job ${jobId} no longer exists`);
  if (row.attempt !== attempt) throw new SupersededError(`attempt ${attempt} of job ${jobId} was superseded by attempt ${row.attempt}`);
}

/**
 * Upserts metric points: a step written again (a resumed run) overwrites, never duplicates. With
 * `attempt`, the write is fenced: a superseded attempt's points are refused (SupersededError).
 */
export async function upsertMetrics(db: Db, jobId: string, points: readonly MetricPoint[], attempt?: number): Promise<void> {
  const finite = points.filter((p) => Number.isFinite(p.value));
  if (!finite.length) return;
  await db.transaction(async (tx) => {
    if (attempt !== undefined) await assertCurrentAttempt(tx, jobId, attempt);
    for (let i = 0; i < finite.length; i += 1000) {
      await tx
        .insert(metrics)
        .values(finite.slice(i, i + 1000).map((p) => ({ jobId, step: p.step, name: p.name, value: p.value })))
        .onConflictDoUpdate({
          target: [metrics.jobId, metrics.name, metrics.step],
          set: { value: sql`excluded.value`, at: sql`now()` },
        });
    }
  });
}

/** The job row, restricted to `attempt` when one is given (a fenced write). */
const ofAttempt = (jobId: string, attempt?: number) => (attempt === undefined ? eq(jobs.id, jobId) : and(eq(jobs.id, jobId), eq(jobs.attempt, attempt)));

export async function setProgress(db: DbOrTx, jobId: string, progress: Record<string, unknown>, attempt?: number): Promise<void> {
  const rows = await db.update(jobs).set({ progress, updatedAt: sql`now()` }).where(ofAttempt(jobId, attempt)).returning({ id: jobs.id });
  if (!rows.length && attempt !== undefined) throw new SupersededError(`attempt ${attempt} of job ${jobId} was superseded`);
}

export async function setRuntime(db: DbOrTx, jobId: string, runtime: Record<string, unknown>, attempt?: number): Promise<void> {
  const rows = await db.update(jobs).set({ runtime, updatedAt: sql`now()` }).where(ofAttempt(jobId, attempt)).returning({ id: jobs.id });
  if (!rows.length && attempt !== undefined) throw new SupersededError(`attempt ${attempt} of job ${jobId} was superseded`);
}

export interface LogLine {
  level: string;
  message: string;
  at?: Date;
}

export async function appendLogs(db: DbOrTx, jobId: string, attempt: number, lines: readonly LogLine[]): Promise<void> {
  if (!lines.length) return;
  await db.insert(jobLogs).values(
    lines.map((l) => ({ jobId, attempt, level: l.level, message: l.message.slice(0, 8000), at: l.at ?? new Date() })),
  );
}

// --- checkpoints -----------------------------------------------------------------------------------

export async function listCheckpoints(db: DbOrTx, jobId: string): Promise<CheckpointRow[]> {
  return db.select().from(checkpoints).where(eq(checkpoints.jobId, jobId)).orderBy(desc(checkpoints.version));
}

/** The version number the next checkpoint of the job will get. */
export async function nextCheckpointVersion(db: DbOrTx, jobId: string): Promise<number> {
  const [row] = await db
    .select({ max: sql<number | null>`max(${checkpoints.version})` })
    .from(checkpoints)
    .where(eq(checkpoints.jobId, jobId));
  return Number(row?.max ?? 0) + 1;
}

export interface NewCheckpoint {
  jobId: string;
  attempt: number;
  version: number;
  step: number;
  epoch?: number | null;
  s3Prefix: string;
  files: CheckpointFiles;
  bytes: number;
  sha256: string;
  metrics?: Record<string, number> | null;
  reason?: string;
}

/**
 * Registers an uploaded checkpoint version in one transaction: the version row, `latest` moved to
 * it, an event and a `checkpoint.created` outbox message. Refused (SupersededError) when another
 * attempt of the job has started since, or when the version number was taken meanwhile.
 */
export async function registerCheckpoint(db: Db, ck: NewCheckpoint): Promise<CheckpointRow> {
  return db.transaction(async (tx) => {
    const [job] = await tx.select({ attempt: jobs.attempt }).from(jobs).where(eq(jobs.id, ck.jobId)).for('update');
    if (!job) throw new SupersededError(`job ${ck.jobId} no longer exists`);
    if (job.attempt !== ck.attempt) {
      throw new SupersededError(`attempt ${ck.attempt} of job ${ck.jobId} was superseded by attempt ${job.attempt}`);
    }
    const expected = await nextCheckpointVersion(tx, ck.jobId);
    if (expected !== ck.version) {
      throw new SupersededError(`checkpoint version ${ck.version} of job ${ck.jobId} is taken (next is ${expected})`);
    }
    const [row] = await tx
      .insert(checkpoints)
      .values({
        jobId: ck.jobId,
        version: ck.version,
        step: ck.step,
        epoch: ck.epoch ?? null,
        s3Prefix: ck.s3Prefix,
        files: ck.files,
        bytes: ck.bytes,
        sha256: ck.sha256,
        metrics: ck.metrics ?? null,
      })
      .returning();
    await setAlias(tx, ck.jobId, 'latest', row.id);
    const data = { version: row.version, step: row.step, checkpointId: row.id, bytes: row.bytes, reason: ck.reason ?? null };
    await recordJobEvent(tx, ck.jobId, 'checkpoint', { attempt: ck.attempt, reason: ck.reason, data });
    const message: JobEventMessage = { jobId: ck.jobId, event: 'checkpoint.created', at: new Date().toISOString(), data };
    await tx.insert(outbox).values({ topic: OUTBOX_TOPICS.event, payload: message });
    return row;
  });
}

export async function setAlias(db: DbOrTx, jobId: string, alias: string, checkpointId: string): Promise<void> {
  await db
    .insert(checkpointAliases)
    .values({ jobId, alias, checkpointId })
    .onConflictDoUpdate({
      target: [checkpointAliases.jobId, checkpointAliases.alias],
      set: { checkpointId, updatedAt: sql`now()` },
    });
}

/**
 * A checkpoint of a job by version (`v3`, `3`) or alias (`latest`, `best`, a user's alias); null
 * when there is none.
 */
export async function resolveCheckpoint(db: DbOrTx, jobId: string, ref: string): Promise<CheckpointRow | null> {
  const version = /^v?(\d+)$/.exec(ref);
  if (version) {
    const [row] = await db
      .select()
      .from(checkpoints)
      .where(and(eq(checkpoints.jobId, jobId), eq(checkpoints.version, Number(version[1]))));
    return row ?? null;
  }
  const [row] = await db
    .select({ checkpoint: checkpoints })
    .from(checkpointAliases)
    .innerJoin(checkpoints, eq(checkpoints.id, checkpointAliases.checkpointId))
    .where(and(eq(checkpointAliases.jobId, jobId), eq(checkpointAliases.alias, ref)));
  return row?.checkpoint ?? null;
}

/**
 * A checkpoint version an unfinished job will read: a probe's `source` or a retrain's `initFrom`
 * (the API pins both to `{ job, checkpoint: "vN" }` at submission). Retention must keep it, or the
 * queued probe or retrain fails on missing weights.
 */
const pinnedByUnfinishedJob = sql`exists (
  select 1 from jobs j
  where j.state not in ('succeeded', 'failed', 'canceled')
    and coalesce(j.spec->'source', j.spec->'initFrom')->>'job' = ${checkpoints.jobId}::text
    and coalesce(j.spec->'source', j.spec->'initFrom')->>'checkpoint' = 'v' || ${checkpoints.version})`;

/**
 * The versions retention may delete: all but the newest `keep`, minus those an alias points at
 * (`latest`, `best`, a user's), those an evaluation refers to (deleting them would delete the
 * recorded probe results with them), those a model version points at, and those an unfinished
 * probe or retrain pinned.
 */
export async function checkpointsBeyondRetention(db: DbOrTx, jobId: string, keep: number): Promise<CheckpointRow[]> {
  const all = await listCheckpoints(db, jobId);
  const old = all.slice(keep);
  if (!old.length) return [];
  const ids = old.map((c) => c.id);
  const aliased = await db
    .select({ id: checkpointAliases.checkpointId })
    .from(checkpointAliases)
    .where(inArray(checkpointAliases.checkpointId, ids));
  const evaluated = await db
    .select({ id: evaluations.checkpointId })
    .from(evaluations)
    .where(inArray(evaluations.checkpointId, ids));
  const registered = await db
    .select({ id: modelVersions.checkpointId })
    .from(modelVersions)
    .where(inArray(modelVersions.checkpointId, ids));
  const needed = await db
    .select({ id: checkpoints.id })
    .from(checkpoints)
    .where(and(inArray(checkpoints.id, ids), pinnedByUnfinishedJob));
  const pinned = new Set([...aliased, ...evaluated, ...registered, ...needed].map((r) => r.id));
  return old.filter((c) => !pinned.has(c.id));
}

/** Deletes version rows, unless an alias, an evaluation, a model version or an unfinished job started pointing at one meanwhile. */
export async function deleteCheckpointRows(db: DbOrTx, ids: readonly string[]): Promise<string[]> {
  if (!ids.length) return [];
  const deleted = await db
    .delete(checkpoints)
    .where(
      and(
        inArray(checkpoints.id, [...ids]),
        sql`not exists (select 1 from ${checkpointAliases} a where a.checkpoint_id = ${checkpoints.id})`,
        sql`not exists (select 1 from ${evaluations} e where e.checkpoint_id = ${checkpoints.id})`,
        sql`not exists (select 1 from ${modelVersions} mv where mv.checkpoint_id = ${checkpoints.id})`,
        sql`not ${pinnedByUnfinishedJob}`,
      ),
    )
    .returning({ id: checkpoints.id });
  return deleted.map((d) => d.id);
}

// --- evaluations -----------------------------------------------------------------------------------

export interface NewEvaluation {
  probeJobId: string;
  sourceJobId: string;
  checkpointId: string;
  kind: string;
  top1: number;
  top5: number | null;
  details: Record<string, unknown>;
  attempt: number;
  knnTop1?: number | null;
  subjects?: Record<string, unknown> | null;
  protocol?: Record<string, unknown> | null;
}

/**
 * Records a probe's result (one row per probe job: a retried probe overwrites its own row), moves
 * `best` on the source job when this top-1 beats the best's, and announces `evaluation.completed`,
 * all in one transaction.
 */
export async function recordEvaluation(db: Db, ev: NewEvaluation): Promise<{ evaluation: EvaluationRow; movedBest: boolean; previousBestTop1: number | null }> {
  return db.transaction(async (tx) => {
    // Fenced: a probe attempt that lost its job to another attempt records nothing.
    const [probe] = await tx.select({ attempt: jobs.attempt }).from(jobs).where(eq(jobs.id, ev.probeJobId)).for('update');
    if (probe?.attempt !== ev.attempt) throw new SupersededError(`attempt ${ev.attempt} of probe ${ev.probeJobId} was superseded by attempt ${probe?.attempt}`);
    // Serialise probes of the same source job: two finishing at once must not both think they are best.
    await tx.select({ id: jobs.id }).from(jobs).where(eq(jobs.id, ev.sourceJobId)).for('update');
    // A retried probe attempt replaces its evaluation with the same figures it inserts.
    const figures = {
      checkpointId: ev.checkpointId,
      kind: ev.kind,
      top1: ev.top1,
      top5: ev.top5,
      details: ev.details,
      knnTop1: ev.knnTop1 ?? null,
      subjects: ev.subjects ?? null,
      protocol: ev.protocol ?? null,
    };
    const [evaluation] = await tx
      .insert(evaluations)
      .values({ jobId: ev.probeJobId, ...figures })
      .onConflictDoUpdate({
        target: evaluations.jobId,
        set: { ...figures, createdAt: sql`now()` },
      })
      .returning();
    const best = await resolveCheckpoint(tx, ev.sourceJobId, 'best');
    let previousBestTop1: number | null = null;
    if (best) {
      const [row] = await tx
        .select({ top1: sql<number | null>`max(${evaluations.top1})` })
        .from(evaluations)
        .where(and(eq(evaluations.checkpointId, best.id), eq(evaluations.kind, ev.kind), sql`${evaluations.jobId} <> ${ev.probeJobId}`));
      previousBestTop1 = row?.top1 ?? null;
    }
    const movedBest = !best || previousBestTop1 === null || ev.top1 > previousBestTop1 || best.id === ev.checkpointId;
    if (movedBest) await setAlias(tx, ev.sourceJobId, 'best', ev.checkpointId);
    const data = { evaluationId: evaluation.id, checkpointId: ev.checkpointId, sourceJobId: ev.sourceJobId, kind: ev.kind, top1: ev.top1, top5: ev.top5, movedBest };
    await recordJobEvent(tx, ev.probeJobId, 'evaluation', { attempt: ev.attempt, data });
    const message: JobEventMessage = { jobId: ev.probeJobId, event: 'evaluation.completed', at: new Date().toISOString(), data };
    await tx.insert(outbox).values({ topic: OUTBOX_TOPICS.event, payload: message });
    return { evaluation, movedBest, previousBestTop1 };
  });
}

// --- datasets ----------------------------------------------------------------------------------------

/**
 * The dataset version a job trains or probes on: the one the API pinned on the job, else the one
 * its `name@version` reference names (`name`/`name@latest` = newest ready version). Null when none.
 */
export async function resolveDatasetVersion(
  db: DbOrTx,
  tenantId: string,
  ref: string | undefined,
  pinnedId?: string | null,
): Promise<(DatasetVersionRow & { datasetName: string }) | null> {
  const select = () =>
    db
      .select({ version: datasetVersions, datasetName: datasets.name })
      .from(datasetVersions)
      .innerJoin(datasets, eq(datasets.id, datasetVersions.datasetId));
  if (pinnedId) {
    const [row] = await select().where(and(eq(datasetVersions.id, pinnedId), eq(datasets.tenantId, tenantId)));
    return row ? { ...row.version, datasetName: row.datasetName } : null;
  }
  if (!ref) return null;
  const { name, version } = parseDatasetRef(ref);
  const where = and(eq(datasets.tenantId, tenantId), eq(datasets.name, name));
  const [row] =
    version === 'latest'
      ? await select()
          .where(and(where, eq(datasetVersions.state, 'ready')))
          .orderBy(desc(datasetVersions.version))
          .limit(1)
      : await select().where(and(where, eq(datasetVersions.version, version)));
  return row ? { ...row.version, datasetName: row.datasetName } : null;
}

export async function getJobOfTenant(db: DbOrTx, tenantId: string, jobId: string): Promise<JobRow | undefined> {
  const [row] = await db.select().from(jobs).where(and(eq(jobs.id, jobId), eq(jobs.tenantId, tenantId)));
  return row;
}
