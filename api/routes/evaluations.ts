/** Probe results per checkpoint version of a job, and a comparison across its versions. */
import { createRoute, z } from '@hono/zod-openapi';
import { evaluationsOfJob, type EvaluationView } from '../../db/checkpointQueries.js';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps } from '../deps.js';
import { commonErrors, json, JobIdParam, notFoundError, router, security } from '../openapi.js';
import { loadJob } from './jobs.js';

const EvaluationSchema = z
  .object({
    id: z.string(),
    kind: z.string(),
    probeJobId: z.string(),
    sourceJobId: z.string(),
    checkpointVersion: z.number().int(),
    checkpointStep: z.number().int(),
    top1: z.number(),
    top5: z.number().nullable(),
    /** The model's kNN top-1 under the same protocol (null for older evaluations). */
    knnTop1: z.number().nullable(),
    /**
     * Per subject (`model`, `random_init`, `raw_pixels`): `featureDim`, `linear` { top1, top5,
     * trainTop1, trainTop5, selectedLr, lrSelection } and `knn` { top1, top5 }.
     */
    subjects: z.record(z.string(), z.unknown()).nullable(),
    /** Points of top-1 the model gains over each baseline: { random_init: { linearTop1, knnTop1 }, raw_pixels: … }. */
    gains: z.record(z.string(), z.object({ linearTop1: z.number(), knnTop1: z.number() })).nullable(),
    /** The evaluation protocol (standardization, lr selection on held-out training images, readout, kNN). */
    protocol: z.record(z.string(), z.unknown()).nullable(),
    details: z.unknown(),
    createdAt: z.string(),
  })
  .openapi('Evaluation');

type Gains = Record<string, { linearTop1: number; knnTop1: number }>;

const evaluationJson = (v: EvaluationView) => ({
  id: v.evaluation.id,
  kind: v.evaluation.kind,
  probeJobId: v.probeJobId,
  sourceJobId: v.sourceJobId,
  checkpointVersion: v.checkpointVersion,
  checkpointStep: v.checkpointStep,
  top1: v.evaluation.top1,
  top5: v.evaluation.top5,
  knnTop1: v.evaluation.knnTop1 ?? null,
  subjects: (v.evaluation.subjects as Record<string, unknown> | null) ?? null,
  gains: ((v.evaluation.details as { gains?: Gains } | null)?.gains as Gains | undefined) ?? null,
  protocol: (v.evaluation.protocol as Record<string, unknown> | null) ?? null,
  details: v.evaluation.details ?? null,
  createdAt: v.evaluation.createdAt.toISOString(),
});

const listRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/evaluations',
  operationId: 'listEvaluations',
  tags: ['evaluations'],
  summary: "Probe results of a pretrain job's checkpoints (or of a probe job itself)",
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: { params: JobIdParam },
  responses: { 200: json(z.object({ evaluations: z.array(EvaluationSchema) })), ...commonErrors, ...notFoundError },
});

const VersionRow = z.object({
  version: z.number().int(),
  step: z.number().int(),
  evaluations: z.number().int(),
  bestTop1: z.number(),
  bestTop5: z.number().nullable(),
  /** Change of bestTop1 against the previous evaluated version (null for the first). */
  deltaTop1: z.number().nullable(),
});

const compareRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/evaluations/comparison',
  operationId: 'compareEvaluations',
  tags: ['evaluations'],
  summary: 'Probe accuracy across the checkpoint versions of a job',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: { params: JobIdParam },
  responses: {
    200: json(z.object({ versions: z.array(VersionRow), bestVersion: z.number().int().nullable(), bestTop1: z.number().nullable() }).openapi('EvaluationComparison')),
    ...commonErrors,
    ...notFoundError,
  },
});

export function compareVersions(views: EvaluationView[]) {
  const byVersion = new Map<number, EvaluationView[]>();
  for (const v of views) byVersion.set(v.checkpointVersion, [...(byVersion.get(v.checkpointVersion) ?? []), v]);
  let previous: number | null = null;
  let best: { version: number; top1: number } | null = null;
  const versions = [...byVersion.keys()]
    .sort((a, b) => a - b)
    .map((version) => {
      const list = byVersion.get(version)!;
      const top = list.reduce((a, b) => (b.evaluation.top1 > a.evaluation.top1 ? b : a));
      const bestTop1 = top.evaluation.top1;
      const deltaTop1: number | null = previous === null ? null : bestTop1 - previous;
      previous = bestTop1;
      if (!best || bestTop1 > best.top1) best = { version, top1: bestTop1 };
      return { version, step: top.checkpointStep, evaluations: list.length, bestTop1, bestTop5: top.evaluation.top5, deltaTop1 };
    });
  const winner = best as { version: number; top1: number } | null;
  return { versions, bestVersion: winner?.version ?? null, bestTop1: winner?.top1 ?? null };
}

export function evaluationRoutes(deps: AppDeps) {
  const app = router();

  app.openapi(listRoute, async (c) => {
    const job = await loadJob(deps, c.get('principal').tenantId, c.req.valid('param').id);
    return c.json({ evaluations: (await evaluationsOfJob(deps.db, job.id)).map(evaluationJson) }, 200);
  });

  app.openapi(compareRoute, async (c) => {
    const job = await loadJob(deps, c.get('principal').tenantId, c.req.valid('param').id);
    const views = (await evaluationsOfJob(deps.db, job.id)).filter((v) => v.sourceJobId === job.id);
    return c.json(compareVersions(views), 200);
  });

  return app;
}
