/**
 * POST /v1/jobs served before Hono (api/fastJobSubmit.ts) answers what the generic route answers:
 * the same statuses, bodies and headers for new jobs, replays and every error it can meet, one
 * rate-limit count per key across both paths, the same request histogram, the outbox row of each
 * new job, and nothing for a request it cannot fully vouch for (the generic route then answers it).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { assertOneRateLimitAcrossPaths, comparable, fastPathServers, requestCount, type Answer, type Call } from './fastPathServers.js';

const JSON_TYPE = { 'content-type': 'application/json' };

const post = (key: string | null, body: unknown, headers: Record<string, string> = JSON_TYPE): Call => ({
  method: 'POST',
  key,
  headers,
  body: typeof body === 'string' ? body : JSON.stringify(body),
});

/** A new job's answer, without what differs between two jobs: its id (also in Location) and its times. */
function comparableJob(a: Answer) {
  const c = comparable(a);
  if (a.status !== 201) return c;
  const { id, createdAt, updatedAt, ...job } = JSON.parse(a.body) as Record<string, unknown>;
  assert.match(String(id), /^[0-9a-f-]{36}$/);
  assert.equal(c.headers.location, `/v1/jobs/${id}`);
  assert.ok(createdAt && updatedAt);
  return { ...c, body: job, headers: { ...c.headers, location: 'L', 'content-length': 'N' } };
}

