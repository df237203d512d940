import { after, before, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHarness, type Harness } from './harness.js';

let h: Harness;

before(async () => {
  h = await createHarness({ API_RATE_LIMIT_PER_MINUTE: 5000 });
});
after(async () => h.close());

describe('authentication', () => {
  test('missing, malformed and unknown keys are 401 with WWW-Authenticate and the error shape', async () => {
    for (const headers of [{}, { authorization: 'Basic abc' }, { authorization: 'Bearer mom_nope_nope' }] as Record<string, string>[]) {
      const res = await h.request('GET', '/v1/jobs', { key: null, headers });
      assert.equal(res.status, 401, JSON.stringify(headers));
      assert.match(res.headers.get('www-authenticate') ?? '', /Bearer/);
      const body = (await res.json()) as any;
      assert.equal(body.error.code, 'unauthorized');
      assert.equal(body.error.details[0].path, 'authorization');
    }
  });

  test('every /v1 route needs a key', async () => {
    const routes = [
      ['POST', '/v1/jobs'],
      ['GET', '/v1/jobs/00000000-0000-4000-8000-000000000000'],
      ['GET', '/v1/datasets'],
      ['POST', '/v1/datasets'],
      ['GET', '/v1/keys'],
      ['GET', '/v1/webhooks/secret'],
      ['GET', '/v1/jobs/00000000-0000-4000-8000-000000000000/checkpoints/latest/download'],
    ];
    for (const [method, path] of routes) assert.equal((await h.request(method!, path!, { key: null, body: method === 'POST' ? {} : undefined })).status, 401, `${method} ${path}`);
  });

  test('a key without the scope is 403 naming the scope', async () => {
    const res = await h.request('POST', '/v1/jobs', { key: h.keys.readOnly, body: { type: 'pretrain', dataset: 'x' } });
    assert.equal(res.status, 403);
    const body = (await res.json()) as any;
    assert.equal(body.error.code, 'forbidden');
    assert.match(body.error.message, /jobs:write/);
    assert.equal((await h.request('GET', '/v1/jobs', { key: h.keys.datasetsOnly })).status, 403);
    assert.equal((await h.request('GET', '/v1/keys', { key: h.keys.readOnly })).status, 403);
    assert.equal((await h.request('GET', '/v1/jobs', { key: h.keys.readOnly })).status, 200);
  });
});

