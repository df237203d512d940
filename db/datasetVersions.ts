/**
 * The dataset_versions queries ingestion needs. Every state change is conditional on the state it
 * leaves, so a late or duplicate ingest job can never overwrite a version another one finished.
 */
import { and, eq, inArray, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { datasets, datasetVersions, type DatasetVersionState } from './schema.js';
import type { DatasetManifest } from '../contracts/datasetSpec.js';

export type DatasetVersionRow = typeof datasetVersions.$inferSelect;
type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];

/** The version with its dataset's tenant (S3 keys need it), or undefined. */
export async function getDatasetVersionWithTenant(
  db: Db,
  id: string,
): Promise<{ version: DatasetVersionRow; tenantId: string } | undefined> {
  const [row] = await db
    .select({ version: datasetVersions, tenantId: datasets.tenantId })
    .from(datasetVersions)
    .innerJoin(datasets, eq(datasets.id, datasetVersions.datasetId))
    .where(eq(datasetVersions.id, id));
  return row;
}

/** Moves a version from awaiting_upload (or a retried ingesting) to ingesting; null when it is in another state. */
export async function claimDatasetVersionForIngest(db: Db, id: string): Promise<DatasetVersionRow | null> {
  const [row] = await db
    .update(datasetVersions)
    .set({ state: 'ingesting', error: null })
    .where(and(eq(datasetVersions.id, id), inArray(datasetVersions.state, ['awaiting_upload', 'ingesting'])))
    .returning();
  return row ?? null;
}

/**
 * In one transaction: ready with its manifest, if still ingesting; then `alsoInTx` (the caller's
 * own bookkeeping, e.g. the ingest job's result) in the same transaction. False when not ingesting.
 */
export async function markDatasetVersionReady(
  db: Db,
  id: string,
  manifest: DatasetManifest,
  manifestKey: string,
  alsoInTx?: (tx: Tx) => Promise<void>,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(datasetVersions)
      .set({ state: 'ready', manifest, manifestKey, error: null, readyAt: sql`now()` })
      .where(and(eq(datasetVersions.id, id), eq(datasetVersions.state, 'ingesting')))
      .returning({ id: datasetVersions.id });
    if (!row) return false;
    if (alsoInTx) await alsoInTx(tx);
    return true;
  });
}

/** Failed with the reason, if still ingesting (a version another run made ready stays ready). */
export async function markDatasetVersionFailed(db: Db, id: string, error: string): Promise<boolean> {
  const [row] = await db
    .update(datasetVersions)
    .set({ state: 'failed', error, manifest: null, manifestKey: null })
    .where(and(eq(datasetVersions.id, id), eq(datasetVersions.state, 'ingesting')))
    .returning({ id: datasetVersions.id });
  return !!row;
}

export async function getDatasetVersionState(db: Db, id: string): Promise<DatasetVersionState | undefined> {
  const [row] = await db.select({ state: datasetVersions.state }).from(datasetVersions).where(eq(datasetVersions.id, id));
  return row?.state;
}
