/**
 * Why a dataset reference names no ready version, in words a user can act on: the version is still
 * ingesting, its ingestion failed (with the reason), it awaits its upload, or it does not exist.
 * Used when a job names such a version and when `GET …/versions/latest` finds nothing ready.
 */
import { getDataset, listDatasetVersions } from '../db/datasets.js';
import type { Db } from '../db/client.js';
import { ApiError, unresolvable } from './errors.js';

type Unready = { state: 'missing_dataset' | 'missing_version' | 'awaiting_upload' | 'ingesting' | 'failed' | 'none'; ref: string; message: string };

/** Undefined when the reference names a ready version. */
export async function explainUnready(db: Db, tenantId: string, name: string, version: number | 'latest'): Promise<Unready | undefined> {
  const dataset = await getDataset(db, tenantId, name);
  if (!dataset) return { state: 'missing_dataset', ref: name, message: `no dataset ${JSON.stringify(name)} in this tenant` };
  const versions = await listDatasetVersions(db, dataset.id);
  if (version === 'latest') {
    if (versions.some((v) => v.state === 'ready')) return undefined;
    const newest = versions.at(-1);
    if (!newest) return { state: 'none', ref: name, message: `${name} has no versions yet; upload one` };
    return { ...describe(name, newest.version, newest.state, newest.error), message: `${name} has no ready version yet: ${describe(name, newest.version, newest.state, newest.error).message}` };
  }
  const v = versions.find((x) => x.version === version);
  if (!v) return { state: 'missing_version', ref: `${name}@${version}`, message: `${name} has no version ${version} (it has ${versions.length})` };
  if (v.state === 'ready') return undefined;
  return describe(name, v.version, v.state, v.error);
}

function describe(name: string, version: number, state: string, error: string | null): Unready {
  const ref = `${name}@${version}`;
  switch (state) {
    case 'ingesting':
      return { state: 'ingesting', ref, message: `${ref} is still ingesting; GET /v1/datasets/${name}/versions/${version} shows when it is ready` };
    case 'failed':
      return { state: 'failed', ref, message: `${ref} failed ingestion: ${error ?? 'no reason recorded'}; upload a corrected version` };
    default:
      return { state: 'awaiting_upload', ref, message: `${ref} awaits its archive: upload it, then finalize` };
  }
}

/** The 422 for a job spec naming a dataset version that is not ready (or does not exist). */
export async function datasetRefError(db: Db, tenantId: string, name: string, version: number | 'latest', path = 'dataset'): Promise<ApiError> {
  const why = await explainUnready(db, tenantId, name, version);
  if (!why || why.state === 'missing_dataset' || why.state === 'missing_version') {
    return unresolvable('dataset_not_found', path, why?.message ?? `no ready dataset version ${JSON.stringify(`${name}@${version}`)} in this tenant`);
  }
  return unresolvable('dataset_not_ready', path, why.message);
}
