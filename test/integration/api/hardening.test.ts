/** Smaller hardening of issue 10: crafted cursors, retry budgets, /readyz and /metrics exposure. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { createApp } from '../../../api/app.js';
import { Storage, storageConfigFrom } from '../../../common/storage.js';
import { runningSecondsSoFar } from '../../../db/runs.js';

let h: Harness;
before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
});
after(async () => h.close());

test('a crafted cursor of 36 UUID characters that is no UUID is a 400, not a 500', async () => {
  for (const raw of ['-'.repeat(36), 'ffffffff-ffff-ffff-ffff-fffffffffff-', 'x']) {
    const res = await h.request('GET', `/v1/jobs?cursor=${Buffer.from(raw).toString('base64url')}`);
    assert.equal(res.status, 400, raw);
    assert.equal(((await res.json()) as { error: { details: { path: string }[] } }).error.details[0]!.path, 'cursor');
  }
});

test('POST /retry gives the job a fresh attempt count and runtime budget (the attempt number keeps rising)', async () => {
  const { id } = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as { id: string };
  // Five attempts that ran 100 s each, then failed for good.
  await h.database.sql`update jobs set state = 'failed', attempt = 5 where id = ${id}`;
  await h.database.sql`
    insert into job_events (job_id, kind, from_state, to_state, attempt, at)
    values (${id}, 'state', 'queued', 'running', 1, now() - interval '600 seconds'),
           (${id}, 'state', 'running', 'failed', 5, now() - interval '100 seconds')`;
  assert.ok((await runningSecondsSoFar(h.database.db, id)) >= 499);
  assert.equal((await h.request('POST', `/v1/jobs/${id}/retry`)).status, 200);
  const [row] = await h.database.sql`select attempt, attempt_base from jobs where id = ${id}`;
  assert.deepEqual({ ...row }, { attempt: 5, attempt_base: 5 });
  assert.ok((await runningSecondsSoFar(h.database.db, id)) < 1, 'the runtime budget starts again');
});

test('/readyz names the dependency that is down without echoing its error', async () => {
  const deps = { ...h.deps, storage: new Storage({ ...storageConfigFrom(h.config), endpoint: 'http://127.0.0.1:1' }) };
  const res = await createApp(deps).app.request('/readyz');
  assert.equal(res.status, 503);
  const body = (await res.json()) as { checks: Record<string, { ok: boolean; error?: string }> };
  assert.equal(body.checks.s3!.ok, false);
  assert.equal(body.checks.s3!.error, undefined);
  assert.doesNotMatch(JSON.stringify(body), /127\.0\.0\.1|ECONNREFUSED/);
  deps.storage.destroy();
});

test('/metrics: a bearer METRICS_TOKEN when set; without one, only on a loopback API', async () => {
  const open = createApp({ ...h.deps, config: { ...h.config, API_HOST: '0.0.0.0' } }).app;
  assert.equal((await open.request('/metrics')).status, 401);
  const token = 't'.repeat(24);
  const guarded = createApp({ ...h.deps, config: { ...h.config, API_HOST: '0.0.0.0', METRICS_TOKEN: token } }).app;
  assert.equal((await guarded.request('/metrics', { headers: { authorization: 'Bearer wrong' } })).status, 401);
  assert.equal((await guarded.request('/metrics', { headers: { authorization: `Bearer ${token}` } })).status, 200);
  assert.equal((await h.app.request('/metrics')).status, 200, 'a loopback API (development) serves it');
});

test('the runner hands its child the configuration without turning unset optional settings into "undefined"', async () => {
  const { configEnv } = await import('../../../runner/supervisor/context.js');
  const { loadConfig } = await import('../../../common/config.js');
  const env = configEnv(loadConfig({}));
  assert.ok(!('METRICS_TOKEN' in env));
  assert.doesNotThrow(() => loadConfig(env), 'the child parses what the parent hands it');
});
