/**
 * Silent job loss: a Redis that refuses writes (OOM under noeviction, as a private redis-server
 * with maxmemory 1 does) must never make the outbox give up on a job. The dispatcher backs off per
 * row and keeps the row; the reconciler treats an enqueue stuck in the outbox as lost work.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { OutboxDispatcher, outboxBackoffMs } from '../../../api/dispatcher.js';
import { Reconciler } from '../../../api/reconciler.js';
import { closeQueues, createQueues, type Queues } from '../../../api/deps.js';
import { BULLMQ_CONNECTION_OPTIONS } from '../../../contracts/queues.js';
import { createLogger } from '../../../common/logger.js';
import { startPrivateRedis } from '../../support/privateServices.js';

const logger = createLogger('silent');
let h: Harness;
let redis: Awaited<ReturnType<typeof startPrivateRedis>>;
let connection: Redis;
let queues: Queues;

const redisCli = (...args: string[]) => spawnSync('redis-cli', ['-p', String(redis.port), ...args], { encoding: 'utf8' }).stdout.trim();

async function submit(): Promise<string> {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') });
  assert.equal(res.status, 201, await res.clone().text());
  return ((await res.json()) as { id: string }).id;
}

const outboxRow = async (jobId: string) =>
  (await h.database.sql<{ id: number; attempts: number; next_attempt_at: Date | null; last_error: string | null; due_in_ms: number | null }[]>`
    select id, attempts, next_attempt_at, last_error,
      (extract(epoch from next_attempt_at - now()) * 1000)::float8 as due_in_ms
    from outbox where topic = 'job.enqueue' and payload->>'jobId' = ${jobId}`)[0];

before(async () => {
  redis = await startPrivateRedis();
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  connection = new Redis(redis.url, { ...BULLMQ_CONNECTION_OPTIONS });
  queues = createQueues(h.config, connection);
});
after(async () => {
  await closeQueues(queues);
  connection.disconnect();
  await h.close();
  await redis.remove();
});

describe('outbox under a Redis that refuses writes', () => {
  test('backoff is exponential, capped and jittered', () => {
    assert.equal(outboxBackoffMs(1, { random: () => 1 }), 500);
    assert.equal(outboxBackoffMs(1, { random: () => 0 }), 250);
    assert.equal(outboxBackoffMs(4, { random: () => 1 }), 4000);
    assert.equal(outboxBackoffMs(40, { random: () => 1 }), 60_000, 'capped');
    assert.equal(outboxBackoffMs(40, { random: () => 0 }), 30_000, 'jitter within the upper half');
  });

  test('a failing row backs off, is never abandoned, and goes out once Redis takes writes', async () => {
    // A first backoff of 30–60 s: its next try is far enough ahead that however slow this machine,
    // the second pass below comes before it (order, not speed: the default 250–500 ms did not).
    const dispatcher = new OutboxDispatcher({ sql: h.database.sql, queues, logger, rowBackoffBaseMs: 60_000, rowBackoffCapMs: 60_000 });
    const jobId = await submit();
    assert.equal(redisCli('config', 'set', 'maxmemory', '1'), 'OK');
    try {
      await dispatcher.dispatchOnce();
      const failed = await outboxRow(jobId);
      assert.ok(failed, 'still pending');
      assert.equal(failed.attempts, 1);
      assert.match(failed.last_error ?? '', /OOM/);
      assert.ok(failed.due_in_ms! > 20_000 && failed.due_in_ms! <= 60_000, `the row waits its backoff before its next try (due in ${failed.due_in_ms} ms)`);
      assert.equal(await dispatcher.dispatchOnce(), 0, 'not claimed again before its backoff passed');
    } finally {
      assert.equal(redisCli('config', 'set', 'maxmemory', '0'), 'OK');
    }
    // Many failures later (the old code gave up after 20): still dispatched once it is due.
    await h.database.sql`update outbox set attempts = 500, next_attempt_at = now() - interval '1 second' where topic = 'job.enqueue' and payload->>'jobId' = ${jobId}`;
    await dispatcher.dispatchOnce();
    assert.equal(await outboxRow(jobId), undefined, 'dispatched and gone');
    assert.ok(await queues.train.getJob(jobId), 'on the queue');
  });

  test('the reconciler enqueues a job whose outbox row went stale, and settles the row', async () => {
    const jobId = await submit();
    // What hours of a failing dispatcher leave: an old undispatched row, far in its backoff.
    await h.database.sql`
      update outbox set attempts = 40, created_at = now() - interval '1 hour', next_attempt_at = now() + interval '1 minute', last_error = 'OOM'
      where topic = 'job.enqueue' and payload->>'jobId' = ${jobId}`;
    await h.database.sql`update jobs set updated_at = now() - interval '1 hour' where id = ${jobId}`;
    const fresh = await submit(); // a fresh undispatched row is the dispatcher's: left alone
    await h.database.sql`update jobs set updated_at = now() - interval '1 hour' where id = ${fresh}`;
    const reconciler = new Reconciler({ sql: h.database.sql, db: h.database.db, queues, logger, graceMs: 0, staleOutboxMs: 60_000 });
    const report = await reconciler.reconcileOnce();
    assert.deepEqual(report.recoveredFromOutbox, [jobId]);
    assert.ok(report.reenqueued.includes(jobId));
    assert.ok(!report.reenqueued.includes(fresh), 'a fresh outbox row stays with the dispatcher');
    assert.ok(await queues.train.getJob(jobId), 'on the queue');
    assert.equal(await outboxRow(jobId), undefined, 'the stale row is settled');
    assert.ok(await outboxRow(fresh), "the fresh row is still the dispatcher's");
  });
});
