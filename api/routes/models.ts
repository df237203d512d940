/**
 * Named models: create and list them, register a job's checkpoint as a new version, move aliases
 * (optionally compare-and-set, for CI), download a version, retrain from one, read a version's
 * lineage and the gate decisions of promotions. Model versions are addressed by number (`3`, `v3`)
 * or alias (`production`, `latest`) in the path; elsewhere as `name@ref` (contracts/models.ts).
 */
import { createRoute, z } from '@hono/zod-openapi';
import { datasetRef, CHECKPOINT_REF_MESSAGE, CHECKPOINT_REF_PATTERN, pretrainSpec } from '../../contracts/jobSpec.js';
import { MODEL_ALIAS_MESSAGE, MODEL_ALIAS_PATTERN, MODEL_NAME_PATTERN, modelAlias, parseModelSelector, RESERVED_MODEL_ALIASES } from '../../contracts/models.js';
import { resolveCheckpoint } from '../../db/checkpointQueries.js';
import { getTenantJob } from '../../db/jobQueries.js';
import { gateResultsOf, type GateResultRow } from '../../db/modelPromotion.js';
import {
  deleteModelAlias,
  ensureModel,
  findModel,
  lineageChain,
  lineageOfJob,
  listModels,
  listModelVersions,
  lockModel,
  modelAliasesOf,
  moveModelAlias,
  registerModelVersion,
  resolveModelSelector,
  resolveModelVersion,
  type ModelRow,
  type ModelVersionRow,
} from '../../db/models.js';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps } from '../deps.js';
import { ApiError, conflict, notFound, unresolvable } from '../errors.js';
import { commonErrors, conflictError, idempotencyKeyHeader, json, jsonBody, Json, notFoundError, router, security, unprocessableError } from '../openapi.js';
import { checkTtl, presignCheckpointFile } from './checkpoints.js';
import { JobSchema, retrainJob, submittedResponse } from './jobs.js';

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

// Path parameters, built from @hono/zod-openapi's z (see checkpoints.ts for why).
const NAME_MESSAGE = 'lowercase letters, digits, ".", "_" or "-", at most 63, starting with a letter or digit';
const NameParam = z.object({
  name: z.string().regex(MODEL_NAME_PATTERN, NAME_MESSAGE).openapi({ param: { name: 'name', in: 'path' }, example: 'fmnist-backbone' }),
});
const RefParams = NameParam.extend({
  ref: z
    .string()
    .refine((ref) => /^v?\d{1,6}$/.test(ref) || MODEL_ALIAS_PATTERN.test(ref), 'must be a version ("3", "v3") or an alias ("production", "latest")')
    .openapi({ param: { name: 'ref', in: 'path' }, example: 'production' }),
});
const AliasParams = NameParam.extend({
  alias: z
    .string()
    .regex(MODEL_ALIAS_PATTERN, MODEL_ALIAS_MESSAGE)
    .refine((a) => !(RESERVED_MODEL_ALIASES as readonly string[]).includes(a), '`latest` is maintained by Momentum (the newest version)')
    .openapi({ param: { name: 'alias', in: 'path' }, example: 'production' }),
});

const ModelSchema = z
  .object({ id: z.string(), name: z.string(), description: z.string().nullable(), versions: z.number().int(), aliases: z.record(z.string(), z.number().int()), createdAt: z.string().nullable() })
  .openapi('Model');

const LineageFields = {
  parent: z.object({ jobId: z.string().nullable(), checkpointVersion: z.number().int().nullable(), modelVersionId: z.string().nullable() }),
  dataset: z.object({ ref: z.string().nullable(), versionId: z.string().nullable(), manifestSha256: z.string().nullable() }),
  codeVersion: z.unknown(),
  spec: Json,
};

const ModelVersionSchema = z
  .object({
    id: z.string(),
    model: z.string(),
    version: z.number().int(),
    ref: z.string(),
    aliases: z.array(z.string()),
    jobId: z.string(),
    checkpointVersion: z.number().int(),
    checkpointId: z.string(),
    createdByJobId: z.string().nullable(),
    createdAt: z.string().nullable(),
    ...LineageFields,
  })
  .openapi('ModelVersion');