describe('the fast job submission', () => {
  let h: Harness;
  let s: Awaited<ReturnType<typeof fastPathServers>>;
  before(async () => {
    // A long key cache: whether a request finds its key cached must not depend on the test's speed.
    h = await createHarness({}, { authCacheMs: 600_000 });
    await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
    s = await fastPathServers(h);
    // Every key once through the generic route first: only a cached key is the fast path's.
    for (const key of Object.values(h.keys)) await s.generic('/v1/jobs', post(key, pretrain('fmnist')));
  });
  after(async () => {
    await s.close();
    await h.close();
  });

  test('answers like the generic route, and takes only what it can vouch for', async () => {
    const big = JSON.stringify({ ...pretrain('fmnist'), labels: { note: 'x'.repeat(h.config.API_MAX_BODY_BYTES) } });
    const chunked = () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(JSON.stringify(pretrain('fmnist'))));
          controller.close();
        },
      });
    const cases: { name: string; call: () => Call; taken: boolean; status: number; code?: string }[] = [
      { name: 'new job', call: () => post(h.keys.admin, pretrain('fmnist')), taken: true, status: 201 },
      { name: 'charset parameter', call: () => post(h.keys.admin, pretrain('fmnist'), { 'content-type': 'application/json; charset=utf-8' }), taken: true, status: 201 },
      { name: 'malformed JSON', call: () => post(h.keys.admin, '{"type": "pretrain",'), taken: true, status: 400, code: 'malformed_json' },
      { name: 'empty body', call: () => post(h.keys.admin, ''), taken: true, status: 400, code: 'malformed_json' },
      { name: 'misspelt field', call: () => post(h.keys.admin, pretrain('fmnist', { optim: { bacth: 64 } })), taken: true, status: 400, code: 'validation_failed' },
      { name: 'wrong type', call: () => post(h.keys.admin, pretrain('fmnist', { epochs: 'two' })), taken: true, status: 400, code: 'validation_failed' },
      { name: 'not an object', call: () => post(h.keys.admin, '[1, 2]'), taken: true, status: 400, code: 'validation_failed' },
      { name: 'unknown dataset', call: () => post(h.keys.admin, pretrain('nope')), taken: true, status: 422, code: 'dataset_not_found' },
      { name: "another tenant's dataset", call: () => post(h.keys.adminB, pretrain('fmnist')), taken: true, status: 422, code: 'dataset_not_found' },
      { name: 'bad Idempotency-Key', call: () => post(h.keys.admin, pretrain('fmnist'), { ...JSON_TYPE, 'idempotency-key': 'has space' }), taken: false, status: 400 },
      { name: 'text body', call: () => post(h.keys.admin, JSON.stringify(pretrain('fmnist')), { 'content-type': 'text/plain' }), taken: false, status: 415 },
      { name: 'another JSON media type', call: () => post(h.keys.admin, pretrain('fmnist'), { 'content-type': 'application/vnd.momentum+json' }), taken: false, status: 201 },
      { name: 'chunked body', call: () => ({ method: 'POST', key: h.keys.admin, headers: JSON_TYPE, body: chunked() }), taken: false, status: 201 },
      { name: 'body over the limit', call: () => post(h.keys.admin, big), taken: false, status: 413 },
      { name: 'query string', call: () => post(h.keys.admin, pretrain('fmnist')), taken: false, status: 201 },
      { name: 'no key', call: () => post(null, pretrain('fmnist')), taken: false, status: 401 },
      { name: 'unknown key', call: () => post('mom_nope', pretrain('fmnist')), taken: false, status: 401 },
      { name: 'key without jobs:write', call: () => post(h.keys.readOnly, pretrain('fmnist')), taken: false, status: 403 },
    ];
    for (const c of cases) {
      const path = c.name === 'query string' ? '/v1/jobs?x=1' : '/v1/jobs';
      const before = s.counter.taken;
      const fast = await s.fast(path, c.call());
      assert.equal(s.counter.taken - before, c.taken ? 1 : 0, `${c.name}: taken by the fast path`);
      const generic = await s.generic(path, c.call());
      assert.equal(fast.status, c.status, `${c.name}: ${fast.body}`);
      if (c.code) assert.equal(JSON.parse(fast.body).error.code, c.code, c.name);
      assert.deepEqual(comparableJob(fast), comparableJob(generic), c.name);
      if (c.status !== 401 && c.status !== 413) assert.match(fast.headers['ratelimit-remaining'] ?? '', /^\d+$/, `${c.name}: RateLimit-Remaining`);
    }
  });

  test('a new job is the job the API then reads, with its outbox row in the same transaction', async () => {
    const answer = await s.fast('/v1/jobs', post(h.keys.admin, pretrain('fmnist', { labels: { path: 'fast' } })));
    assert.equal(answer.status, 201, answer.body);
    const job = JSON.parse(answer.body) as { id: string };
    assert.deepEqual(job, await (await h.request('GET', `/v1/jobs/${job.id}`)).json());
    const outbox = await h.database.sql`select topic from outbox where payload->>'jobId' = ${job.id}`;
    assert.deepEqual(outbox.map((r) => r.topic), ['job.enqueue']);
  });

  test('Idempotency-Key: a replay and a reuse answer alike on both paths', async () => {
    const keyed = (key: string, body: unknown) => post(h.keys.admin, body, { ...JSON_TYPE, 'idempotency-key': key });
    const first = await s.generic('/v1/jobs', keyed('fast-replay-1', pretrain('fmnist')));
    assert.equal(first.status, 201, first.body);
    const taken = s.counter.taken;
    const fastReplay = await s.fast('/v1/jobs', keyed('fast-replay-1', pretrain('fmnist')));
    const genericReplay = await s.generic('/v1/jobs', keyed('fast-replay-1', pretrain('fmnist')));
    assert.equal(s.counter.taken, taken + 1);
    assert.equal(fastReplay.headers['idempotent-replayed'], 'true');
    assert.equal(JSON.parse(fastReplay.body).id, JSON.parse(first.body).id);
    assert.deepEqual(comparable(fastReplay), comparable(genericReplay));
    // A key first used on the fast path replays on the generic one.
    const fastFirst = await s.fast('/v1/jobs', keyed('fast-replay-2', pretrain('fmnist')));
    const genericSecond = await s.generic('/v1/jobs', keyed('fast-replay-2', pretrain('fmnist')));
    assert.equal(fastFirst.status, 201);
    assert.equal(JSON.parse(genericSecond.body).id, JSON.parse(fastFirst.body).id);
    // The same key with another body: 409 on both.
    const fastReuse = await s.fast('/v1/jobs', keyed('fast-replay-1', pretrain('fmnist', { epochs: 3 })));
    const genericReuse = await s.generic('/v1/jobs', keyed('fast-replay-1', pretrain('fmnist', { epochs: 3 })));
    assert.equal(fastReuse.status, 409, fastReuse.body);
    assert.deepEqual(comparable(fastReuse), comparable(genericReuse));
  });

  test('submissions are timed in the request histogram under the route, whichever path serves them', async () => {
    const count = (status: number) => requestCount(h, 'POST', '/v1/jobs', status);
    const [created, invalid] = [await count(201), await count(400)];
    await s.fast('/v1/jobs', post(h.keys.admin, pretrain('fmnist')));
    await s.fast('/v1/jobs', post(h.keys.admin, '{'));
    await s.generic('/v1/jobs', post(h.keys.admin, pretrain('fmnist')));
    assert.equal(await count(201), created + 2);
    assert.equal(await count(400), invalid + 1);
  });
});

test('the rate limit counts a key once across both paths, and the fast submission answers its 429', async () => {
  const h = await createHarness({ API_RATE_LIMIT_PER_MINUTE: 5 }, { authCacheMs: 600_000 });
  const s = await fastPathServers(h);
  try {
    await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
    await assertOneRateLimitAcrossPaths(s, '/v1/jobs', () => post(h.keys.admin, pretrain('fmnist')));
    const [{ n }] = (await h.database.sql`select count(*)::int as n from jobs`) as unknown as [{ n: number }];
    assert.equal(n, 5, 'a refused submission wrote nothing');
  } finally {
    await s.close();
    await h.close();
  }
});
