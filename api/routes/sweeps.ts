/** Sweeps: submit (idempotent), list, get with the results table, download the table, cancel. */
import { createHash, randomUUID } from 'node:crypto';
import { createRoute, z } from '@hono/zod-openapi';
import { sweepSpec, type SweepSpec } from '../../contracts/sweepSpec.js';
import { parseDatasetRef } from '../../contracts/jobSpec.js';
import { resolveReadyVersion } from '../../db/datasets.js';
import { getTenantSweep, insertSweep, listTenantSweeps, sweepMinutesUsed, sweepRunStates, type SweepRow } from '../../db/sweeps.js';
import { SWEEP_STATES } from '../../db/schema.js';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps } from '../deps.js';
import { conflict, notFound, unresolvable } from '../errors.js';
import { commonErrors, conflictError, idempotencyKeyHeader, json, jsonBody, JobIdParam, Json, notFoundError, router, security, unprocessableError } from '../openapi.js';
import { advanceSweep, cancelSweep } from '../sweeps/driver.js';
import { expandSweep } from '../sweeps/grid.js';
import { resultsCsv, resultsTable } from '../sweeps/results.js';

const ResultRowSchema = z
  .object({
    index: z.number().int(),
    values: z.record(z.string(), z.unknown()).openapi({ description: 'The resolved value of each column for this run' }),
    pretrainJobId: z.string().nullable(),
    pretrainState: z.string(),
    probeJobId: z.string().nullable(),
    probeState: z.string().nullable(),
    linearTop1: z.number().nullable(),
    linearTop5: z.number().nullable(),
    knnTop1: z.number().nullable(),
    baselines: z.record(z.string(), z.unknown()).nullable(),
    finalLoss: z.number().nullable(),
    steps: z.number().nullable(),
    minutes: z.number().nullable(),
    spikes: z.number().int(),
    spiked: z.boolean(),
    error: z.string().nullable(),
  })
  .openapi('SweepResultRow');

const SweepSchema = z
  .object({
    id: z.uuid(),
    state: z.enum(SWEEP_STATES),
    reason: z.string().nullable(),
    spec: Json,
    budget: z.object({ maxConcurrent: z.number().int(), totalMinutes: z.number().nullable(), usedMinutes: z.number() }),
    runs: z.object({ total: z.number().int(), submitted: z.number().int(), finished: z.number().int(), probed: z.number().int() }),
    columns: z.array(z.string()).openapi({ description: 'Spec paths whose resolved values differ between rows' }),
    rows: z.array(ResultRowSchema),
    createdAt: z.string(),
    updatedAt: z.string(),
    finishedAt: z.string().nullable(),
  })
  .openapi('Sweep');

const IdempotencyHeader = idempotencyKeyHeader('Retries with the same key and body return the same sweep');

const submitRoute = createRoute({
  method: 'post',
  path: '/sweeps',
  operationId: 'createSweep',
  tags: ['sweeps'],
  summary: 'Submit a sweep: one pretrain job (then its probe) per setting of a grid over a base spec',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { headers: IdempotencyHeader, body: jsonBody(sweepSpec) },
  responses: {
    201: json(SweepSchema, 'The sweep (an earlier one when the Idempotency-Key was seen before; header Idempotent-Replayed: true)'),
    ...commonErrors,
    ...conflictError,
    ...unprocessableError,
  },
});

const listRoute = createRoute({
  method: 'get',
  path: '/sweeps',
  operationId: 'listSweeps',
  tags: ['sweeps'],
  summary: 'List sweeps, newest first (without their tables)',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: { query: z.strictObject({ limit: z.coerce.number().int().min(1).max(200).default(50) }) },
  responses: {
    200: json(z.object({ sweeps: z.array(z.object({ id: z.string(), state: z.enum(SWEEP_STATES), reason: z.string().nullable(), createdAt: z.string(), finishedAt: z.string().nullable() })) })),
    ...commonErrors,
  },
});

const getRoute = createRoute({
  method: 'get',
  path: '/sweeps/{id}',
  operationId: 'getSweep',
  tags: ['sweeps'],
  summary: 'Get a sweep with its results table',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: { params: JobIdParam },
  responses: { 200: json(SweepSchema), ...commonErrors, ...notFoundError },
});

const resultsRoute = createRoute({
  method: 'get',
  path: '/sweeps/{id}/results',
  operationId: 'downloadSweepResults',
  tags: ['sweeps'],
  summary: 'Download the results table as CSV or JSON (as an attachment)',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: { params: JobIdParam, query: z.strictObject({ format: z.enum(['csv', 'json']).default('csv') }) },
  responses: {
    200: {
      description: 'The table: one row per setting',
      content: { 'text/csv': { schema: z.string() }, 'application/json': { schema: z.object({ columns: z.array(z.string()), rows: z.array(ResultRowSchema) }) } },
    },
    ...commonErrors,
    ...notFoundError,
  },
});

