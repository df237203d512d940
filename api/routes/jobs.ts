/** Jobs: submit (idempotent), list with filters and cursor, get, cancel, retry, retrain. */
import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { jobSpec, datasetRef, CHECKPOINT_REF_MESSAGE, CHECKPOINT_REF_PATTERN, pretrainSpec, type WeightsSource } from '../../contracts/jobSpec.js';
import { isModelRef } from '../../contracts/models.js';
import { withRedisDeadline } from '../../common/redis.js';
import { JOB_STATES } from '../../contracts/lifecycle.js';
import { JOB_TYPES } from '../../db/schema.js';
import { CANCEL_CHANNEL, OUTBOX_TOPICS, type EnqueueMessage } from '../../contracts/outbox.js';
import { queueForJobType } from '../../contracts/queues.js';
import { transitionJob } from '../../db/jobs.js';
import { getTenantJob, getTenantJobApiJson, listTenantJobs, tenantJobExists, type JobRow } from '../../db/jobQueries.js';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps, AppEnv } from '../deps.js';
import { ApiError, conflict, invalid, notFound } from '../errors.js';
import { submitJob, type Submitted } from '../jobSubmission.js';
import { commonErrors, conflictError, idempotencyKeyHeader, json, jsonBody, JobIdParam, Json, notFoundError, router, security, unprocessableError } from '../openapi.js';
import { jobJson } from '../serialize.js';
import { setResponseHeader } from '../nodeHttp.js';

export const JobSchema = z
  .object({
    id: z.uuid(),
    type: z.enum(JOB_TYPES),
    state: z.enum(JOB_STATES),
    spec: Json,
    dataset: z.string().nullable(),
    datasetVersionId: z.string().nullable(),
    labels: z.record(z.string(), z.string()),
    attempt: z.number().int(),
    cancelRequested: z.boolean(),
    parentJobId: z.string().nullable(),
    progress: z.unknown(),
    runtime: z.unknown(),
    result: z.unknown(),
    error: z.string().nullable(),
    createdAt: z.string().nullable(),
    updatedAt: z.string().nullable(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
  })
  .openapi('Job');

const IdempotencyHeader = idempotencyKeyHeader('Retries with the same key and body return the same job');

const submitRoute = createRoute({
  method: 'post',
  path: '/jobs',
  operationId: 'submitJob',
  tags: ['jobs'],
  summary: 'Submit a pretrain or probe job',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { headers: IdempotencyHeader, body: jsonBody(jobSpec) },
  responses: {
    201: json(JobSchema, 'The job (an earlier one when the Idempotency-Key was seen before; header Idempotent-Replayed: true)'),
    ...commonErrors,
    ...conflictError,
    ...unprocessableError,
  },
});

const listRoute = createRoute({
  method: 'get',
  path: '/jobs',
  operationId: 'listJobs',
  tags: ['jobs'],
  summary: 'List jobs, newest first',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: {
    query: z.strictObject({
      state: z.string().optional().openapi({ description: 'Comma-separated states', example: 'queued,running' }),
      type: z.string().optional().openapi({ description: 'Comma-separated types', example: 'pretrain' }),
      label: z
        .union([z.string(), z.array(z.string())])
        .optional()
        .openapi({ description: 'key:value; repeat to require several', example: 'branch:main' }),
      limit: z.coerce.number().int().min(1).max(200).default(50),
      cursor: z.string().max(64).optional().openapi({ description: 'nextCursor of the previous page' }),
    }),
  },
  responses: { 200: json(z.object({ jobs: z.array(JobSchema), nextCursor: z.string().nullable() })), ...commonErrors },
});

const getRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}',
  operationId: 'getJob',
  tags: ['jobs'],
  summary: 'Get a job',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: { params: JobIdParam },
  responses: { 200: json(JobSchema), ...commonErrors, ...notFoundError },
});

const cancelRoute = createRoute({
  method: 'post',
  path: '/jobs/{id}/cancel',
  operationId: 'cancelJob',
  tags: ['jobs'],
  summary: 'Cancel a job (queued: at once; running: asks the runner)',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: JobIdParam },
  responses: { 200: json(JobSchema), ...commonErrors, ...notFoundError, ...conflictError },
});

const retryRoute = createRoute({
  method: 'post',
  path: '/jobs/{id}/retry',
  operationId: 'retryJob',
  tags: ['jobs'],
  summary: 'Queue a failed or canceled job again (a new attempt)',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: JobIdParam },
  responses: { 200: json(JobSchema), ...commonErrors, ...notFoundError, ...conflictError },
});

const RetrainBody = z
  .strictObject({
    dataset: datasetRef,
    /** Start from this checkpoint of the earlier job (`latest`, `v3`), or from a model version (`fmnist-backbone@production`); omitted or null: train from scratch. */
    initFrom: z
      .string()
      .refine((ref) => CHECKPOINT_REF_PATTERN.test(ref) || isModelRef(ref), `${CHECKPOINT_REF_MESSAGE}, or a model version ("name@alias", "name@N")`)
      .nullable()
      .optional(),
    epochs: z.number().int().min(1).max(10000).optional(),
    maxSteps: pretrainSpec.shape.maxSteps,
    labels: pretrainSpec.shape.labels,
  })
  .openapi('RetrainRequest');

