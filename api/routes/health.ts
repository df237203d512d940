/**
 * Liveness, readiness (each dependency checked, with a timeout) and Prometheus metrics. /healthz and
 * /readyz are unauthenticated (orchestrators probe them) and say only which dependency is down, never
 * the backend's error text (it can carry addresses and versions): that goes to the log. /metrics
 * needs `Authorization: Bearer $METRICS_TOKEN` when one is set, and is served without a token only
 * to an API listening on loopback (a developer's machine).
 */
import { timingSafeEqual } from 'node:crypto';
import { Hono } from 'hono';
import { HeadBucketCommand } from '@aws-sdk/client-s3';
import type { Registry } from 'prom-client';
import type { AppDeps } from '../deps.js';

const CHECK_TIMEOUT_MS = 2000;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e) => (clearTimeout(t), reject(e)),
    );
  });
}

async function check(name: string, fn: () => Promise<unknown>, log: AppDeps['logger']): Promise<{ name: string; ok: boolean; ms: number; error?: string }> {
  const started = performance.now();
  try {
    await withTimeout(fn(), CHECK_TIMEOUT_MS);
    return { name, ok: true, ms: Math.round(performance.now() - started) };
  } catch (err) {
    log.warn({ dependency: name, err: (err as Error).message || (err as Error).name }, 'readiness check failed');
    return { name, ok: false, ms: Math.round(performance.now() - started) };
  }
}

function metricsAllowed(deps: AppDeps, authorization: string | undefined): boolean {
  const token = deps.config.METRICS_TOKEN;
  if (token) {
    const given = Buffer.from(authorization?.replace(/^Bearer\s+/i, '') ?? '');
    const want = Buffer.from(token);
    return given.length === want.length && timingSafeEqual(given, want);
  }
  return ['127.0.0.1', 'localhost', '::1'].includes(deps.config.API_HOST);
}

export function healthRoutes(deps: AppDeps, registry: Registry) {
  const app = new Hono();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    // Draining (SIGTERM): not ready, whatever the dependencies say, so that no new work is routed here.
    if (deps.draining?.aborted) return c.json({ status: 'draining', checks: {} }, 503);
    const checks = await Promise.all([
      check('postgres', () => deps.sql`select 1`, deps.logger),
      check('redis', () => deps.redis.ping(), deps.logger),
      check('s3', () => deps.storage.client.send(new HeadBucketCommand({ Bucket: deps.storage.bucket })), deps.logger),
    ]);
    const ok = checks.every((x) => x.ok);
    return c.json({ status: ok ? 'ready' : 'not_ready', checks: Object.fromEntries(checks.map(({ name, ...rest }) => [name, rest])) }, ok ? 200 : 503);
  });
  app.get('/metrics', async (c) => {
    if (!metricsAllowed(deps, c.req.header('authorization'))) {
      return c.json(
        { error: { code: 'unauthorized', message: 'metrics need Authorization: Bearer <METRICS_TOKEN> (set METRICS_TOKEN on the API)', details: [{ path: 'authorization', message: 'missing or wrong metrics token', in: 'header' }] } },
        401,
      );
    }
    const body = await registry.metrics();
    return c.body(body, 200, { 'Content-Type': registry.contentType });
  });
  return app;
}
