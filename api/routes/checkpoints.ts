/**
 * Checkpoints of a job: versions, aliases (`latest`, `best`, user-set), and short-lived presigned
 * download URLs for the full training state or the backbone export.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { CHECKPOINT_REF_MESSAGE, CHECKPOINT_REF_PATTERN } from '../../contracts/jobSpec.js';
import { CHECKPOINT_FILES } from '../../contracts/storageKeys.js';
import {
  aliasesOf,
  deleteAlias,
  listCheckpoints,
  parseVersionRef,
  RESERVED_ALIASES,
  resolveCheckpoint,
  setAlias,
  type CheckpointFiles,
  type CheckpointRow,
} from '../../db/checkpointQueries.js';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps } from '../deps.js';
import { ApiError, notFound } from '../errors.js';
import { commonErrors, conflictError, json, jsonBody, JobIdParam, notFoundError, router, security } from '../openapi.js';
import { checkpointJson } from '../serialize.js';
import { loadJob } from './jobs.js';

const CheckpointSchema = z
  .object({
    id: z.string(),
    version: z.number().int(),
    step: z.number().int(),
    epoch: z.number().nullable(),
    bytes: z.number().openapi({ description: 'Total size of all files of this version' }),
    sha256: z.string().openapi({ description: 'sha256 of state.safetensors (the file a resume reads); every file has its own in `files`' }),
    metrics: z.unknown(),
    aliases: z.array(z.string()),
    files: z
      .record(z.string(), z.object({ bytes: z.number(), sha256: z.string() }))
      .openapi({ description: 'Each file of the version by name, with its own size and sha256 (what a download is checked against)' }),
    createdAt: z.string().nullable(),
  })
  .openapi('Checkpoint');

// Built from @hono/zod-openapi's z (not the contract's schema object): zod 4 attaches .openapi()
// only to schemas created after the extension loaded, and contracts/ must not depend on import order.
const RefParams = JobIdParam.extend({
  ref: z.string().regex(CHECKPOINT_REF_PATTERN, CHECKPOINT_REF_MESSAGE).openapi({ param: { name: 'ref', in: 'path' }, example: 'latest' }),
});
const userAlias = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,31}$/, 'lowercase letter first, then letters, digits, _ or -, at most 32')
  .refine((a) => parseVersionRef(a) === undefined, 'would read as a version number')
  .refine((a) => !(RESERVED_ALIASES as readonly string[]).includes(a), '`latest` and `best` are maintained by Momentum');
const AliasParams = JobIdParam.extend({ alias: userAlias.openapi({ param: { name: 'alias', in: 'path' }, example: 'production' }) });

const FILE_KINDS = { state: CHECKPOINT_FILES.state, backbone: CHECKPOINT_FILES.backbone } as const;

const listRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/checkpoints',
  operationId: 'listCheckpoints',
  tags: ['checkpoints'],
  summary: 'Checkpoint versions of a job, with their aliases',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  request: { params: JobIdParam },
  responses: {
    200: json(z.object({ checkpoints: z.array(CheckpointSchema), aliases: z.record(z.string(), z.number().int()) })),
    ...commonErrors,
    ...notFoundError,
  },
});

const getRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/checkpoints/{ref}',
  operationId: 'getCheckpoint',
  tags: ['checkpoints'],
  summary: 'One checkpoint by version (`3`, `v3`) or alias (`latest`, `best`, your own)',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  request: { params: RefParams },
  responses: { 200: json(CheckpointSchema), ...commonErrors, ...notFoundError },
});

const downloadRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/checkpoints/{ref}/download',
  operationId: 'getCheckpointDownloadUrl',
  tags: ['checkpoints'],
  summary: 'A short-lived presigned URL for the full state or the backbone export',
  description: 'The URL expires after `ttl` seconds (default SIGNED_URL_TTL_SECONDS, at most SIGNED_URL_MAX_TTL_SECONDS) and names the file `<job>-v<N>-<file>.safetensors`. With `redirect=true` the answer is a 302 to it.',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  request: {
    params: RefParams,
    query: z.strictObject({
      file: z.enum(['state', 'backbone']).default('backbone'),
      ttl: z.coerce.number().int().min(1).optional().openapi({ description: 'Seconds the URL stays valid' }),
      redirect: z.enum(['true', 'false']).default('false'),
    }),
  },
  responses: {
    200: json(
      z
        .object({
          url: z.string(),
          expiresAt: z.string(),
          fileName: z.string(),
          file: z.enum(['state', 'backbone']),
          version: z.number().int(),
          bytes: z.number(),
          sha256: z.string(),
        })
        .openapi('Download'),
    ),
    302: { description: 'Redirect to the presigned URL' },
    ...commonErrors,
    ...notFoundError,
  },
});

const putAliasRoute = createRoute({
  method: 'put',
  path: '/jobs/{id}/checkpoints/aliases/{alias}',
  operationId: 'setCheckpointAlias',
  tags: ['checkpoints'],
  summary: 'Point a user alias at a checkpoint version',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: AliasParams, body: jsonBody(z.strictObject({ version: z.number().int().min(0) })) },
  responses: { 200: json(z.object({ alias: z.string(), version: z.number().int() })), ...commonErrors, ...notFoundError, ...conflictError },
});

const deleteAliasRoute = createRoute({
  method: 'delete',
  path: '/jobs/{id}/checkpoints/aliases/{alias}',
  operationId: 'deleteCheckpointAlias',
  tags: ['checkpoints'],
  summary: 'Remove a user alias',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: AliasParams },
  responses: { 204: { description: 'Removed' }, ...commonErrors, ...notFoundError },
});

async function loadCheckpoint(deps: AppDeps, jobId: string, ref: string): Promise<CheckpointRow> {
  const cp = await resolveCheckpoint(deps.db, jobId, ref);
  if (!cp) throw new ApiError(404, 'checkpoint_not_found', `job ${jobId} has no checkpoint ${JSON.stringify(ref)}`, [{ path: 'ref', message: 'no such version or alias', in: 'path' }]);
  return cp;
}

function aliasesByVersion(aliases: Record<string, number>): Map<number, string[]> {
  const byVersion = new Map<number, string[]>();
  for (const [alias, version] of Object.entries(aliases)) byVersion.set(version, [...(byVersion.get(version) ?? []), alias]);
  return byVersion;
}

/** The `ttl` query of a download: at most SIGNED_URL_MAX_TTL_SECONDS. */
export function checkTtl(deps: AppDeps, ttl: number | undefined): void {
  const max = deps.config.SIGNED_URL_MAX_TTL_SECONDS;
  if (ttl !== undefined && ttl > max) {
    throw new ApiError(400, 'validation_failed', `ttl: at most ${max} seconds`, [{ path: 'ttl', message: `must be <= ${max}`, in: 'query' }]);
  }
}

