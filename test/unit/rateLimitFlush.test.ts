/**
 * The rate limiter's batching (api/middleware/rateLimit.ts): a stream of requests on one key sends
 * Redis one INCRBY per flush interval carrying every hit since the last, not one per round-trip,
 * and the count each request is judged on stays exact meanwhile.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { SharedWindowCounter } from '../../api/middleware/rateLimit.js';
import { createLogger } from '../../common/logger.js';

/** A Redis that answers each INCRBY on the next turn of the event loop, recording what it was sent. */
function fakeRedis() {
  const sent: number[] = [];
  let total = 0;
  const redis = {
    momentumRateLimitBy(_key: string, hits: number) {
      sent.push(hits);
      total += hits;
      const answer = total;
      return new Promise<number>((resolve) => setImmediate(() => resolve(answer)));
    },
  };
  return { redis: redis as unknown as Redis, sent };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

test('under concurrent requests, hits go to Redis in one INCRBY per flush interval, and each is judged on the exact count', async () => {
  const { redis, sent } = fakeRedis();
  let release: () => void = () => {};
  const paused = new Promise<void>((resolve) => (release = resolve));
  const waits: number[] = [];
  const counter = new SharedWindowCounter(redis, 'p', createLogger('silent'), 1000, (ms) => (waits.push(ms), paused), 20);

  assert.equal(await counter.hit('k', 1), 1, 'the first hit of the window waits for Redis');
  const counts: number[] = [];
  // Two requests at a time, a Redis answer between one pair and the next: a stream of concurrent requests.
  for (let i = 0; i < 50; i++) {
    counts.push((await counter.hit('k', 1)) as number, (await counter.hit('k', 1)) as number);
    await turn();
  }
  assert.deepEqual(counts, Array.from({ length: 100 }, (_, i) => i + 2), 'exact: every hit counted once, in order');
  assert.ok(sent.length <= 3, `while the interval runs, hits wait: ${sent.length} INCRBYs for 101 hits`);
  assert.ok(waits.length === 1 && waits[0]! > 0 && waits[0]! <= 20, String(waits));
  release();
  for (let i = 0; i < 10 && sent.reduce((a, b) => a + b, 0) < 101; i++) await turn();
  assert.equal(sent.reduce((a, b) => a + b, 0), 101, 'every hit reaches Redis');
  assert.ok(sent.length <= 4, JSON.stringify(sent));
});

test('one request at a time: each hit goes to Redis at once (a replica alone lags no one)', async () => {
  const { redis, sent } = fakeRedis();
  const counter = new SharedWindowCounter(redis, 'p', createLogger('silent'), 1000, () => new Promise(() => {}), 20);
  for (let i = 0; i < 5; i++) {
    await counter.hit('k', 1);
    for (let t = 0; t < 3; t++) await turn();
  }
  assert.deepEqual(sent, [1, 1, 1, 1, 1]);
});
