/** Rows and uploads for dataset ingestion tests: a tenant, a dataset, a version awaiting ingestion. */
import { eq } from 'drizzle-orm';
import type { DatasetManifest } from '../../../contracts/datasetSpec.js';
import { datasetUploadKey, datasetVersionPrefix } from '../../../contracts/storageKeys.js';
import type { Storage } from '../../../common/storage.js';
import type { Db } from '../../../db/client.js';
import { datasets, datasetVersions, tenants } from '../../../db/schema.js';
import { uniqueName } from '../../support/services.js';

export interface UploadedVersion {
  id: string;
  prefix: string;
}

/** Inserts tenant + dataset + version (state ingesting, as the API leaves it) and uploads `body`. */
export async function uploadVersion(db: Db, storage: Storage, body: Uint8Array, options: Record<string, unknown>, fileName = 'upload.bin'): Promise<UploadedVersion> {
  const [tenant] = await db.insert(tenants).values({ name: uniqueName('t') }).returning();
  const [dataset] = await db.insert(datasets).values({ tenantId: tenant.id, name: 'ds' }).returning();
  const uploadKey = datasetUploadKey(tenant.id, dataset.id, 1, fileName);
  await storage.put(uploadKey, body);
  const [version] = await db
    .insert(datasetVersions)
    .values({ datasetId: dataset.id, version: 1, state: 'ingesting', options, uploadKey })
    .returning();
  return { id: version.id, prefix: datasetVersionPrefix(tenant.id, dataset.id, 1) };
}

export async function versionRow(db: Db, id: string) {
  const [row] = await db.select().from(datasetVersions).where(eq(datasetVersions.id, id));
  return { ...row, manifest: row.manifest as DatasetManifest | null };
}

/** Keys under the version other than the upload itself: shards and manifest. */
export async function outputsOf(storage: Storage, prefix: string): Promise<string[]> {
  return (await storage.list(prefix)).map((o) => o.key).filter((k) => !k.startsWith(`${prefix}upload/`));
}