const retrainRoute = createRoute({
  method: 'post',
  path: '/jobs/{id}/retrain',
  operationId: 'retrainJob',
  tags: ['jobs'],
  summary: "A new pretrain job from this job's spec on another dataset version, optionally initialised from one of its checkpoints",
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: JobIdParam, headers: IdempotencyHeader, body: jsonBody(RetrainBody) },
  responses: { 201: json(JobSchema), ...commonErrors, ...notFoundError, ...conflictError, ...unprocessableError },
});

function parseList<T extends string>(raw: string | undefined, allowed: readonly T[], field: string): T[] | undefined {
  if (!raw) return undefined;
  const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = items.find((s) => !allowed.includes(s as T));
  if (bad) throw new ApiError(400, 'validation_failed', `${field}: unknown value ${JSON.stringify(bad)}`, [{ path: field, message: `must be one of ${allowed.join(', ')}`, in: 'query' }]);
  return items as T[];
}

function parseLabels(raw: string | string[] | undefined): Record<string, string> | undefined {
  if (!raw) return undefined;
  const out: Record<string, string> = {};
  for (const item of Array.isArray(raw) ? raw : [raw]) {
    const i = item.indexOf(':');
    if (i <= 0) throw new ApiError(400, 'validation_failed', 'label: expected key:value', [{ path: 'label', message: 'expected key:value', in: 'query' }]);
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return out;
}

const encodeCursor = (id: string) => Buffer.from(id).toString('base64url');
function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString();
  // A real UUID shape, not just 36 of its characters: Postgres casts the cursor to uuid.
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) throw new ApiError(400, 'validation_failed', 'cursor: not a cursor this API issued', [{ path: 'cursor', message: 'invalid cursor', in: 'query' }]);
  return id;
}

export async function loadJob(deps: AppDeps, tenantId: string, id: string): Promise<JobRow> {
  const job = await getTenantJob(deps.sql, tenantId, id);
  if (!job) throw notFound('job', id, 'id');
  return job;
}

export function jobRoutes(deps: AppDeps) {
  const app = router();

  app.openapi(submitRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const submitted = await submitJob(deps, c.req.valid('json'), {
      tenantId,
      idempotencyKey: c.req.valid('header')['idempotency-key'],
      operation: 'submit',
    });
    return submittedResponse(c, submitted);
  });

  app.openapi(listRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const q = c.req.valid('query');
    const after = q.cursor ? decodeCursor(q.cursor) : undefined;
    if (after && !(await tenantJobExists(deps.sql, tenantId, after))) {
      throw new ApiError(400, 'validation_failed', 'cursor: names no job of this tenant', [{ path: 'cursor', message: 'invalid cursor', in: 'query' }]);
    }
    const { rows, hasMore } = await listTenantJobs(deps.db, tenantId, {
      states: parseList(q.state, JOB_STATES, 'state'),
      types: parseList(q.type, JOB_TYPES, 'type'),
      labels: parseLabels(q.label),
      after,
      limit: q.limit,
    });
    const last = rows[rows.length - 1];
    return c.json({ jobs: rows.map(jobJson), nextCursor: hasMore && last ? encodeCursor(last.id) : null }, 200);
  });

  app.openapi(getRoute, async (c) => {
    const { id } = c.req.valid('param');
    // The JSON comes from Postgres as bytes (db/jobQueries.ts): no parse and re-serialisation of the spec per read.
    const json = await getTenantJobApiJson(deps.sql, c.get('principal').tenantId, id);
    if (json === undefined) throw notFound('job', id, 'id');
    return c.body(json as Uint8Array<ArrayBuffer>, 200, { 'Content-Type': 'application/json' }) as never; // a socket's bytes: never shared memory
  });

  app.openapi(cancelRoute, async (c) => {
    const job = await loadJob(deps, c.get('principal').tenantId, c.req.valid('param').id);
    return c.json(jobJson(await cancelJob(deps, job)), 200);
  });

  app.openapi(retryRoute, async (c) => {
    const job = await loadJob(deps, c.get('principal').tenantId, c.req.valid('param').id);
    if (job.state !== 'failed' && job.state !== 'canceled') {
      throw conflict('wrong_job_state', `job is ${job.state}; only failed or canceled jobs can be retried`);
    }
    const message: EnqueueMessage = { jobId: job.id, tenantId: job.tenantId, type: job.type };
    const row = await transitionJob(deps.db, job.id, {
      from: ['failed', 'canceled'],
      to: 'queued',
      reason: 'retry requested',
      // A retry is a fresh start: RUNNER_MAX_ATTEMPTS and maxRuntimeSeconds count from here. The
      // attempt number itself keeps rising (it fences writes: a late runner of an earlier attempt
      // must not pass for a new one), so the count restarts from a base instead.
      patch: { cancelRequested: false, error: null, finishedAt: null, attemptBase: job.attempt },
      outbox: { topic: OUTBOX_TOPICS.enqueue, payload: message },
    });
    if (!row) throw conflict('wrong_job_state', 'the job changed state meanwhile; fetch it and try again');
    deps.onOutboxWritten?.();
    return c.json(jobJson(row), 200);
  });

  app.openapi(retrainRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const earlier = await loadJob(deps, tenantId, c.req.valid('param').id);
    const body = c.req.valid('json');
    const initFrom = body.initFrom ? (isModelRef(body.initFrom) ? { model: body.initFrom } : { job: earlier.id, checkpoint: body.initFrom }) : undefined;
    return submittedResponse(c, await retrainJob(deps, tenantId, earlier, { ...body, initFrom }, c.req.valid('header')['idempotency-key']));
  });

  return app;
}

