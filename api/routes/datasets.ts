/**
 * Datasets and versions. Creating a version answers presigned upload URL(s): one PUT, or a
 * multipart plan for large archives. Finalizing checks the upload exists and starts the ingest job.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { refuseOverStorageLimit } from '../quotas.js';
import { datasetName, datasetVersionOptions } from '../../contracts/datasetSpec.js';
import { DATASET_VERSION_STATES } from '../../db/schema.js';
import { datasetUploadKey, datasetVersionPrefix } from '../../contracts/storageKeys.js';
import {
  createDataset,
  createDatasetVersion,
  deleteDatasetVersions,
  getDataset,
  getDatasetVersion,
  listDatasets,
  listDatasetVersions,
  startIngestion,
  type DatasetRow,
  type DatasetVersionRow,
} from '../../db/datasets.js';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps } from '../deps.js';
import { ApiError, conflict, notFound } from '../errors.js';
import { commonErrors, conflictError, json, jsonBody, Json, notFoundError, router, security, uploadMismatchError } from '../openapi.js';
import { datasetJson, datasetVersionJson, jobJson } from '../serialize.js';
import { abortIssuedUploads, completeMultipartUpload, isIssuedUpload, MAX_PARTS, MULTIPART_THRESHOLD_BYTES, startMultipartUpload } from '../uploads.js';
import { JobSchema } from './jobs.js';
import { explainUnready } from '../datasetReadiness.js';
import { isNotFound } from '../../common/storage.js';

const DatasetSchema = z
  .object({ id: z.string(), name: z.string(), description: z.string().nullable(), createdAt: z.string().nullable(), versions: z.number().optional(), latestReady: z.number().nullable().optional() })
  .openapi('Dataset');
const VersionSchema = z
  .object({
    id: z.string(),
    dataset: z.string(),
    version: z.number().int(),
    ref: z.string(),
    state: z.enum(DATASET_VERSION_STATES),
    options: z.unknown(),
    error: z.string().nullable(),
    createdAt: z.string().nullable(),
    readyAt: z.string().nullable(),
    manifest: Json.nullable().optional(),
  })
  .openapi('DatasetVersion');

const NameParam = z.object({ name: datasetName.openapi({ param: { name: 'name', in: 'path' }, example: 'fmnist' }) });
const VersionParams = NameParam.extend({
  version: z
    .union([z.literal('latest'), z.coerce.number().int().min(1).max(999_999)])
    .openapi({ param: { name: 'version', in: 'path' }, example: '1', type: 'string' }),
});

const UploadSchema = z
  .object({
    method: z.enum(['PUT', 'multipart']),
    /** Single PUT: send the archive's bytes to this URL. */
    url: z.string().optional(),
    expiresAt: z.string(),
    uploadId: z.string().optional(),
    partSize: z.number().optional(),
    parts: z.array(z.object({ partNumber: z.number().int(), url: z.string() })).optional(),
    /** Multipart: POST the parts' ETags here when every part is uploaded. */
    completeUrl: z.string().optional(),
  })
  .openapi('Upload');

const createDatasetRoute = createRoute({
  method: 'post',
  path: '/datasets',
  operationId: 'createDataset',
  tags: ['datasets'],
  summary: 'Create a dataset',
  security,
  middleware: [requireScope('datasets:write')] as const,
  request: { body: jsonBody(z.strictObject({ name: datasetName, description: z.string().max(2000).optional() })) },
  responses: { 201: json(DatasetSchema), ...commonErrors, ...conflictError },
});

const listDatasetsRoute = createRoute({
  method: 'get',
  path: '/datasets',
  operationId: 'listDatasets',
  tags: ['datasets'],
  summary: 'List datasets',
  security,
  middleware: [requireScope('datasets:read')] as const,
  responses: { 200: json(z.object({ datasets: z.array(DatasetSchema) })), ...commonErrors },
});

const getDatasetRoute = createRoute({
  method: 'get',
  path: '/datasets/{name}',
  operationId: 'getDataset',
  tags: ['datasets'],
  summary: 'A dataset with its versions',
  security,
  middleware: [requireScope('datasets:read')] as const,
  request: { params: NameParam },
  responses: { 200: json(DatasetSchema.extend({ versionList: z.array(VersionSchema) })), ...commonErrors, ...notFoundError },
});

const deleteDatasetRoute = createRoute({
  method: 'delete',
  path: '/datasets/{name}',
  operationId: 'deleteDataset',
  tags: ['datasets'],
  summary: 'Delete a dataset and its stored data (refused while unfinished jobs use it)',
  security,
  middleware: [requireScope('datasets:write')] as const,
  request: { params: NameParam },
  responses: { 204: { description: 'Deleted' }, ...commonErrors, ...notFoundError, ...conflictError },
});