const LineageEntrySchema = z
  .object({
    relation: z.enum(['self', 'initFrom']),
    jobId: z.string(),
    jobState: z.string().nullable(),
    checkpointVersion: z.number().int().nullable(),
    modelVersion: z.object({ model: z.string(), version: z.number().int(), id: z.string() }).nullable(),
    dataset: z.object({ ref: z.string().nullable(), versionId: z.string().nullable(), manifestSha256: z.string().nullable() }),
    codeVersion: z.unknown(),
    spec: z.unknown(),
    createdAt: z.string().nullable(),
  })
  .openapi('LineageEntry');

const GateResultSchema = z
  .object({
    id: z.string(),
    probeJobId: z.string(),
    alias: z.string(),
    passed: z.boolean(),
    moved: z.boolean(),
    version: z.number().int().nullable(),
    previousVersion: z.number().int().nullable(),
    rules: z.array(Json),
    datasetVersionId: z.string().nullable(),
    protocol: z.unknown(),
    createdAt: z.string(),
  })
  .openapi('GateResult');

const tags = ['models'];

const createModelRoute = createRoute({
  method: 'post',
  path: '/models',
  operationId: 'createModel',
  tags,
  summary: 'Create a named model (registering a version also creates it)',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { body: jsonBody(z.strictObject({ name: z.string().regex(MODEL_NAME_PATTERN, NAME_MESSAGE).openapi({ example: 'fmnist-backbone' }), description: z.string().max(1000).optional() })) },
  responses: { 201: json(ModelSchema), ...commonErrors, ...conflictError },
});

const listModelsRoute = createRoute({
  method: 'get',
  path: '/models',
  operationId: 'listModels',
  tags,
  summary: 'Models of the tenant, with their aliases',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  responses: { 200: json(z.object({ models: z.array(ModelSchema) })), ...commonErrors },
});

const getModelRoute = createRoute({
  method: 'get',
  path: '/models/{name}',
  operationId: 'getModel',
  tags,
  summary: 'A model, with its versions and aliases',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  request: { params: NameParam },
  responses: { 200: json(ModelSchema.extend({ versionList: z.array(ModelVersionSchema) })), ...commonErrors, ...notFoundError },
});

const RegisterBody = z
  .strictObject({
    job: z.uuid().openapi({ description: 'A pretrain job of yours' }),
    checkpoint: z.string().regex(CHECKPOINT_REF_PATTERN, CHECKPOINT_REF_MESSAGE).default('latest'),
    aliases: z.array(modelAlias).max(8).default([]).openapi({ description: 'Point these aliases at the new version' }),
  })
  .openapi('RegisterModelVersion');

const registerRoute = createRoute({
  method: 'post',
  path: '/models/{name}/versions',
  operationId: 'registerModelVersion',
  tags,
  summary: "Register a job's checkpoint as the model's next version (creates the model on first use)",
  description: 'A checkpoint already registered in this model answers 200 with its version (the aliases are still moved). The version records its lineage: parent weights, dataset version and manifest sha256, spec, code version.',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: NameParam, body: jsonBody(RegisterBody) },
  responses: { 201: json(ModelVersionSchema), 200: json(ModelVersionSchema, 'Already registered'), ...commonErrors, ...unprocessableError },
});

const listVersionsRoute = createRoute({
  method: 'get',
  path: '/models/{name}/versions',
  operationId: 'listModelVersions',
  tags,
  summary: 'Versions of a model, oldest first',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  request: { params: NameParam },
  responses: { 200: json(z.object({ versions: z.array(ModelVersionSchema), aliases: z.record(z.string(), z.number().int()) })), ...commonErrors, ...notFoundError },
});

const getVersionRoute = createRoute({
  method: 'get',
  path: '/models/{name}/versions/{ref}',
  operationId: 'getModelVersion',
  tags,
  summary: 'One version by number (`3`, `v3`) or alias (`production`, `latest`)',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  request: { params: RefParams },
  responses: { 200: json(ModelVersionSchema), ...commonErrors, ...notFoundError },
});

const downloadRoute = createRoute({
  method: 'get',
  path: '/models/{name}/versions/{ref}/download',
  operationId: 'downloadModelVersion',
  tags,
  summary: "A short-lived presigned URL of a model version's backbone export or full state",
  description: 'As `GET /jobs/{id}/checkpoints/{ref}/download`; the file is named `<model>-v<N>-<file>.safetensors`.',
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
      z.object({
        url: z.string(),
        expiresAt: z.string(),
        fileName: z.string(),
        file: z.enum(['state', 'backbone']),
        version: z.number().int(),
        bytes: z.number(),
        sha256: z.string(),
        model: z.string(),
        modelVersion: z.number().int(),
        jobId: z.string(),
      }),
    ),
    302: { description: 'Redirect to the presigned URL' },
    ...commonErrors,
    ...notFoundError,
  },
});

