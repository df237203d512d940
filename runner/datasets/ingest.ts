/**
 * The ingestion job's body: one dataset version's upload in S3 → validated, normalized shards and a
 * manifest in S3 → the version `ready` in Postgres, or `failed` with a reason that names the file.
 *
 * Nothing is half-registered: the manifest reaches Postgres only after every shard and the manifest
 * object are in S3, in one conditional UPDATE; on bad input the version is marked failed first and
 * its shards removed after (so a concurrent run that already made it ready keeps its shards).
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { datasetVersionOptions, type DatasetManifest, type DatasetVersionOptions } from '../../contracts/datasetSpec.js';
import { datasetManifestKey, datasetShardKey, datasetVersionPrefix } from '../../contracts/storageKeys.js';
import type { Logger } from '../../common/logger.js';
import { NotFoundError, type Storage } from '../../common/storage.js';
import type { Db } from '../../db/client.js';
import {
  claimDatasetVersionForIngest,
  getDatasetVersionWithTenant,
  markDatasetVersionFailed,
  markDatasetVersionReady,
  type DatasetVersionRow,
} from '../../db/datasetVersions.js';
import { convertUpload } from './convert.js';
import { DatasetIngestError } from './errors.js';
import { SHARD_MAGIC, SHARD_VERSION } from './shardFormat.js';
import { writeSplitShards } from './shardWriter.js';
import type { IngestLimits } from './limits.js';

export interface IngestContext {
  db: Db;
  storage: Storage;
  log: Logger;
  /** Scratch space for the upload and the staged pixels (about the decoded dataset's size). Default: os.tmpdir(). */
  workDir?: string;
  /** Target shard size in bytes (default 32 MiB); tests make it small to get several shards. */
  shardBytes?: number;
  /** Caps on the upload (defaults: limits.ts); tests make them small. */
  limits?: Partial<IngestLimits>;
  /** Runs inside the transaction that marks the version ready (e.g. the ingest job's own result). */
  onReady?: Parameters<typeof markDatasetVersionReady>[4];
}

/**
 * Ingests one dataset version and returns its manifest. A version already `ready` returns its
 * manifest unchanged (a retried job); one `failed` throws its recorded reason.
 *
 * Bad input throws DatasetIngestError after marking the version failed with that message. Any other
 * error (S3 or Postgres unreachable) removes what this run wrote, leaves the version `ingesting` and
 * rethrows, so that the job's retry can succeed; call `failDatasetVersion` on the last attempt.
 */