describe('/v1/keys', () => {
  test('create shows the secret once; list never does; the new key works with its scopes', async () => {
    const res = await h.request('POST', '/v1/keys', { body: { name: 'ci', scopes: ['jobs:read'] } });
    assert.equal(res.status, 201);
    const created = (await res.json()) as any;
    assert.match(created.key, /^mom_/);
    assert.ok(created.key.startsWith(created.prefix));
    const list = (await (await h.request('GET', '/v1/keys')).json()) as any;
    const listed = list.keys.find((k: any) => k.id === created.id);
    assert.deepEqual(listed.scopes, ['jobs:read']);
    assert.ok(!JSON.stringify(list).includes(created.key));
    const [row] = await h.database.sql`select secret_hash from api_keys where id = ${created.id}`;
    assert.notEqual(row!.secret_hash, created.key, 'only a hash is stored');
    assert.equal(row!.secret_hash.length, 64);
    assert.equal((await h.request('GET', '/v1/jobs', { key: created.key })).status, 200);
    assert.equal((await h.request('POST', '/v1/datasets', { key: created.key, body: { name: 'x' } })).status, 403);
  });

  test('bad bodies are 400: unknown scope, unknown field, missing name', async () => {
    for (const [body, path] of [
      [{ name: 'x', scopes: ['root'] }, 'scopes.0'],
      [{ name: 'x', scopes: ['admin'], tenant: 'other' }, 'tenant'],
      [{ scopes: ['admin'] }, 'name'],
    ] as const) {
      const res = await h.request('POST', '/v1/keys', { body });
      assert.equal(res.status, 400);
      assert.equal(((await res.json()) as any).error.details[0].path, path);
    }
  });

  test('a revoked key is refused (401) at once through this process, and within the cache time through another', async () => {
    const created = (await (await h.request('POST', '/v1/keys', { body: { name: 'short-lived', scopes: ['jobs:read'] } })).json()) as any;
    // The cache's clock is mocked: what is asserted is the order of events, not how fast they ran.
    mock.timers.enable({ apis: ['Date'], now: Date.now() });
    try {
      assert.equal((await h.request('GET', '/v1/jobs', { key: created.key })).status, 200);
      // Revoke it behind this process's back (as another replica would): the cache lets it live at most authCacheMs (1 s).
      await h.database.sql`update api_keys set revoked_at = now() where id = ${created.id}`;
      mock.timers.tick(900);
      assert.equal((await h.request('GET', '/v1/jobs', { key: created.key })).status, 200, 'still cached 0.9 s later');
      mock.timers.tick(200);
      const res = await h.request('GET', '/v1/jobs', { key: created.key });
      assert.equal(res.status, 401, 'refused once the cache time passed');
      assert.match(((await res.json()) as any).error.message, /revoked/);
    } finally {
      mock.timers.reset();
    }

    const second = (await (await h.request('POST', '/v1/keys', { body: { name: 'revoke-me', scopes: ['jobs:read'] } })).json()) as any;
    assert.equal((await h.request('GET', '/v1/jobs', { key: second.key })).status, 200);
    const revoke = await h.request('DELETE', `/v1/keys/${second.id}`);
    assert.equal(revoke.status, 200);
    assert.ok(((await revoke.json()) as any).revokedAt);
    assert.equal((await h.request('GET', '/v1/jobs', { key: second.key })).status, 401, 'no wait needed through the revoking process');
    assert.equal((await h.request('DELETE', `/v1/keys/${second.id}`)).status, 409);
  });

  test("keys are per tenant: another tenant's key id is 404 and absent from its list", async () => {
    const created = (await (await h.request('POST', '/v1/keys', { body: { name: 'a-only', scopes: ['jobs:read'] } })).json()) as any;
    assert.equal((await h.request('DELETE', `/v1/keys/${created.id}`, { key: h.keys.adminB })).status, 404);
    const list = (await (await h.request('GET', '/v1/keys', { key: h.keys.adminB })).json()) as any;
    assert.ok(!list.keys.some((k: any) => k.id === created.id));
    assert.equal((await h.request('GET', '/v1/jobs', { key: created.key })).status, 200, 'still valid');
  });
});

describe('rate limits', () => {
  test('over the per-key budget: 429 with Retry-After and RateLimit-* headers; other keys unaffected; the next window starts afresh', async () => {
    const limited = await createHarness({ API_RATE_LIMIT_PER_MINUTE: 3 });
    // The limiter's clock is mocked at 10 s into a one-minute window, so no window boundary can fall
    // inside the loop however slow the machine is.
    const windowStart = Math.floor(Date.now() / 60_000) * 60_000;
    mock.timers.enable({ apis: ['Date'], now: windowStart + 10_000 });
    try {
      const seen: [number, string | null, string | null, string | null, string | null][] = [];
      for (let i = 0; i < 5; i++) {
        const res = await limited.request('GET', '/v1/jobs');
        seen.push([res.status, res.headers.get('ratelimit-limit'), res.headers.get('ratelimit-remaining'), res.headers.get('ratelimit-reset'), res.headers.get('retry-after')]);
        if (res.status === 429) assert.equal(((await res.json()) as any).error.code, 'rate_limited');
      }
      assert.deepEqual(seen, [
        [200, '3', '2', '50', null],
        [200, '3', '1', '50', null],
        [200, '3', '0', '50', null],
        [429, '3', '0', '50', '50'],
        [429, '3', '0', '50', '50'],
      ]);
      assert.equal((await limited.request('GET', '/v1/jobs', { key: limited.keys.readOnly })).status, 200, 'another key has its own budget');
      mock.timers.tick(50_000);
      const next = await limited.request('GET', '/v1/jobs');
      assert.equal(next.status, 200, 'a new window');
      assert.equal(next.headers.get('ratelimit-remaining'), '2');
      assert.equal(next.headers.get('ratelimit-reset'), '60');
    } finally {
      mock.timers.reset();
      await limited.close();
    }
  });
});

