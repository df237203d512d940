/**
 * What a job reports while it runs: events (JSON, or a live SSE stream with Last-Event-ID resume),
 * metrics as time series, logs, and the webhook deliveries made about it.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import type { LiveStreams } from '../liveStreams.js';
import { isTerminal, type JobState } from '../../contracts/lifecycle.js';
import { deliveriesOf, eventsAfter, logsAfter, metricPoints, type JobEventRow } from '../../db/jobActivity.js';
import { getTenantJob } from '../../db/jobQueries.js';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps } from '../deps.js';
import { ApiError } from '../errors.js';
import { commonErrors, json, JobIdParam, Json, notFoundError, router, security } from '../openapi.js';
import { loadJob } from './jobs.js';

const EventSchema = z
  .object({
    id: z.number().int(),
    at: z.string(),
    kind: z.string(),
    fromState: z.string().nullable(),
    toState: z.string().nullable(),
    attempt: z.number().int().nullable(),
    reason: z.string().nullable(),
    data: z.unknown(),
  })
  .openapi('JobEvent');

const eventJson = (e: JobEventRow) => ({
  id: e.id,
  at: e.at.toISOString(),
  kind: e.kind,
  fromState: e.fromState,
  toState: e.toState,
  attempt: e.attempt,
  reason: e.reason,
  data: e.data ?? null,
});

const eventsRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/events',
  operationId: 'listJobEvents',
  tags: ['jobs'],
  summary: 'Events of a job: JSON, or a live stream with Accept: text/event-stream',
  description:
    'With `Accept: text/event-stream` the answer is Server-Sent Events: every event row as `id:`/`event: <kind>`/`data: <json>`, then new ones as they happen. ' +
    'Reconnect with `Last-Event-ID` (or `?after=`) to resume. The stream ends with `event: end` once the job is finished and everything was sent.',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: {
    params: JobIdParam,
    query: z.strictObject({
      after: z.coerce.number().int().min(0).default(0).openapi({ description: 'Only events with a greater id' }),
      limit: z.coerce.number().int().min(1).max(1000).default(500),
    }),
    headers: z.object({ 'last-event-id': z.coerce.number().int().min(0).optional() }),
  },
  responses: {
    200: {
      description: 'Events in order',
      content: {
        'application/json': { schema: z.object({ events: z.array(EventSchema), nextAfter: z.number().int() }) },
        'text/event-stream': { schema: z.string() },
      },
    },
    ...commonErrors,
    ...notFoundError,
  },
});

const metricsRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/metrics',
  operationId: 'listJobMetrics',
  tags: ['jobs'],
  summary: 'Metrics as time series by step: JSON, or a live stream with Accept: text/event-stream',
  description:
    'Series include `loss`, `lr`, `momentum`, `contrastiveTop1` (share of queries whose positive key scores highest) and `knnTop1` ' +
    '(kNN monitor on held-out training images, every few steps). With `Accept: text/event-stream` the answer is Server-Sent Events: ' +
    '`event: metrics` with `data: {"points":[{name, step, value}]}` for the points stored so far and then as they arrive, and `event: end` once the job is finished.',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: {
    params: JobIdParam,
    query: z.strictObject({
      name: z.string().max(512).optional().openapi({ description: 'Comma-separated metric names; all when omitted', example: 'loss,lr' }),
      from_step: z.coerce.number().int().min(0).optional(),
      to_step: z.coerce.number().int().min(0).optional(),
      limit: z.coerce.number().int().min(1).max(100_000).default(10_000),
    }),
  },
  responses: {
    200: {
      description: 'Series by name, or a live stream',
      content: {
        'application/json': {
          schema: z.object({
            series: z.array(z.object({ name: z.string(), points: z.array(z.object({ step: z.number(), value: z.number(), at: z.string() })) })),
            nextFromStep: z.number().int().nullable(),
          }),
        },
        'text/event-stream': { schema: z.string() },
      },
    },
    ...commonErrors,
    ...notFoundError,
  },
});

const logsRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/logs',
  operationId: 'getJobLogs',
  tags: ['jobs'],
  summary: 'Log lines of a job, oldest first',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: {
    params: JobIdParam,
    query: z.strictObject({
      after: z.coerce.number().int().min(0).default(0),
      attempt: z.coerce.number().int().min(0).optional(),
      limit: z.coerce.number().int().min(1).max(5000).default(1000),
    }),
  },
  responses: {
    200: json(
      z.object({
        logs: z.array(z.object({ id: z.number(), attempt: z.number(), at: z.string(), level: z.string(), message: z.string() })),
        nextAfter: z.number().int(),
      }),
    ),
    ...commonErrors,
    ...notFoundError,
  },
});

const deliveriesRoute = createRoute({
  method: 'get',
  path: '/jobs/{id}/webhook-deliveries',
  operationId: 'listWebhookDeliveries',
  tags: ['webhooks'],
  summary: 'Webhook deliveries made about a job, with attempts and status',
  security,
  middleware: [requireScope('jobs:read')] as const,
  request: { params: JobIdParam },
  responses: { 200: json(z.object({ deliveries: z.array(Json) })), ...commonErrors, ...notFoundError },
});

export function jobActivityRoutes(deps: AppDeps, streams: LiveStreams) {
  const app = router();
  const pollMs = deps.ssePollMs ?? 500;
  /**
   * A live SSE stream of a job: `sendNew` writes whatever is new since its last call; it runs every
   * `pollMs` until the job is finished (then once more, and `event: end`), the client goes away, or
   * liveStreams.ts ends it (lifetime, a revoked key, or this process draining: `event: close`, and
   * the client reconnects). The slot is taken before the response starts (429 at the tenant's cap).
   */
  const streamUntilFinished = (
    c: Parameters<typeof streamSSE>[0],
    tenantId: string,
    jobId: string,
    sendNew: (stream: SSEStreamingApi) => Promise<void>,
  ) => {
    const live = streams.admit(tenantId, /^Bearer\s+(\S+)/i.exec(c.req.header('authorization') ?? '')?.[1] ?? '');
    return streamSSE(c, async (stream) => {
      let closed = false;
      stream.onAbort(() => {
        closed = true;
      });
      try {
        while (!closed) {
          await sendNew(stream);
          const current = await getTenantJob(deps.sql, tenantId, jobId);
          if (!current || isTerminal(current.state as JobState)) {
            await sendNew(stream);
            await stream.writeSSE({ event: 'end', data: JSON.stringify({ state: current?.state ?? null }) });
            break;
          }
          const end = await live.shouldEnd();
          if (end) {
            await stream.writeSSE({ event: end.event, data: JSON.stringify(end) });
            break;
          }
          await stream.sleep(pollMs);
        }
      } finally {
        live.release();
      }
    });
  };

  app.openapi(eventsRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const job = await loadJob(deps, tenantId, c.req.valid('param').id);
    const q = c.req.valid('query');
    const resumeFrom = c.req.valid('header')['last-event-id'] ?? q.after;
    if (!(c.req.header('accept') ?? '').includes('text/event-stream')) {
      const rows = await eventsAfter(deps.db, job.id, resumeFrom, q.limit);
      return c.json({ events: rows.map(eventJson), nextAfter: rows.length ? rows[rows.length - 1]!.id : resumeFrom }, 200);
    }
    // Live: the event table is indexed on (job_id, id), so each poll reads only what is new.
    let after = resumeFrom;
    return streamUntilFinished(c, tenantId, job.id, async (stream) => {
      for (;;) {
        const rows = await eventsAfter(deps.db, job.id, after, 500);
        for (const e of rows) {
          await stream.writeSSE({ id: String(e.id), event: e.kind, data: JSON.stringify(eventJson(e)) });
          after = e.id;
        }
        if (rows.length < 500) return;
      }
    }) as never;
  });

  app.openapi(metricsRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const job = await loadJob(deps, tenantId, c.req.valid('param').id);
    const q = c.req.valid('query');
    if (q.from_step !== undefined && q.to_step !== undefined && q.to_step < q.from_step) {
      throw new ApiError(400, 'validation_failed', 'to_step: must not be below from_step', [{ path: 'to_step', message: 'below from_step', in: 'query' }]);
    }
    const names = q.name?.split(',').map((s) => s.trim()).filter(Boolean);
    if ((c.req.header('accept') ?? '').includes('text/event-stream')) {
      // Live: new points (indexed on job, name, step); a step's points may arrive in two polls.
      const sent = new Set<string>();
      let from = q.from_step ?? 0;
      return streamUntilFinished(c, tenantId, job.id, async (stream) => {
        for (;;) {
          const points = await metricPoints(deps.db, job.id, { names, fromStep: from, toStep: q.to_step, limit: 5000 });
          const fresh = points.filter((p) => !sent.has(`${p.name}\u0000${p.step}`));
          if (fresh.length) {
            for (const p of fresh) sent.add(`${p.name}\u0000${p.step}`);
            await stream.writeSSE({ event: 'metrics', data: JSON.stringify({ points: fresh.map((p) => ({ name: p.name, step: p.step, value: p.value })) }) });
          }
          if (points.length) from = points[points.length - 1]!.step;
          if (points.length < 5000) return;
        }
      }) as never;
    }
    const points = await metricPoints(deps.db, job.id, { names, fromStep: q.from_step, toStep: q.to_step, limit: q.limit });
    const series = new Map<string, { step: number; value: number; at: string }[]>();
    for (const p of points) {
      let list = series.get(p.name);
      if (!list) series.set(p.name, (list = []));
      list.push({ step: p.step, value: p.value, at: p.at.toISOString() });
    }
    // A full page may have cut a step in half: the next page starts at the last step again.
    const nextFromStep = points.length === q.limit ? points[points.length - 1]!.step : null;
    return c.json({ series: [...series].map(([name, pts]) => ({ name, points: pts })), nextFromStep }, 200);
  });

  app.openapi(logsRoute, async (c) => {
    const job = await loadJob(deps, c.get('principal').tenantId, c.req.valid('param').id);
    const q = c.req.valid('query');
    const rows = await logsAfter(deps.db, job.id, { afterId: q.after, attempt: q.attempt, limit: q.limit });
    return c.json(
      {
        logs: rows.map((l) => ({ id: l.id, attempt: l.attempt, at: l.at.toISOString(), level: l.level, message: l.message })),
        nextAfter: rows.length ? rows[rows.length - 1]!.id : q.after,
      },
      200,
    );
  });

  app.openapi(deliveriesRoute, async (c) => {
    const job = await loadJob(deps, c.get('principal').tenantId, c.req.valid('param').id);
    const rows = await deliveriesOf(deps.db, job.id);
    return c.json(
      {
        deliveries: rows.map((d) => ({
          id: d.id,
          event: d.event,
          url: d.url,
          status: d.status,
          attempts: d.attempts,
          responseStatus: d.responseStatus,
          lastError: d.lastError,
          createdAt: d.createdAt.toISOString(),
          deliveredAt: d.deliveredAt?.toISOString() ?? null,
        })),
      },
      200,
    );
  });

  return app;
}