const createVersionRoute = createRoute({
  method: 'post',
  path: '/datasets/{name}/versions',
  operationId: 'createDatasetVersion',
  tags: ['datasets'],
  summary: 'Create a version and get presigned upload URL(s) for its archive',
  security,
  middleware: [requireScope('datasets:write')] as const,
  request: {
    params: NameParam,
    body: jsonBody(
      z.strictObject({
        options: datasetVersionOptions,
        fileName: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'letters, digits, ".", "_", "-", at most 128').default('archive'),
        /**
         * Size of the archive in bytes. The PUT URL is signed for exactly this length (S3 refuses
         * another), and finalize refuses an upload of any other size. Above 64 MiB (or with
         * multipart: true) the upload is multipart.
         */
        sizeBytes: z.number().int().min(1).max(5 * 1024 ** 4),
        multipart: z.boolean().optional(),
      }),
    ),
  },
  responses: { 201: json(VersionSchema.extend({ upload: UploadSchema })), ...commonErrors, ...notFoundError },
});

const listVersionsRoute = createRoute({
  method: 'get',
  path: '/datasets/{name}/versions',
  operationId: 'listDatasetVersions',
  tags: ['datasets'],
  summary: 'Versions of a dataset',
  security,
  middleware: [requireScope('datasets:read')] as const,
  request: { params: NameParam },
  responses: { 200: json(z.object({ versions: z.array(VersionSchema) })), ...commonErrors, ...notFoundError },
});

const getVersionRoute = createRoute({
  method: 'get',
  path: '/datasets/{name}/versions/{version}',
  operationId: 'getDatasetVersion',
  tags: ['datasets'],
  summary: 'A version with its manifest (`latest` = newest ready version; 409 `dataset_not_ready` saying what the newest is doing when none is ready)',
  security,
  middleware: [requireScope('datasets:read')] as const,
  request: { params: VersionParams },
  responses: { 200: json(VersionSchema), ...commonErrors, ...notFoundError, ...conflictError },
});

const completeUploadRoute = createRoute({
  method: 'post',
  path: '/datasets/{name}/versions/{version}/upload/complete',
  operationId: 'completeDatasetUpload',
  tags: ['datasets'],
  summary: 'Complete a multipart upload with the ETags of its parts',
  security,
  middleware: [requireScope('datasets:write')] as const,
  request: {
    params: VersionParams,
    body: jsonBody(
      z.strictObject({
        uploadId: z.string().min(1).max(1024),
        parts: z.array(z.strictObject({ partNumber: z.number().int().min(1).max(MAX_PARTS), etag: z.string().min(1).max(256) })).min(1).max(MAX_PARTS),
      }),
    ),
  },
  responses: { 200: json(VersionSchema), ...commonErrors, ...notFoundError, ...conflictError },
});

const finalizeRoute = createRoute({
  method: 'post',
  path: '/datasets/{name}/versions/{version}/finalize',
  operationId: 'finalizeDatasetVersion',
  tags: ['datasets'],
  summary: 'Check the upload (its size against sizeBytes: 422 upload_size_mismatch) and start ingestion (an ingest job)',
  security,
  middleware: [requireScope('datasets:write')] as const,
  request: { params: VersionParams },
  responses: { 202: json(z.object({ version: VersionSchema, job: JobSchema })), ...commonErrors, ...notFoundError, ...conflictError, ...uploadMismatchError },
});

const deleteVersionRoute = createRoute({
  method: 'delete',
  path: '/datasets/{name}/versions/{version}',
  operationId: 'deleteDatasetVersion',
  tags: ['datasets'],
  summary: 'Delete a version and its stored data (refused while unfinished jobs use it)',
  security,
  middleware: [requireScope('datasets:write')] as const,
  request: { params: VersionParams },
  responses: { 204: { description: 'Deleted' }, ...commonErrors, ...notFoundError, ...conflictError },
});