export async function ingestDatasetVersion(ctx: IngestContext, datasetVersionId: string): Promise<DatasetManifest> {
  const found = await getDatasetVersionWithTenant(ctx.db, datasetVersionId);
  if (!found) throw new DatasetIngestError('not_ingestable', `no dataset version ${datasetVersionId}`);
  const { version: row, tenantId } = found;
  if (row.state === 'ready') return row.manifest as DatasetManifest;
  if (row.state === 'failed') throw new DatasetIngestError('not_ingestable', `dataset version already failed: ${row.error}`);
  if (!(await claimDatasetVersionForIngest(ctx.db, datasetVersionId))) {
    throw new DatasetIngestError('not_ingestable', `dataset version ${datasetVersionId} is no longer awaiting ingestion`);
  }
  const log = ctx.log.child({ datasetVersionId });
  const keys = {
    prefix: datasetVersionPrefix(tenantId, row.datasetId, row.version),
    manifest: datasetManifestKey(tenantId, row.datasetId, row.version),
    shard: (split: string, i: number) => datasetShardKey(tenantId, row.datasetId, row.version, split, i),
  };
  const uploadName = basename(row.uploadKey);
  const workDir = await mkdtemp(join(ctx.workDir ?? tmpdir(), 'momentum-ingest-'));
  const started = Date.now();
  try {
    const parsed = datasetVersionOptions.safeParse(row.options);
    if (!parsed.success) {
      throw new DatasetIngestError('not_ingestable', `invalid dataset options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    }
    const options = parsed.data;
    // Leftovers of an earlier, interrupted attempt at this same version.
    await removeOutputs(ctx.storage, keys.prefix, keys.manifest);
    const source = await downloadUpload(ctx.storage, row, join(workDir, 'upload'), uploadName);
    log.info({ bytes: source.bytes, format: options.format }, 'ingest: upload downloaded');
    const manifest = await convertAndShard(ctx, { path: join(workDir, 'upload'), uploadName, options, workDir, log, keys, source });
    await ctx.storage.put(keys.manifest, JSON.stringify(manifest, null, 2), 'application/json');
    if (!(await markDatasetVersionReady(ctx.db, datasetVersionId, manifest, keys.manifest, ctx.onReady))) {
      const now = await getDatasetVersionWithTenant(ctx.db, datasetVersionId);
      if (now?.version.state === 'ready') return now.version.manifest as DatasetManifest; // another run finished it
      await removeOutputs(ctx.storage, keys.prefix, keys.manifest);
      throw new DatasetIngestError('not_ingestable', `dataset version left ingesting while it was ingested (now ${now?.version.state ?? 'deleted'})`);
    }
    const seconds = (Date.now() - started) / 1000;
    const images = manifest.splits.train.count + (manifest.splits.val?.count ?? 0);
    log.info({ images, seconds, imagesPerSecond: Math.round(images / seconds) }, 'ingest: dataset version ready');
    return manifest;
  } catch (err) {
    if (err instanceof DatasetIngestError) {
      log.warn({ reason: err.message, kind: err.kind }, 'ingest: dataset refused');
      await failDatasetVersion(ctx, datasetVersionId, err.message);
    } else {
      await removeOutputs(ctx.storage, keys.prefix, keys.manifest).catch((e) => log.error({ err: e }, 'ingest: cleanup failed'));
    }
    throw err;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/** Marks an ingesting version failed with `reason`, then removes its shards and manifest from S3. */
export async function failDatasetVersion(ctx: Pick<IngestContext, 'db' | 'storage' | 'log'>, datasetVersionId: string, reason: string): Promise<void> {
  const marked = await markDatasetVersionFailed(ctx.db, datasetVersionId, reason);
  if (!marked) return; // ready by another run, or already failed: its objects are not ours to delete
  const found = await getDatasetVersionWithTenant(ctx.db, datasetVersionId);
  if (!found) return;
  const { version: row, tenantId } = found;
  await removeOutputs(ctx.storage, datasetVersionPrefix(tenantId, row.datasetId, row.version), datasetManifestKey(tenantId, row.datasetId, row.version));
}

async function convertAndShard(
  ctx: IngestContext,
  a: {
    path: string;
    uploadName: string;
    options: DatasetVersionOptions;
    workDir: string;
    log: Logger;
    keys: { shard: (split: string, i: number) => string };
    source: { key: string; bytes: number; sha256: string };
  },
): Promise<DatasetManifest> {
  const converted = await convertUpload({ path: a.path, uploadName: a.uploadName, options: a.options, workDir: a.workDir, log: a.log, limits: ctx.limits });
  try {
    a.log.info({ examples: converted.staging.count, shape: converted.shape, classes: converted.classes.length }, 'ingest: upload read');
    const common = { storage: ctx.storage, staging: converted.staging, shape: converted.shape, numClasses: converted.classes.length, shardBytes: ctx.shardBytes };
    const train = await writeSplitShards({ ...common, indices: converted.plan.train, shardKey: (i) => a.keys.shard('train', i) });
    const val = converted.plan.val ? await writeSplitShards({ ...common, indices: converted.plan.val, shardKey: (i) => a.keys.shard('val', i) }) : undefined;
    return {
      manifestVersion: 1,
      format: a.options.format,
      height: converted.shape.height,
      width: converted.shape.width,
      channels: converted.shape.channels,
      classes: converted.classes,
      splits: val ? { train, val } : { train },
      source: a.source,
      createdAt: new Date().toISOString(),
      shardFormat: `${SHARD_MAGIC}/${SHARD_VERSION}`,
      splitSource: converted.plan.source,
      options: a.options,
    };
  } finally {
    await converted.staging.dispose();
  }
}

/**
 * Downloads the archive, which must be the one finalized: the same ETag (recorded at finalize) and
 * the declared size. Bytes PUT after the finalize (the presigned URL lives on until it expires) are
 * refused here, never ingested.
 */
async function downloadUpload(
  storage: Storage,
  row: Pick<DatasetVersionRow, 'uploadKey' | 'uploadEtag' | 'sizeBytes'>,
  path: string,
  uploadName: string,
): Promise<{ key: string; bytes: number; sha256: string }> {
  const key = row.uploadKey;
  let body;
  try {
    const got = await storage.getStreamWithEtag(key);
    body = got.body;
    const changed = (row.uploadEtag !== null && got.etag !== row.uploadEtag) || (row.sizeBytes !== null && got.bytes !== undefined && got.bytes !== row.sizeBytes);
    if (changed) {
      body.destroy();
      throw new DatasetIngestError('upload_changed', 'the archive in storage is not the one finalized (it was replaced after finalize); create a new version for new bytes', uploadName);
    }
  } catch (err) {
    if (err instanceof NotFoundError) throw new DatasetIngestError('missing_upload', 'the upload was not found in storage (was it uploaded?)', uploadName);
    throw err;
  }
  const hash = createHash('sha256');
  let bytes = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  await pipeline(body, tap, createWriteStream(path));
  return { key, bytes, sha256: hash.digest('hex') };
}

/** Shards and the manifest only: the upload stays, so a fixed version of the code can re-ingest it. */
async function removeOutputs(storage: Storage, prefix: string, manifestKey: string): Promise<void> {
  await storage.deletePrefix(`${prefix}shards/`);
  await storage.deletePrefix(manifestKey);
}
