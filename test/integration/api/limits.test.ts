/**
 * The hot-path middleware as a real Node server runs it: the per-key rate limit counted locally and
 * sent to Redis in batches (exact within a replica, shared across replicas), and JSON bodies read
 * straight from the socket with the size limit (413, malformed JSON, BOM), which `app.request`
 * in the other tests does not exercise.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createApp } from '../../../api/app.js';
import { createHarness, pretrain, randomUUID, seedReadyDataset, type Harness } from './harness.js';

const minute = () => Math.floor(Date.now() / 60_000);

/** Runs `fn` again (once) when a rate-limit window boundary fell inside it: its counts would be split. */
async function inOneWindow(fn: () => Promise<void>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const start = minute();
    try {
      await fn();
      return;
    } catch (err) {
      if (minute() === start || attempt > 0) throw err;
    }
  }
}

/** Waits (at most 10 s, then fails) until the tenant's rate-limit keys in Redis add up to `hits`. */
async function untilSharedCount(h: Harness, hits: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const keys = await h.deps.redis.keys(`${h.config.QUEUE_PREFIX}:ratelimit:*`);
    const counts = keys.length ? await h.deps.redis.mget(...keys) : [];
    const total = counts.reduce((sum, v) => sum + Number(v ?? 0), 0);
    if (total === hits) return;
    assert.ok(total < hits && Date.now() < deadline, `the shared count reached ${total}, waiting for ${hits}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('rate limit counted locally, shared through Redis', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness({ API_RATE_LIMIT_PER_MINUTE: 10 });
  });
  after(async () => h.close());

  test('exact within one replica under concurrency: 30 at once, exactly 10 pass', async () => {
    await inOneWindow(async () => {
      await h.deps.redis.del(...(await h.deps.redis.keys(`${h.config.QUEUE_PREFIX}:ratelimit:*`)), 'none');
      const fresh = createApp(h.deps).app; // a new limiter: no local count from earlier tests
      const statuses = await Promise.all(
        Array.from({ length: 30 }, async () => (await fresh.request('/v1/jobs', { headers: { authorization: `Bearer ${h.keys.readOnly}` } })).status),
      );
      assert.equal(statuses.filter((s) => s === 200).length, 10, JSON.stringify(statuses));
      assert.equal(statuses.filter((s) => s === 429).length, 20);
    });
  });

  test("a second replica counts the first one's hits", async () => {
    await inOneWindow(async () => {
      await h.deps.redis.del(...(await h.deps.redis.keys(`${h.config.QUEUE_PREFIX}:ratelimit:*`)), 'none');
      const replicaA = createApp(h.deps).app;
      const replicaB = createApp(h.deps).app;
      const get = (app: typeof replicaA) => app.request('/v1/jobs', { headers: { authorization: `Bearer ${h.keys.admin}` } });
      for (let i = 0; i < 6; i++) assert.equal((await get(replicaA)).status, 200);
      // A sends its hits in batches, at most one flush interval (20 ms) plus a round-trip late: B
      // asks once they are all in Redis, which is what "shared across replicas" promises.
      await untilSharedCount(h, 6);
      const first = await get(replicaB);
      assert.equal(first.status, 200);
      assert.equal(first.headers.get('ratelimit-remaining'), '3', 'B starts from the shared count (7 of 10)');
      const rest = [];
      for (let i = 0; i < 4; i++) rest.push((await get(replicaB)).status);
      assert.deepEqual(rest, [200, 200, 200, 429]);
    });
  });
});

describe('JSON bodies over a real socket', () => {
  let h: Harness;
  let server: ReturnType<typeof serve>;
  let port: number;
  before(async () => {
    h = await createHarness({ API_MAX_BODY_BYTES: 2048 });
    await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
    server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((r) => server.once('listening', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise((r) => server.close(r));
    await h.close();
  });

  /** POSTs raw bytes; `chunked` leaves out Content-Length. */
  function post(body: Buffer, opts: { chunked?: boolean } = {}): Promise<{ status: number; json: any }> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { authorization: `Bearer ${h.keys.admin}`, 'content-type': 'application/json' };
      if (!opts.chunked) headers['content-length'] = String(body.length);
      const req = http.request({ host: '127.0.0.1', port, path: '/v1/jobs', method: 'POST', headers }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
      });
      req.on('error', reject);
      if (opts.chunked) {
        // Several writes: the limit must hold across chunks.
        for (let i = 0; i < body.length; i += 512) req.write(body.subarray(i, i + 512));
        req.end();
      } else req.end(body);
    });
  }

  const big = Buffer.from(JSON.stringify(pretrain('fmnist', { labels: { note: 'x'.repeat(200) }, webhook: undefined, seed: 1 })).replace('}', `,"pad":"${'y'.repeat(3000)}"}`));

  test('a valid body creates the job', async () => {
    const res = await post(Buffer.from(JSON.stringify(pretrain('fmnist'))));
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.equal(res.json.dataset, 'fmnist@1');
  });

  test('over the limit: 413, with Content-Length and chunked', async () => {
    for (const chunked of [false, true]) {
      const res = await post(big, { chunked });
      assert.equal(res.status, 413, `chunked=${chunked}`);
      assert.equal(res.json.error.code, 'payload_too_large');
    }
  });

  test('headers written on Node\'s response: rate limit on every answer, Location and Idempotent-Replayed on submissions', async () => {
    const url = `http://127.0.0.1:${port}`;
    const auth = { authorization: `Bearer ${h.keys.admin}` };
    const submit = () =>
      fetch(`${url}/v1/jobs`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json', 'idempotency-key': 'headers-test' }, body: JSON.stringify(pretrain('fmnist')) });
    const first = await submit();
    const { id } = (await first.json()) as { id: string };
    assert.equal(first.status, 201);
    assert.equal(first.headers.get('location'), `/v1/jobs/${id}`);
    assert.equal(first.headers.get('idempotent-replayed'), null);
    assert.equal(first.headers.get('content-type'), 'application/json');
    const again = await submit();
    assert.equal(again.status, 201);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    const read = await fetch(`${url}/v1/jobs/${id}`, { headers: auth });
    assert.equal(read.status, 200);
    assert.equal(read.headers.get('content-type'), 'application/json');
    assert.equal(((await read.json()) as { id: string }).id, id);
    for (const res of [first, again, read]) {
      assert.equal(res.headers.get('ratelimit-limit'), String(h.config.API_RATE_LIMIT_PER_MINUTE));
      assert.match(res.headers.get('ratelimit-remaining') ?? '', /^\d+$/);
      assert.match(res.headers.get('ratelimit-reset') ?? '', /^\d+$/);
    }
    const missing = await fetch(`${url}/v1/jobs/${randomUUID()}`, { headers: auth });
    assert.equal(missing.status, 404);
    assert.ok(missing.headers.get('ratelimit-remaining'), 'errors carry the rate limit too');
    const anonymous = await fetch(`${url}/v1/jobs/${id}`);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get('www-authenticate'), 'Bearer realm="momentum"');
    const wrong = await fetch(`${url}/v1/jobs/${id}`, { headers: { authorization: 'Bearer mom_nope_nope' } });
    assert.equal(wrong.status, 401);
  });

  test('malformed JSON: 400 malformed_json; a leading BOM is accepted as Request.text() would', async () => {
    const bad = await post(Buffer.from('{"type":"pretrain",'));
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'malformed_json');
    const bom = await post(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(pretrain('fmnist')))]));
    assert.equal(bom.status, 201, JSON.stringify(bom.json));
  });
});

describe('over the rate limit, over a real socket', () => {
  test('429 with Retry-After and RateLimit-Remaining 0', async () => {
    const h = await createHarness({ API_RATE_LIMIT_PER_MINUTE: 2 });
    const server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
    try {
      await new Promise((r) => server.once('listening', r));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/jobs`;
      const statuses: number[] = [];
      let last: Response | undefined;
      for (let i = 0; i < 3; i++) {
        last = await fetch(url, { headers: { authorization: `Bearer ${h.keys.admin}` } });
        statuses.push(last.status);
      }
      assert.deepEqual(statuses, [200, 200, 429]);
      assert.match(last!.headers.get('retry-after') ?? '', /^\d+$/);
      assert.equal(last!.headers.get('ratelimit-remaining'), '0');
      assert.equal(last!.headers.get('ratelimit-limit'), '2');
    } finally {
      await new Promise((r) => server.close(r));
      await h.close();
    }
  });
});