export function datasetRoutes(deps: AppDeps) {
  const app = router();
  const clock = deps.clock ?? { now: () => new Date() };

  async function loadDataset(tenantId: string, name: string): Promise<DatasetRow> {
    const d = await getDataset(deps.db, tenantId, name);
    if (!d) throw notFound('dataset', name, 'name');
    return d;
  }
  async function loadVersion(d: DatasetRow, version: number | 'latest'): Promise<DatasetVersionRow> {
    const v = await getDatasetVersion(deps.db, d.id, version);
    if (!v && version === 'latest') {
      // Nothing ready yet: say what the newest version is doing (ingesting, failed and why).
      const why = await explainUnready(deps.db, d.tenantId, d.name, 'latest');
      if (why && why.state !== 'none') throw conflict('dataset_not_ready', why.message, [{ path: 'version', message: `${why.ref} is ${why.state.replace('_', ' ')}`, in: 'path' }]);
    }
    if (!v) throw notFound('dataset version', `${d.name}@${version}`, 'version');
    return v;
  }
  /**
   * The stored archive must be what was declared (its size) and, for a version finalized before (a
   * failed one retried), the very bytes finalized then (their ETag): bytes PUT after a finalize are
   * never ingested. A wrong-sized object is deleted, so that the client may upload again.
   */
  async function refuseUnexpectedUpload(v: DatasetVersionRow, head: { bytes: number; etag?: string }): Promise<void> {
    if (v.sizeBytes !== null && head.bytes !== v.sizeBytes) {
      if (v.state === 'awaiting_upload') await deps.storage.deletePrefix(v.uploadKey).catch(() => {});
      throw new ApiError(422, 'upload_size_mismatch', `the uploaded archive is ${head.bytes} bytes, but the version declared sizeBytes ${v.sizeBytes}; upload exactly the declared bytes`, [
        { path: 'sizeBytes', message: `declared ${v.sizeBytes}, uploaded ${head.bytes}`, in: 'body' },
      ]);
    }
    if (v.uploadEtag !== null && head.etag !== v.uploadEtag) {
      throw conflict('upload_changed', 'the archive was replaced after this version was first finalized; create a new version for new bytes', [
        { path: 'upload', message: 'changed after finalize', in: 'body' },
      ]);
    }
  }
  /** Unfinished multipart uploads keep their parts in S3 until aborted: abort them with their version. */
  const abortUploads = (key: string) =>
    abortIssuedUploads(deps.storage, key).catch((err) => deps.logger.warn({ err, key }, 'could not abort multipart uploads; the upload sweeper will not see them again'));
  const inUse = (jobIds: string[]) =>
    conflict('dataset_in_use', `unfinished jobs use this data: ${jobIds.join(', ')}; cancel them or wait`, jobIds.map((id) => ({ path: 'jobs', message: id })));

  app.openapi(createDatasetRoute, async (c) => {
    const { name, description } = c.req.valid('json');
    const row = await createDataset(deps.db, c.get('principal').tenantId, name, description ?? null);
    if (!row) throw conflict('dataset_exists', `a dataset named ${JSON.stringify(name)} exists`, [{ path: 'name', message: 'already exists', in: 'body' }]);
    return c.json(datasetJson(row), 201);
  });

  app.openapi(listDatasetsRoute, async (c) => {
    const rows = await listDatasets(deps.db, c.get('principal').tenantId);
    return c.json({ datasets: rows.map((r) => datasetJson(r, { versions: r.versions, latestReady: r.latestReady })) }, 200);
  });

  app.openapi(getDatasetRoute, async (c) => {
    const d = await loadDataset(c.get('principal').tenantId, c.req.valid('param').name);
    const versions = await listDatasetVersions(deps.db, d.id);
    const latestReady = versions.filter((v) => v.state === 'ready').at(-1)?.version ?? null;
    return c.json({ ...datasetJson(d, { versions: versions.length, latestReady }), versionList: versions.map((v) => datasetVersionJson(d, v)) }, 200);
  });

  app.openapi(deleteDatasetRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const d = await loadDataset(tenantId, c.req.valid('param').name);
    const awaiting = (await listDatasetVersions(deps.db, d.id)).filter((v) => v.state === 'awaiting_upload');
    const result = await deleteDatasetVersions(deps.db, d);
    if (result.outcome === 'in_use') throw inUse(result.jobIds);
    for (const v of awaiting) await abortUploads(v.uploadKey);
    // Rows first, then bytes: a crash in between leaves orphaned objects, never rows without data.
    await deps.storage.deletePrefix(`datasets/${tenantId}/${d.id}/`);
    return c.body(null, 204);
  });

  app.openapi(createVersionRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const d = await loadDataset(tenantId, c.req.valid('param').name);
    const body = c.req.valid('json');
    await refuseOverStorageLimit(deps, tenantId);
    // Uploads of large archives take a while: their URLs live as long as the configuration allows,
    // and the version may be finalized until a grace period after that (then the sweeper closes it).
    const ttl = deps.config.SIGNED_URL_MAX_TTL_SECONDS;
    const now = clock.now().getTime();
    const expiresAt = new Date(now + ttl * 1000).toISOString();
    const deadline = new Date(now + (ttl + deps.config.DATASET_UPLOAD_GRACE_SECONDS) * 1000);
    const v = await createDatasetVersion(deps.db, d.id, body.options, (n) => datasetUploadKey(tenantId, d.id, n, body.fileName), {
      sizeBytes: body.sizeBytes,
      deadline,
    });
    const multipart = body.multipart ?? body.sizeBytes > MULTIPART_THRESHOLD_BYTES;
    let upload;
    if (multipart) {
      const plan = await startMultipartUpload(deps.storage, v.uploadKey, body.sizeBytes, ttl);
      upload = { method: 'multipart' as const, expiresAt, ...plan, completeUrl: `/v1/datasets/${d.name}/versions/${v.version}/upload/complete` };
    } else {
      upload = { method: 'PUT' as const, url: await deps.storage.presignPut(v.uploadKey, ttl, { contentLength: body.sizeBytes }), expiresAt };
    }
    return c.json({ ...datasetVersionJson(d, v), upload }, 201);
  });

  app.openapi(listVersionsRoute, async (c) => {
    const d = await loadDataset(c.get('principal').tenantId, c.req.valid('param').name);
    return c.json({ versions: (await listDatasetVersions(deps.db, d.id)).map((v) => datasetVersionJson(d, v)) }, 200);
  });

  app.openapi(getVersionRoute, async (c) => {
    const { name, version } = c.req.valid('param');
    const d = await loadDataset(c.get('principal').tenantId, name);
    return c.json(datasetVersionJson(d, await loadVersion(d, version), { manifest: true }) as never, 200);
  });

  app.openapi(completeUploadRoute, async (c) => {
    const { name, version } = c.req.valid('param');
    const d = await loadDataset(c.get('principal').tenantId, name);
    const v = await loadVersion(d, version);
    if (v.state !== 'awaiting_upload') throw conflict('wrong_version_state', `version is ${v.state}; its upload is closed`);
    const { uploadId, parts } = c.req.valid('json');
    if (!(await isIssuedUpload(deps.storage, v.uploadKey, uploadId))) {
      throw new ApiError(400, 'upload_not_found', 'no multipart upload with this uploadId was started for this version', [{ path: 'uploadId', message: 'unknown upload', in: 'body' }]);
    }
    try {
      await completeMultipartUpload(deps.storage, v.uploadKey, uploadId, parts);
    } catch (err) {
      // S3 answers 4xx for an unknown upload id, a missing or wrong part, parts too small: the client's to fix.
      const name = (err as Error).name;
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? 0;
      if (isNotFound(err) || (status >= 400 && status < 500)) {
        throw new ApiError(400, 'upload_incomplete', `S3 refused to complete the upload: ${name}`, [{ path: 'parts', message: (err as Error).message || name, in: 'body' }]);
      }
      throw err;
    }
    return c.json(datasetVersionJson(d, v) as never, 200);
  });

  app.openapi(finalizeRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const { name, version } = c.req.valid('param');
    const d = await loadDataset(tenantId, name);
    const v = await loadVersion(d, version);
    if (v.state !== 'awaiting_upload' && v.state !== 'failed') {
      throw conflict('wrong_version_state', `version is ${v.state}; only a version awaiting its upload (or failed) can be finalized`);
    }
    if (v.state === 'awaiting_upload' && v.uploadDeadline && v.uploadDeadline.getTime() < clock.now().getTime()) {
      throw conflict('upload_expired', `the upload of this version closed at ${v.uploadDeadline.toISOString()}; create a new version`, [
        { path: 'version', message: 'upload deadline passed', in: 'path' },
      ]);
    }
    const head = await deps.storage.head(v.uploadKey);
    if (!head || head.bytes === 0) {
      throw conflict('upload_missing', 'no archive was uploaded for this version yet; PUT it to the upload URL first', [{ path: 'upload', message: 'missing', in: 'body' }]);
    }
    await refuseUnexpectedUpload(v, head);
    const result = await startIngestion(deps.db, tenantId, d, v.id, head.etag ?? null);
    if (result.outcome === 'wrong_state') throw conflict('wrong_version_state', `version is ${result.state}`);
    deps.onOutboxWritten?.();
    return c.json({ version: datasetVersionJson(d, result.version), job: jobJson(result.job) } as never, 202);
  });

  app.openapi(deleteVersionRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const { name, version } = c.req.valid('param');
    const d = await loadDataset(tenantId, name);
    const v = await loadVersion(d, version);
    const result = await deleteDatasetVersions(deps.db, d, [v.id]);
    if (result.outcome === 'in_use') throw inUse(result.jobIds);
    if (v.state === 'awaiting_upload') await abortUploads(v.uploadKey);
    await deps.storage.deletePrefix(datasetVersionPrefix(tenantId, d.id, v.version));
    return c.body(null, 204);
  });

  return app;
}