/** A presigned URL of one file of a checkpoint, named `<prefix>-<file>` for the browser. Shared with model downloads. */
export async function presignCheckpointFile(deps: AppDeps, cp: CheckpointRow, q: { file: 'state' | 'backbone'; ttl?: number }, namePrefix: string) {
  const max = deps.config.SIGNED_URL_MAX_TTL_SECONDS;
  const ttl = q.ttl ?? Math.min(deps.config.SIGNED_URL_TTL_SECONDS, max);
  const name = FILE_KINDS[q.file];
  const file = ((cp.files ?? {}) as CheckpointFiles)[name];
  if (!file) {
    throw new ApiError(404, 'file_not_found', `checkpoint v${cp.version} of job ${cp.jobId} has no ${name}`, [{ path: 'file', message: 'not in this checkpoint', in: 'query' }]);
  }
  const fileName = `${namePrefix}-${name}`;
  const url = await deps.storage.presignGet(file.key, ttl, fileName);
  const expiresAt = new Date((deps.clock ?? { now: () => new Date() }).now().getTime() + ttl * 1000).toISOString();
  return { url, expiresAt, fileName, file: q.file, version: cp.version, bytes: file.bytes, sha256: file.sha256 };
}

export function checkpointRoutes(deps: AppDeps) {
  const app = router();

  app.openapi(listRoute, async (c) => {
    const job = await loadJob(deps, c.get('principal').tenantId, c.req.valid('param').id);
    const [rows, aliases] = await Promise.all([listCheckpoints(deps.db, job.id), aliasesOf(deps.db, job.id)]);
    const byVersion = aliasesByVersion(aliases);
    return c.json({ checkpoints: rows.map((r) => checkpointJson(r, byVersion.get(r.version) ?? [])), aliases }, 200);
  });

  app.openapi(getRoute, async (c) => {
    const { id, ref } = c.req.valid('param');
    const job = await loadJob(deps, c.get('principal').tenantId, id);
    const cp = await loadCheckpoint(deps, job.id, ref);
    const byVersion = aliasesByVersion(await aliasesOf(deps.db, job.id));
    return c.json(checkpointJson(cp, byVersion.get(cp.version) ?? []), 200);
  });

  app.openapi(downloadRoute, async (c) => {
    const { id, ref } = c.req.valid('param');
    const q = c.req.valid('query');
    checkTtl(deps, q.ttl);
    const job = await loadJob(deps, c.get('principal').tenantId, id);
    const cp = await loadCheckpoint(deps, job.id, ref);
    const link = await presignCheckpointFile(deps, cp, q, `${job.id}-v${cp.version}`);
    if (q.redirect === 'true') return c.redirect(link.url, 302);
    return c.json(link, 200);
  });

  app.openapi(putAliasRoute, async (c) => {
    const { id, alias } = c.req.valid('param');
    const job = await loadJob(deps, c.get('principal').tenantId, id);
    const { version } = c.req.valid('json');
    const cp = await resolveCheckpoint(deps.db, job.id, String(version));
    if (!cp) throw new ApiError(422, 'checkpoint_not_found', `job ${job.id} has no checkpoint version ${version}`, [{ path: 'version', message: 'no such version', in: 'body' }]);
    await setAlias(deps.db, job.id, alias, cp.id);
    return c.json({ alias, version: cp.version }, 200);
  });

  app.openapi(deleteAliasRoute, async (c) => {
    const { id, alias } = c.req.valid('param');
    const job = await loadJob(deps, c.get('principal').tenantId, id);
    if (!(await deleteAlias(deps.db, job.id, alias))) throw notFound('alias', alias, 'alias');
    return c.body(null, 204);
  });

  return app;
}
