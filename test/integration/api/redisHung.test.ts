/**
 * A hung Redis (the process stopped: connections open, nothing answers) holds no request (issue 10):
 * every Redis call a request waits on has a deadline. The rate limiter then counts locally and lets
 * the request through, a cancel still cancels (the queue removal is best effort), and a metrics
 * scrape, which needs Redis's queue counts, answers 503 JSON with Retry-After.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { startPrivateRedis } from '../../support/privateServices.js';
import { createApp } from '../../../api/app.js';

let redis: Awaited<ReturnType<typeof startPrivateRedis>>;
let h: Harness;

before(async () => {
  redis = await startPrivateRedis();
  h = await createHarness({ REDIS_URL: redis.url, REDIS_REQUEST_TIMEOUT_MS: 300 });
  await seedReadyDataset(h, h.tenantA, 'hung');
});
after(async () => {
  redis.resume();
  await h.close();
  await redis.remove();
});

describe('a hung Redis', () => {
  test('requests answer: rate limit counted locally, cancel applied, metrics 503 JSON', { timeout: 60_000 }, async () => {
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('hung@1') })).json()) as any;
    assert.equal(job.state, 'queued');
    redis.pause();
    // A fresh app: its limiter has no count for this window, so the first request must ask Redis.
    const { app } = createApp(h.deps);
    const call = (method: string, path: string) => app.request(path, { method, headers: { authorization: `Bearer ${h.keys.admin}` } });

    const list = await call('GET', '/v1/jobs');
    assert.equal(list.status, 200);
    assert.equal(list.headers.get('ratelimit-limit'), String(h.config.API_RATE_LIMIT_PER_MINUTE));

    const canceled = await call('POST', `/v1/jobs/${job.id}/cancel`);
    assert.equal(canceled.status, 200, await canceled.clone().text());
    assert.equal(((await canceled.json()) as any).state, 'canceled');

    const metrics = await app.request('/metrics');
    assert.equal(metrics.status, 503);
    assert.equal(metrics.headers.get('retry-after'), '2');
    assert.equal(((await metrics.json()) as any).error.code, 'unavailable');
  });
});