const lineageRoute = createRoute({
  method: 'get',
  path: '/models/{name}/versions/{ref}/lineage',
  operationId: 'getModelVersionLineage',
  tags,
  summary: 'The chain of trainings behind a version, back to the first (from scratch)',
  description: 'Entry 0 is the version itself; each next one is the checkpoint the previous was initialised from (initFrom), with its dataset version, manifest sha256, spec and code version, and its model version when it is registered.',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  request: { params: RefParams },
  responses: { 200: json(z.object({ model: z.string(), version: z.number().int(), lineage: z.array(LineageEntrySchema) })), ...commonErrors, ...notFoundError },
});

const RetrainBody = z
  .strictObject({
    dataset: datasetRef,
    epochs: z.number().int().min(1).max(10000).optional(),
    maxSteps: pretrainSpec.shape.maxSteps,
    labels: pretrainSpec.shape.labels,
  })
  .openapi('RetrainModelRequest');

const retrainRoute = createRoute({
  method: 'post',
  path: '/models/{name}/versions/{ref}/retrain',
  operationId: 'retrainModelVersion',
  tags,
  summary: "A new pretrain job from a model version: its job's spec, its weights, another dataset version",
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: {
    params: RefParams,
    headers: idempotencyKeyHeader(),
    body: jsonBody(RetrainBody),
  },
  responses: { 201: json(JobSchema), ...commonErrors, ...notFoundError, ...conflictError, ...unprocessableError },
});

const putAliasRoute = createRoute({
  method: 'put',
  path: '/models/{name}/aliases/{alias}',
  operationId: 'setModelAlias',
  tags,
  summary: 'Point an alias at a version (optionally only if it still points where you expect)',
  description: '`expectedVersion` makes the move conditional: 409 `alias_moved` when the alias points elsewhere now (null: it must not exist yet).',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: {
    params: AliasParams,
    body: jsonBody(z.strictObject({ version: z.number().int().min(1), expectedVersion: z.number().int().min(1).nullable().optional() })),
  },
  responses: { 200: json(z.object({ alias: z.string(), version: z.number().int(), previousVersion: z.number().int().nullable(), moved: z.boolean() })), ...commonErrors, ...notFoundError, ...conflictError, ...unprocessableError },
});

const deleteAliasRoute = createRoute({
  method: 'delete',
  path: '/models/{name}/aliases/{alias}',
  operationId: 'deleteModelAlias',
  tags,
  summary: 'Remove an alias',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: AliasParams },
  responses: { 204: { description: 'Removed' }, ...commonErrors, ...notFoundError },
});

const gatesRoute = createRoute({
  method: 'get',
  path: '/models/{name}/gates',
  operationId: 'listModelGateResults',
  tags,
  summary: 'Gate decisions of promotions into this model, newest first: pass or fail, each rule with both numbers',
  security,
  middleware: [requireScope('checkpoints:read')] as const,
  request: { params: NameParam, query: z.strictObject({ limit: z.coerce.number().int().min(1).max(500).default(100) }) },
  responses: { 200: json(z.object({ gates: z.array(GateResultSchema) })), ...commonErrors, ...notFoundError },
});

function versionJson(model: ModelRow, v: ModelVersionRow, aliases: Record<string, number>) {
  return {
    id: v.id,
    model: model.name,
    version: v.version,
    ref: `${model.name}@${v.version}`,
    aliases: Object.entries(aliases)
      .filter(([, n]) => n === v.version)
      .map(([a]) => a),
    jobId: v.jobId,
    checkpointVersion: v.checkpointVersion,
    checkpointId: v.checkpointId,
    createdByJobId: v.createdByJobId,
    createdAt: iso(v.createdAt),
    parent: { jobId: v.parentJobId, checkpointVersion: v.parentCheckpointVersion, modelVersionId: v.parentVersionId },
    dataset: { ref: v.datasetRef, versionId: v.datasetVersionId, manifestSha256: v.manifestSha256 },
    codeVersion: v.codeVersion ?? null,
    spec: (v.spec ?? {}) as Record<string, unknown>,
  };
}

const modelJson = (m: ModelRow, versions: number, aliases: Record<string, number>) => ({
  id: m.id,
  name: m.name,
  description: m.description,
  versions,
  aliases,
  createdAt: iso(m.createdAt),
});