describe('service routes', () => {
  test('/healthz, /readyz (each dependency), /metrics, /openapi.json, /docs', async () => {
    assert.equal((await h.app.request('/healthz')).status, 200);
    const ready = (await (await h.app.request('/readyz')).json()) as any;
    assert.equal(ready.status, 'ready');
    assert.deepEqual(Object.keys(ready.checks).sort(), ['postgres', 'redis', 's3']);
    await h.request('GET', '/v1/jobs');
    const metrics = await (await h.app.request('/metrics')).text();
    assert.match(metrics, /momentum_http_request_duration_seconds_bucket\{[^}]*route="\/v1\/jobs"/);
    assert.match(metrics, /momentum_jobs/);
    assert.match(metrics, /momentum_queue_jobs\{queue="train",status="waiting"\}/);
    const doc = (await (await h.app.request('/openapi.json')).json()) as any;
    assert.equal(doc.openapi, '3.1.0');
    for (const path of ['/v1/jobs', '/v1/jobs/{id}', '/v1/jobs/{id}/checkpoints/{ref}/download', '/v1/datasets/{name}/versions', '/v1/keys']) {
      assert.ok(doc.paths[path], path);
    }
    assert.ok(doc.paths['/v1/jobs'].post.requestBody.content['application/json'].schema.oneOf, 'the job spec schema is in the document');
    assert.match(await (await h.app.request('/docs')).text(), /swagger/i);
    const unknown = await h.app.request('/v2/nothing');
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as any).error.code, 'not_found');
  });

  test('/readyz answers 503 naming the dependency that is down', async () => {
    const { Storage, storageConfigFrom } = await import('../../../common/storage.js');
    const broken = await createHarness({}, {});
    try {
      broken.deps.storage = new Storage({ ...storageConfigFrom(broken.config), endpoint: 'http://127.0.0.1:1' });
      const { createApp } = await import('../../../api/app.js');
      const { app } = createApp(broken.deps);
      const res = await app.request('/readyz');
      assert.equal(res.status, 503);
      const body = (await res.json()) as any;
      assert.equal(body.checks.s3.ok, false);
      assert.equal(body.checks.postgres.ok, true);
      broken.deps.storage.destroy();
    } finally {
      await broken.close();
    }
  });
});

test('/readyz answers 503 `draining` once the process drains (SIGTERM), with every dependency up', async () => {
  const { createApp } = await import('../../../api/app.js');
  const draining = new AbortController();
  const { app } = createApp({ ...h.deps, draining: draining.signal });
  assert.equal((await app.request('/readyz')).status, 200);
  draining.abort();
  const res = await app.request('/readyz');
  assert.equal(res.status, 503);
  assert.equal(((await res.json()) as { status: string }).status, 'draining');
});

describe('scripts/create-api-key.ts', () => {
  test('creates the tenant and prints a working admin key', async () => {
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/create-api-key.ts', '--tenant', 'from-script', '--json'], {
        env: { ...process.env, DATABASE_URL: h.database.url },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(out.code, 0, out.stderr);
    const printed = JSON.parse(out.stdout);
    assert.deepEqual(printed.scopes, ['admin']);
    const res = await h.request('GET', '/v1/keys', { key: printed.key });
    assert.equal(res.status, 200);
    const keys = ((await res.json()) as any).keys;
    assert.equal(keys.length, 1, 'a new tenant, with only this key');
  });
});
