/** Liveness, readiness (each dependency checked, with a timeout) and Prometheus metrics. Unauthenticated. */
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

async function check(name: string, fn: () => Promise<unknown>): Promise<{ name: string; ok: boolean; ms: number; error?: string }> {
  const started = performance.now();
  try {
    await withTimeout(fn(), CHECK_TIMEOUT_MS);
    return { name, ok: true, ms: Math.round(performance.now() - started) };
  } catch (err) {
    return { name, ok: false, ms: Math.round(performance.now() - started), error: (err as Error).message || (err as Error).name };
  }
}

export function healthRoutes(deps: AppDeps, registry: Registry) {
  const app = new Hono();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const checks = await Promise.all([
      check('postgres', () => deps.sql`select 1`),
      check('redis', () => deps.redis.ping()),
      check('s3', () => deps.storage.client.send(new HeadBucketCommand({ Bucket: deps.storage.bucket }))),
    ]);
    const ok = checks.every((x) => x.ok);
    return c.json({ status: ok ? 'ready' : 'not_ready', checks: Object.fromEntries(checks.map(({ name, ...rest }) => [name, rest])) }, ok ? 200 : 503);
  });
  app.get('/metrics', async (c) => {
    const body = await registry.metrics();
    return c.body(body, 200, { 'Content-Type': registry.contentType });
  });
  return app;
}
