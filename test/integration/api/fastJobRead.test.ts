/**
 * GET /v1/jobs/{id} served before Hono (api/fastJobRead.ts) answers what the generic route answers:
 * the same statuses, bodies and headers, one rate-limit count per key across both paths, the same
 * request histogram, and nothing for a request it cannot fully vouch for (the generic route then
 * answers it). Two real servers on one app: one with the fast path in front, one without.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { assertOneRateLimitAcrossPaths, comparable, fastPathServers, requestCount } from './fastPathServers.js';

/** The two servers, reading with a key (or none). */
async function servers(h: Harness) {
  const s = await fastPathServers(h);
  return { ...s, fast: (path: string, key: string | null) => s.fast(path, { key }), generic: (path: string, key: string | null) => s.generic(path, { key }) };
}

async function submit(h: Harness, key = h.keys.admin): Promise<string> {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist'), key });
  assert.equal(res.status, 201, await res.clone().text());
  return ((await res.json()) as { id: string }).id;
}

describe('the fast job read', () => {
  let h: Harness;
  let s: Awaited<ReturnType<typeof servers>>;
  before(async () => {
    // A long key cache: whether a request finds its key cached must not depend on the test's speed.
    h = await createHarness({}, { authCacheMs: 600_000 });
    await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
    s = await servers(h);
  });
  after(async () => {
    await s.close();
    await h.close();
  });

  test('answers like the generic route, and takes only what it can vouch for', async () => {
    const id = await submit(h);
    const cases: { name: string; path: string; key: string | null; taken: boolean; status: number }[] = [
      { name: 'own job', path: `/v1/jobs/${id}`, key: h.keys.admin, taken: true, status: 200 },
      { name: 'own job, jobs:read key', path: `/v1/jobs/${id}`, key: h.keys.readOnly, taken: true, status: 200 },
      { name: 'own job, query string', path: `/v1/jobs/${id}?x=1`, key: h.keys.admin, taken: true, status: 200 },
      { name: "another tenant's job", path: `/v1/jobs/${id}`, key: h.keys.adminB, taken: true, status: 404 },
      { name: 'no such job', path: '/v1/jobs/0b5c4f8e-5d5a-4c53-9d1e-0d6f6a8e2b11', key: h.keys.admin, taken: true, status: 404 },
      { name: 'upper-case id', path: `/v1/jobs/${id.toUpperCase()}`, key: h.keys.admin, taken: true, status: 200 },
      { name: 'not a uuid', path: '/v1/jobs/0b5c4f8e-5d5a-4c53-9d1e-0d6f6a8e2b1z', key: h.keys.admin, taken: false, status: 400 },
      { name: 'trailing slash', path: `/v1/jobs/${id}/`, key: h.keys.admin, taken: false, status: 404 },
      // The router decodes it to the job's own id; decoding is the router's business, not the fast path's.
      { name: 'encoded id', path: `/v1/jobs/%${id.charCodeAt(0).toString(16)}${id.slice(1)}`, key: h.keys.admin, taken: false, status: 200 },
      { name: 'no key', path: `/v1/jobs/${id}`, key: null, taken: false, status: 401 },
      { name: 'unknown key', path: `/v1/jobs/${id}`, key: 'mom_nope', taken: false, status: 401 },
      { name: 'key without jobs:read', path: `/v1/jobs/${id}`, key: h.keys.datasetsOnly, taken: false, status: 403 },
    ];
    // Every key once through the generic route first: only a cached key is the fast path's.
    for (const key of Object.values(h.keys)) await s.generic(`/v1/jobs/${id}`, key);
    for (const c of cases) {
      const before = s.counter.taken;
      const fast = await s.fast(c.path, c.key);
      assert.equal(s.counter.taken - before, c.taken ? 1 : 0, `${c.name}: taken by the fast path`);
      const generic = await s.generic(c.path, c.key);
      assert.equal(fast.status, c.status, `${c.name}: ${fast.body}`);
      assert.deepEqual(comparable(fast), comparable(generic), c.name);
      if (c.status !== 401) assert.match(fast.headers['ratelimit-remaining'] ?? '', /^\d+$/, `${c.name}: RateLimit-Remaining`);
    }
    const read = await s.fast(`/v1/jobs/${id}`, h.keys.admin);
    assert.deepEqual(JSON.parse(read.body), await (await h.request('GET', `/v1/jobs/${id}`)).json());
  });

  test('a revoked key is not served, once this process knows of the revoke', async () => {
    const id = await submit(h);
    const key = await h.request('POST', '/v1/keys', { body: { name: 'short-lived', scopes: ['jobs:read'] } });
    assert.equal(key.status, 201, await key.clone().text());
    const { id: keyId, key: secret } = (await key.json()) as { id: string; key: string };
    assert.equal((await s.fast(`/v1/jobs/${id}`, secret)).status, 200); // generic: caches the key
    const before = s.counter.taken;
    assert.equal((await s.fast(`/v1/jobs/${id}`, secret)).status, 200);
    assert.equal(s.counter.taken, before + 1);
    assert.equal((await h.request('DELETE', `/v1/keys/${keyId}`)).status, 200);
    const revoked = await s.fast(`/v1/jobs/${id}`, secret);
    assert.equal(revoked.status, 401, revoked.body);
    // The generic route cached the key as revoked: still not the fast path's to serve.
    assert.equal((await s.fast(`/v1/jobs/${id}`, secret)).status, 401);
    assert.equal(s.counter.taken, before + 1, 'the revoked key went to the generic route');
  });

  test('reads are timed in the request histogram under the route template, whichever path serves them', async () => {
    const id = await submit(h);
    const count = (status: number) => requestCount(h, 'GET', '/v1/jobs/:id', status);
    const [ok, missing] = [await count(200), await count(404)];
    await s.fast(`/v1/jobs/${id}`, h.keys.admin);
    await s.fast(`/v1/jobs/${id}`, h.keys.admin);
    await s.fast(`/v1/jobs/${id}`, h.keys.adminB);
    await s.generic(`/v1/jobs/${id}`, h.keys.admin);
    assert.equal(await count(200), ok + 3);
    assert.equal(await count(404), missing + 1);
  });
});

test('the rate limit counts a key once across both paths, and the fast path answers its 429', async () => {
  const h = await createHarness({ API_RATE_LIMIT_PER_MINUTE: 5 }, { authCacheMs: 600_000 });
  const s = await fastPathServers(h);
  try {
    await seedReadyDataset(h, h.tenantB, 'fmnist', 1);
    const id = await submit(h, h.keys.adminB); // tenant B's key: tenant A's admin key keeps its whole budget
    await assertOneRateLimitAcrossPaths(s, `/v1/jobs/${id}`, () => ({ key: h.keys.admin }));
  } finally {
    await s.close();
    await h.close();
  }
});