export function modelRoutes(deps: AppDeps) {
  const app = router();

  const loadModel = async (tenantId: string, name: string) => {
    const model = await findModel(deps.db, tenantId, name);
    if (!model) throw notFound('model', name, 'name');
    return model;
  };
  const loadVersion = async (tenantId: string, name: string, ref: string) => {
    const resolved = await resolveModelSelector(deps.db, tenantId, name, parseModelSelector(ref));
    if (!resolved.ok) {
      if (resolved.reason === 'model_not_found') throw notFound('model', name, 'name');
      throw new ApiError(404, 'model_version_not_found', `model ${name} has no version ${JSON.stringify(ref)}`, [{ path: 'ref', message: 'no such version or alias', in: 'path' }]);
    }
    return resolved;
  };

  app.openapi(createModelRoute, async (c) => {
    const body = c.req.valid('json');
    const { model, created } = await ensureModel(deps.db, c.get('principal').tenantId, body.name, body.description ?? null);
    if (!created) throw conflict('model_exists', `model ${body.name} exists already`, [{ path: 'name', message: 'taken', in: 'body' }]);
    c.header('Location', `/v1/models/${model.name}`);
    return c.json(modelJson(model, 0, {}), 201);
  });

  app.openapi(listModelsRoute, async (c) => {
    const rows = await listModels(deps.db, c.get('principal').tenantId);
    return c.json({ models: rows.map((m) => modelJson(m, m.versions, m.aliases)) }, 200);
  });

  app.openapi(getModelRoute, async (c) => {
    const model = await loadModel(c.get('principal').tenantId, c.req.valid('param').name);
    const [versions, aliases] = await Promise.all([listModelVersions(deps.db, model.id), modelAliasesOf(deps.db, model.id)]);
    return c.json({ ...modelJson(model, versions.length, aliases), versionList: versions.map((v) => versionJson(model, v, aliases)) }, 200);
  });

  app.openapi(registerRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const { name } = c.req.valid('param');
    const body = c.req.valid('json');
    const job = await getTenantJob(deps.sql, tenantId, body.job);
    if (!job) throw unresolvable('job_not_found', 'job', `no job ${body.job} in this tenant`);
    if (job.type !== 'pretrain') throw unresolvable('wrong_job_type', 'job', `job ${body.job} is a ${job.type} job, not a pretrain job`);
    const checkpoint = await resolveCheckpoint(deps.db, job.id, body.checkpoint);
    if (!checkpoint) throw unresolvable('checkpoint_not_found', 'checkpoint', `job ${job.id} has no checkpoint ${JSON.stringify(body.checkpoint)}`);
    const { model: existing } = await ensureModel(deps.db, tenantId, name);
    const lineage = await lineageOfJob(deps.db, deps.storage, job, existing.id);
    const { model, version, created } = await deps.db.transaction(async (tx) => {
      await lockModel(tx, existing.id);
      const registered = await registerModelVersion(tx, { model: existing, checkpoint, lineage, createdByJobId: null, announceOn: job.id });
      for (const alias of body.aliases) await moveModelAlias(tx, existing, alias, registered.version, job.id);
      return { model: existing, ...registered };
    });
    deps.onOutboxWritten?.();
    c.header('Location', `/v1/models/${model.name}/versions/${version.version}`);
    return c.json(versionJson(model, version, await modelAliasesOf(deps.db, model.id)), created ? 201 : 200);
  });

  app.openapi(listVersionsRoute, async (c) => {
    const model = await loadModel(c.get('principal').tenantId, c.req.valid('param').name);
    const [versions, aliases] = await Promise.all([listModelVersions(deps.db, model.id), modelAliasesOf(deps.db, model.id)]);
    return c.json({ versions: versions.map((v) => versionJson(model, v, aliases)), aliases }, 200);
  });

  app.openapi(getVersionRoute, async (c) => {
    const { name, ref } = c.req.valid('param');
    const { model, version } = await loadVersion(c.get('principal').tenantId, name, ref);
    return c.json(versionJson(model, version, await modelAliasesOf(deps.db, model.id)), 200);
  });

  app.openapi(downloadRoute, async (c) => {
    const { name, ref } = c.req.valid('param');
    const q = c.req.valid('query');
    checkTtl(deps, q.ttl);
    const { model, version, checkpoint } = await loadVersion(c.get('principal').tenantId, name, ref);
    const link = await presignCheckpointFile(deps, checkpoint, q, `${model.name}-v${version.version}`);
    if (q.redirect === 'true') return c.redirect(link.url, 302);
    return c.json({ ...link, model: model.name, modelVersion: version.version, jobId: version.jobId }, 200);
  });

  app.openapi(lineageRoute, async (c) => {
    const { name, ref } = c.req.valid('param');
    const { tenantId } = c.get('principal');
    const { model, version } = await loadVersion(tenantId, name, ref);
    const chain = await lineageChain(deps.db, deps.storage, tenantId, version);
    return c.json(
      {
        model: model.name,
        version: version.version,
        lineage: chain.map((e) => ({
          relation: e.relation,
          jobId: e.jobId,
          jobState: e.jobState,
          checkpointVersion: e.checkpointVersion,
          modelVersion: e.modelVersion,
          dataset: { ref: e.datasetRef, versionId: e.datasetVersionId, manifestSha256: e.manifestSha256 },
          codeVersion: e.codeVersion ?? null,
          spec: e.spec ?? null,
          createdAt: e.createdAt,
        })),
      },
      200,
    );
  });

  app.openapi(retrainRoute, async (c) => {
    const { name, ref } = c.req.valid('param');
    const { tenantId } = c.get('principal');
    const { model, version } = await loadVersion(tenantId, name, ref);
    const earlier = await getTenantJob(deps.sql, tenantId, version.jobId);
    if (!earlier) throw notFound('job', version.jobId);
    const body = c.req.valid('json');
    return submittedResponse(c, await retrainJob(deps, tenantId, earlier, { ...body, initFrom: { model: `${model.name}@${version.version}` } }, c.req.valid('header')['idempotency-key']));
  });

  app.openapi(putAliasRoute, async (c) => {
    const { name, alias } = c.req.valid('param');
    const body = c.req.valid('json');
    const model = await loadModel(c.get('principal').tenantId, name);
    const result = await deps.db.transaction(async (tx) => {
      await lockModel(tx, model.id);
      const target = await resolveModelVersion(tx, model.id, { version: body.version });
      if (!target) throw unresolvable('model_version_not_found', 'version', `model ${name} has no version ${body.version}`);
      if (body.expectedVersion !== undefined) {
        const now = (await resolveModelVersion(tx, model.id, { alias })) ?? null;
        if ((now?.version ?? null) !== body.expectedVersion) {
          throw conflict('alias_moved', `${name}@${alias} is ${now ? `v${now.version}` : 'not set'}, not ${body.expectedVersion === null ? 'unset' : `v${body.expectedVersion}`}`, [
            { path: 'expectedVersion', message: `the alias is ${now ? `at v${now.version}` : 'not set'}`, in: 'body' },
          ]);
        }
      }
      const { moved, previous } = await moveModelAlias(tx, model, alias, target, target.jobId);
      return { alias, version: target.version, previousVersion: previous?.version ?? null, moved };
    });
    if (result.moved) deps.onOutboxWritten?.();
    return c.json(result, 200);
  });

  app.openapi(deleteAliasRoute, async (c) => {
    const { name, alias } = c.req.valid('param');
    const model = await loadModel(c.get('principal').tenantId, name);
    if (!(await deleteModelAlias(deps.db, model.id, alias))) throw notFound('alias', alias, 'alias');
    return c.body(null, 204);
  });

  app.openapi(gatesRoute, async (c) => {
    const model = await loadModel(c.get('principal').tenantId, c.req.valid('param').name);
    const rows = await gateResultsOf(deps.db, model.id, c.req.valid('query').limit);
    const versions = new Map((await listModelVersions(deps.db, model.id)).map((v) => [v.id, v.version]));
    const gateJson = (g: GateResultRow) => ({
      id: g.id,
      probeJobId: g.probeJobId,
      alias: g.alias,
      passed: g.passed,
      moved: g.moved,
      version: g.versionId ? (versions.get(g.versionId) ?? null) : null,
      previousVersion: g.previousVersionId ? (versions.get(g.previousVersionId) ?? null) : null,
      rules: g.rules as Record<string, unknown>[],
      datasetVersionId: g.datasetVersionId,
      protocol: g.protocol ?? null,
      createdAt: g.createdAt.toISOString(),
    });
    return c.json({ gates: rows.map(gateJson) }, 200);
  });

  return app;
}