const cancelRoute = createRoute({
  method: 'post',
  path: '/sweeps/{id}/cancel',
  operationId: 'cancelSweep',
  tags: ['sweeps'],
  summary: 'Cancel a sweep: no new jobs, and every queued or running job of it canceled',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: JobIdParam },
  responses: { 200: json(SweepSchema), ...commonErrors, ...notFoundError, ...conflictError },
});

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export async function sweepJson(deps: AppDeps, sweep: SweepRow) {
  const spec = sweep.spec as SweepSpec;
  const runs = await sweepRunStates(deps.sql, sweep.id);
  const table = resultsTable(sweep, runs);
  return {
    id: sweep.id,
    state: sweep.state,
    reason: sweep.reason,
    spec: sweep.spec,
    budget: { maxConcurrent: spec.budget.maxConcurrent, totalMinutes: spec.budget.totalMinutes ?? null, usedMinutes: await sweepMinutesUsed(deps.sql, sweep.id) },
    runs: {
      total: runs.length,
      submitted: runs.filter((r) => r.pretrain).length,
      finished: runs.filter((r) => r.pretrain && ['succeeded', 'failed', 'canceled'].includes(r.pretrain.state)).length,
      probed: runs.filter((r) => r.probe?.state === 'succeeded').length,
    },
    ...table,
    createdAt: sweep.createdAt.toISOString(),
    updatedAt: sweep.updatedAt.toISOString(),
    finishedAt: iso(sweep.finishedAt),
  };
}

async function loadSweep(deps: AppDeps, tenantId: string, id: string): Promise<SweepRow> {
  const sweep = await getTenantSweep(deps.sql, tenantId, id);
  if (!sweep) throw notFound('sweep', id, 'id');
  return sweep;
}

export function sweepRoutes(deps: AppDeps) {
  const app = router();

  app.openapi(submitRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const spec = c.req.valid('json');
    const key = c.req.valid('header')['idempotency-key'];
    // Every run trains on the same dataset version: pin it now.
    const ref = parseDatasetRef(spec.base.dataset);
    const version = await resolveReadyVersion(deps.db, tenantId, ref.name, ref.version);
    if (!version) throw unresolvable('dataset_not_found', 'base.dataset', `no ready dataset version ${JSON.stringify(spec.base.dataset)} in this tenant`);
    const pinned: SweepSpec = { ...spec, base: { ...spec.base, dataset: version.ref } };
    const id = randomUUID();
    const runs = expandSweep(pinned, id);
    const requestHash = key ? createHash('sha256').update('sweep\0').update(JSON.stringify(spec)).digest('hex') : null;
    const { outcome, sweep } = await insertSweep(deps.sql, {
      id,
      tenantId,
      spec: pinned,
      idempotencyKey: key ?? null,
      requestHash,
      runs: runs.map((r) => ({ index: r.index, setting: r.setting, spec: r.spec })),
    });
    if (outcome === 'existing') {
      if (sweep.requestHash !== requestHash) {
        throw conflict('idempotency_key_reused', 'this Idempotency-Key was used with a different request; use a new key for a new sweep', [
          { path: 'idempotency-key', message: 'already used with another body', in: 'header' },
        ]);
      }
      c.header('Idempotent-Replayed', 'true');
    } else {
      // The first jobs go out now; the sweep driver takes it from here.
      await advanceSweep(deps, sweep.id);
    }
    c.header('Location', `/v1/sweeps/${sweep.id}`);
    return c.json(await sweepJson(deps, (await getTenantSweep(deps.sql, tenantId, sweep.id))!), 201);
  });

  app.openapi(listRoute, async (c) => {
    const rows = await listTenantSweeps(deps.sql, c.get('principal').tenantId, c.req.valid('query').limit);
    return c.json({ sweeps: rows.map((s) => ({ id: s.id, state: s.state, reason: s.reason, createdAt: s.createdAt.toISOString(), finishedAt: iso(s.finishedAt) })) }, 200);
  });

  app.openapi(getRoute, async (c) => {
    const sweep = await loadSweep(deps, c.get('principal').tenantId, c.req.valid('param').id);
    return c.json(await sweepJson(deps, sweep), 200);
  });

  app.openapi(resultsRoute, async (c) => {
    const sweep = await loadSweep(deps, c.get('principal').tenantId, c.req.valid('param').id);
    const table = resultsTable(sweep, await sweepRunStates(deps.sql, sweep.id));
    const format = c.req.valid('query').format;
    const disposition = `attachment; filename="sweep-${sweep.id}.${format}"`;
    if (format === 'json') return c.json(table, 200, { 'Content-Disposition': disposition });
    return c.body(resultsCsv(table), 200, { 'Content-Type': 'text/csv; charset=utf-8', 'Content-Disposition': disposition }) as never;
  });

  app.openapi(cancelRoute, async (c) => {
    const sweep = await loadSweep(deps, c.get('principal').tenantId, c.req.valid('param').id);
    if (sweep.state === 'completed') throw conflict('wrong_sweep_state', 'the sweep has completed; there is nothing to cancel');
    return c.json(await sweepJson(deps, await cancelSweep(deps, sweep)), 200);
  });

  return app;
}