/** 201 with the submitted job's JSON text as it is (see Submitted.json), its Location and whether it was a replay. */
export function submittedResponse(c: Context<AppEnv>, { jobId, json, replayed }: Submitted): never {
  if (replayed) setResponseHeader(c, 'Idempotent-Replayed', 'true');
  setResponseHeader(c, 'Location', `/v1/jobs/${jobId}`);
  // `as never`: the route's typed 201 is the Job schema, which this text is (jobJson.test.ts).
  return c.body(json, 201, { 'Content-Type': 'application/json' }) as never;
}

export interface RetrainOptions {
  dataset: string;
  /** Where the new job's weights start; none: from scratch. */
  initFrom?: WeightsSource;
  epochs?: number;
  maxSteps?: number;
  labels?: Record<string, string>;
}

/**
 * A new pretrain job with an earlier job's spec (today's defaults applied) on another dataset
 * version. Shared by POST /v1/jobs/{id}/retrain and POST /v1/models/{name}/versions/{ref}/retrain.
 */
export async function retrainJob(deps: AppDeps, tenantId: string, earlier: JobRow, o: RetrainOptions, idempotencyKey: string | undefined) {
  if (earlier.type !== 'pretrain') throw conflict('wrong_job_type', `job is a ${earlier.type} job; only pretrain jobs can be retrained`);
  // The stored spec went through the schema at submission; re-parse so today's defaults apply.
  const { initFrom: _initFrom, ...base } = earlier.spec as Record<string, unknown>;
  const parsed = pretrainSpec.safeParse({
    ...base,
    dataset: o.dataset,
    ...(o.epochs !== undefined ? { epochs: o.epochs } : {}),
    ...(o.maxSteps !== undefined ? { maxSteps: o.maxSteps } : {}),
    ...(o.labels !== undefined ? { labels: o.labels } : {}),
    ...(o.initFrom ? { initFrom: o.initFrom } : {}),
  });
  if (!parsed.success) throw invalid(parsed.error.issues[0]!.path.join('.'), parsed.error.issues[0]!.message);
  return submitJob(deps, parsed.data, { tenantId, idempotencyKey, parentJobId: earlier.id, operation: `retrain:${earlier.id}` });
}

/**
 * queued/requeued → canceled at once (and taken off BullMQ); running → canceling, with the flag set
 * and a NOTIFY so the runner's training loop stops at its next step. Terminal jobs: 409.
 */
export async function cancelJob(deps: AppDeps, job: JobRow): Promise<JobRow> {
  if (job.state === 'canceling') return job;
  if (job.state === 'queued' || job.state === 'requeued') {
    const row = await transitionJob(deps.db, job.id, { from: ['queued', 'requeued'], to: 'canceled', reason: 'canceled by user', patch: { cancelRequested: true } });
    if (row) {
      deps.onOutboxWritten?.();
      // Best effort: the runner also checks Postgres before starting, so a job left behind is skipped.
      await withRedisDeadline(deps.queues[queueForJobType(job.type)].remove(job.id), deps.config.REDIS_REQUEST_TIMEOUT_MS, 'the queue removal').catch((err) => deps.logger.warn({ err, jobId: job.id }, 'could not remove canceled job from its queue'));
      return row;
    }
    // It started meanwhile: fall through to cancel the running job.
  }
  const running = await transitionJob(deps.db, job.id, { from: ['running'], to: 'canceling', reason: 'canceled by user', patch: { cancelRequested: true } });
  if (running) {
    await deps.sql`select pg_notify(${CANCEL_CHANNEL}, ${job.id})`;
    deps.onOutboxWritten?.();
    return running;
  }
  const current = (await getTenantJob(deps.sql, job.tenantId, job.id))!;
  if (current.state === 'canceling' || current.state === 'canceled') return current;
  throw conflict('wrong_job_state', `job is ${current.state}; it cannot be canceled`);
}
