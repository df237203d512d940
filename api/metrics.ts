/**
 * Prometheus metrics of one app instance (a registry of its own, so several apps in one test
 * process do not collide): HTTP latency by route, jobs by state (counted in Postgres at scrape
 * time), queue depth (asked of BullMQ at scrape time).
 */
import type { MiddlewareHandler } from 'hono';
import { Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Sql } from '../db/client.js';
import type { Queues } from './deps.js';
import { withRedisDeadline } from '../common/redis.js';

export function createMetrics(opts: { sql: Sql; queues: Queues; defaultMetrics?: boolean; redisTimeoutMs?: number }) {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });

  const httpDuration = new Histogram({
    name: 'momentum_http_request_duration_seconds',
    help: 'HTTP request latency by method, route template and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });

  new Gauge({
    name: 'momentum_jobs',
    help: 'Jobs by type and state (all tenants)',
    labelNames: ['type', 'state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const rows = await opts.sql<{ type: string; state: string; n: number }[]>`
        select type, state, count(*)::int as n from jobs group by type, state`;
      for (const r of rows) this.set({ type: r.type, state: r.state }, r.n);
    },
  });

  new Gauge({
    name: 'momentum_queue_jobs',
    help: 'BullMQ jobs by queue and status',
    labelNames: ['queue', 'status'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [name, queue] of Object.entries(opts.queues)) {
        // A hung Redis fails the scrape with 503 (api/errors.ts) instead of holding it.
        const counts = await withRedisDeadline(queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'prioritized'), opts.redisTimeoutMs ?? 1000, 'the queue counts');
        for (const [status, n] of Object.entries(counts)) this.set({ queue: name, status }, n);
      }
    },
  });

  // One histogram child per (method, route, status), found by one string key: prom-client's own
  // label lookup (startTimer's end(labels)) hashes and validates the label object on every request.
  const children = new Map<string, { observe(seconds: number): void }>();
  /** Records one request that took `seconds` under its route template (`/v1/jobs/:id`), never the raw path (cardinality). */
  const observe = (method: string, route: string, status: number, seconds: number) => {
    const key = `${method} ${status} ${route}`;
    let child = children.get(key);
    if (!child) {
      child = httpDuration.labels(method, route, String(status));
      children.set(key, child);
    }
    child.observe(seconds);
  };

  /** Times every request under its route template (the children map is bounded by the app's routes and statuses). */
  const middleware: MiddlewareHandler = async (c, next) => {
    const start = performance.now();
    try {
      await next();
    } finally {
      observe(c.req.method, c.req.routePath || 'unmatched', c.res.status, (performance.now() - start) / 1000);
    }
  };

  return { registry, middleware, observe };
}
