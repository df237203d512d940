/** Datasets and their versions, scoped to a tenant; finalizing a version starts its ingest job. */
import { randomUUID } from 'node:crypto';
import { and, asc, desc, eq, inArray, lt, notInArray, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { errorCodes } from '../common/errors.js';
import { datasetVersions, datasets, jobEvents, jobs, outbox, type DatasetVersionState } from './schema.js';
import type { JobRow } from './jobs.js';
import { OUTBOX_TOPICS, type EnqueueMessage } from '../contracts/outbox.js';
import type { IngestSpec } from '../contracts/jobSpec.js';
import { TERMINAL_STATES } from '../contracts/lifecycle.js';

export type DatasetRow = typeof datasets.$inferSelect;
export type DatasetVersionRow = typeof datasetVersions.$inferSelect;

const UNIQUE_VIOLATION = '23505';
/** Also under drizzle's DrizzleQueryError, which carries the driver's error as its cause. */
const isUniqueViolation = (err: unknown) => errorCodes(err).includes(UNIQUE_VIOLATION);

/** Creates a dataset; undefined when the tenant already has one of that name. */
export async function createDataset(db: Db, tenantId: string, name: string, description: string | null): Promise<DatasetRow | undefined> {
  const [row] = await db.insert(datasets).values({ tenantId, name, description }).onConflictDoNothing().returning();
  return row;
}

export async function getDataset(db: Db, tenantId: string, name: string): Promise<DatasetRow | undefined> {
  const [row] = await db.select().from(datasets).where(and(eq(datasets.tenantId, tenantId), eq(datasets.name, name)));
  return row;
}

export async function listDatasets(db: Db, tenantId: string): Promise<(DatasetRow & { versions: number; latestReady: number | null })[]> {
  const rows = await db
    .select({
      dataset: datasets,
      versions: sql<number>`count(${datasetVersions.id})::int`,
      latestReady: sql<number | null>`max(${datasetVersions.version}) filter (where ${datasetVersions.state} = 'ready')`,
    })
    .from(datasets)
    .leftJoin(datasetVersions, eq(datasetVersions.datasetId, datasets.id))
    .where(eq(datasets.tenantId, tenantId))
    .groupBy(datasets.id)
    .orderBy(asc(datasets.name));
  return rows.map((r) => ({ ...r.dataset, versions: r.versions, latestReady: r.latestReady }));
}

/** The next version of a dataset: max + 1, retried if another request took that number first. */
export async function createDatasetVersion(
  db: Db,
  datasetId: string,
  options: unknown,
  uploadKeyFor: (version: number) => string,
  upload: { sizeBytes: number; deadline: Date },
): Promise<DatasetVersionRow> {
  for (let tries = 0; ; tries++) {
    const [{ next }] = (await db
      .select({ next: sql<number>`coalesce(max(${datasetVersions.version}), 0)::int + 1` })
      .from(datasetVersions)
      .where(eq(datasetVersions.datasetId, datasetId))) as [{ next: number }];
    try {
      const [row] = await db.insert(datasetVersions).values({ datasetId, version: next, options, uploadKey: uploadKeyFor(next), sizeBytes: upload.sizeBytes, uploadDeadline: upload.deadline }).returning();
      return row!;
    } catch (err) {
      if (!isUniqueViolation(err) || tries >= 5) throw err;
    }
  }
}

export async function listDatasetVersions(db: Db, datasetId: string): Promise<DatasetVersionRow[]> {
  return db.select().from(datasetVersions).where(eq(datasetVersions.datasetId, datasetId)).orderBy(asc(datasetVersions.version));
}

/** A version by number, or the newest `ready` one for `latest`. */
export async function getDatasetVersion(db: Db, datasetId: string, version: number | 'latest'): Promise<DatasetVersionRow | undefined> {
  const where =
    version === 'latest'
      ? and(eq(datasetVersions.datasetId, datasetId), eq(datasetVersions.state, 'ready'))
      : and(eq(datasetVersions.datasetId, datasetId), eq(datasetVersions.version, version));
  const [row] = await db.select().from(datasetVersions).where(where).orderBy(desc(datasetVersions.version)).limit(1);
  return row;
}

/** A ready version of the tenant named by `name` + version, with the resolved `name@N`. */
export async function resolveReadyVersion(
  db: Db,
  tenantId: string,
  name: string,
  version: number | 'latest',
): Promise<{ version: DatasetVersionRow; ref: string } | undefined> {
  const dataset = await getDataset(db, tenantId, name);
  if (!dataset) return undefined;
  const v = await getDatasetVersion(db, dataset.id, version);
  if (!v || v.state !== 'ready') return undefined;
  return { version: v, ref: `${name}@${v.version}` };
}

export type FinalizeResult =
  | { outcome: 'started'; version: DatasetVersionRow; job: JobRow }
  | { outcome: 'wrong_state'; state: DatasetVersionState };

/**
 * awaiting_upload → ingesting, plus the ingest job, its first event and its outbox row, in one
 * transaction: a finalized version always has exactly one ingest job on its way.
 */
export async function startIngestion(db: Db, tenantId: string, dataset: DatasetRow, versionId: string, uploadEtag: string | null): Promise<FinalizeResult> {
  return db.transaction(async (tx) => {
    // The first finalize records the archive's ETag; a later one (a failed version retried) keeps it.
    const [version] = await tx
      .update(datasetVersions)
      .set({ state: 'ingesting', error: null, uploadEtag: sql`coalesce(${datasetVersions.uploadEtag}, ${uploadEtag})` })
      .where(and(eq(datasetVersions.id, versionId), inArray(datasetVersions.state, ['awaiting_upload', 'failed'])))
      .returning();
    if (!version) {
      const [current] = await tx.select({ state: datasetVersions.state }).from(datasetVersions).where(eq(datasetVersions.id, versionId));
      return { outcome: 'wrong_state', state: current!.state };
    }
    const spec: IngestSpec = { type: 'ingest', datasetId: dataset.id, datasetVersionId: version.id };
    const jobId = randomUUID();
    const [job] = await tx
      .insert(jobs)
      .values({ id: jobId, tenantId, type: 'ingest', state: 'queued', spec, datasetVersionId: version.id })
      .returning();
    await tx.insert(jobEvents).values({ jobId, kind: 'state', toState: 'queued', attempt: 0, reason: 'dataset version finalized' });
    const message: EnqueueMessage = { jobId, tenantId, type: 'ingest' };
    await tx.insert(outbox).values({ topic: OUTBOX_TOPICS.enqueue, payload: message });
    return { outcome: 'started', version, job: job! };
  });
}

/** Jobs not yet finished that use any of these versions (they block a delete). */
async function activeJobsUsing(db: Pick<Db, 'select'>, versionIds: string[]): Promise<string[]> {
  if (!versionIds.length) return [];
  const rows = await db
    .select({ id: jobs.id })
    .from(jobs)
    .where(and(inArray(jobs.datasetVersionId, versionIds), notInArray(jobs.state, [...TERMINAL_STATES])))
    .limit(20);
  return rows.map((r) => r.id);
}

export type DeleteResult = { outcome: 'deleted'; versionIds: string[] } | { outcome: 'in_use'; jobIds: string[] };

/**
 * Deletes versions (all of a dataset's when `versionIds` is undefined) unless an unfinished job uses
 * one. Finished jobs keep their resolved `name@N` in their spec; their foreign key is cleared.
 */
export async function deleteDatasetVersions(db: Db, dataset: DatasetRow, versionIds?: string[]): Promise<DeleteResult> {
  return db.transaction(async (tx) => {
    // Lock the versions so that no job can be submitted against them while we decide.
    const locked = await tx
      .select({ id: datasetVersions.id })
      .from(datasetVersions)
      .where(versionIds ? and(eq(datasetVersions.datasetId, dataset.id), inArray(datasetVersions.id, versionIds)) : eq(datasetVersions.datasetId, dataset.id))
      .for('update');
    const ids = locked.map((r) => r.id);
    const busy = await activeJobsUsing(tx, ids);
    if (busy.length) return { outcome: 'in_use', jobIds: busy };
    if (ids.length) {
      await tx.update(jobs).set({ datasetVersionId: null }).where(inArray(jobs.datasetVersionId, ids));
      await tx.delete(datasetVersions).where(inArray(datasetVersions.id, ids));
    }
    if (!versionIds) await tx.delete(datasets).where(eq(datasets.id, dataset.id));
    return { outcome: 'deleted', versionIds: ids };
  });
}

/** Versions still awaiting their upload after their deadline (oldest first). */
export async function expiredUploads(db: Db, now: Date, limit: number): Promise<(DatasetVersionRow & { tenantId: string })[]> {
  const rows = await db
    .select({ version: datasetVersions, tenantId: datasets.tenantId })
    .from(datasetVersions)
    .innerJoin(datasets, eq(datasets.id, datasetVersions.datasetId))
    .where(and(eq(datasetVersions.state, 'awaiting_upload'), lt(datasetVersions.uploadDeadline, now)))
    .orderBy(asc(datasetVersions.uploadDeadline))
    .limit(limit);
  return rows.map((r) => ({ ...r.version, tenantId: r.tenantId }));
}

/** awaiting_upload → failed with `reason`, if it is still awaiting (a finalize that won the race keeps it). */
export async function closeExpiredUpload(db: Db, versionId: string, reason: string): Promise<boolean> {
  const [row] = await db
    .update(datasetVersions)
    .set({ state: 'failed', error: reason })
    .where(and(eq(datasetVersions.id, versionId), eq(datasetVersions.state, 'awaiting_upload')))
    .returning({ id: datasetVersions.id });
  return !!row;
}
