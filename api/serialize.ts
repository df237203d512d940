/** Rows → the JSON the API answers. One place, so every route shows a resource the same way. */
import type { JobRow } from '../db/jobs.js';
import type { ApiKeyRow } from '../db/apiKeys.js';
import type { DatasetRow, DatasetVersionRow } from '../db/datasets.js';
import type { CheckpointFiles, CheckpointRow } from '../db/checkpointQueries.js';

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

export function jobJson(j: JobRow) {
  const spec = j.spec as Record<string, unknown>;
  return {
    id: j.id,
    type: j.type,
    state: j.state,
    spec,
    /** The dataset version the job reads, as resolved at submission (`name@N`). */
    dataset: typeof spec.dataset === 'string' ? spec.dataset : null,
    datasetVersionId: j.datasetVersionId,
    labels: (spec.labels as Record<string, string> | undefined) ?? {},
    attempt: j.attempt,
    cancelRequested: j.cancelRequested,
    parentJobId: j.parentJobId,
    progress: j.progress ?? null,
    runtime: j.runtime ?? null,
    result: j.result ?? null,
    error: j.error,
    createdAt: iso(j.createdAt),
    updatedAt: iso(j.updatedAt),
    startedAt: iso(j.startedAt),
    finishedAt: iso(j.finishedAt),
  };
}

export function keyJson(k: ApiKeyRow) {
  return {
    id: k.id,
    name: k.name,
    prefix: k.prefix,
    scopes: k.scopes,
    createdAt: iso(k.createdAt),
    lastUsedAt: iso(k.lastUsedAt),
    revokedAt: iso(k.revokedAt),
  };
}

export function datasetJson(d: DatasetRow, extra: { versions?: number; latestReady?: number | null } = {}) {
  return { id: d.id, name: d.name, description: d.description, createdAt: iso(d.createdAt), ...extra };
}

export function datasetVersionJson(d: DatasetRow, v: DatasetVersionRow, opts: { manifest?: boolean } = {}) {
  return {
    id: v.id,
    dataset: d.name,
    version: v.version,
    ref: `${d.name}@${v.version}`,
    state: v.state,
    options: v.options,
    error: v.error,
    createdAt: iso(v.createdAt),
    readyAt: iso(v.readyAt),
    ...(opts.manifest ? { manifest: v.manifest ?? null } : {}),
  };
}

export function checkpointJson(c: CheckpointRow, aliases: string[]) {
  const files = (c.files ?? {}) as CheckpointFiles;
  return {
    id: c.id,
    version: c.version,
    step: c.step,
    epoch: c.epoch,
    bytes: c.bytes,
    sha256: c.sha256,
    metrics: c.metrics ?? null,
    aliases,
    files: Object.fromEntries(Object.entries(files).map(([name, f]) => [name, { bytes: f.bytes, sha256: f.sha256 }])),
    createdAt: iso(c.createdAt),
  };
}
