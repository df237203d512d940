/**
 * The reconciler against real Redis and Postgres: job state is set up directly, the BullMQ entry is
 * removed (what a Redis flush or a dead runner leaves), one pass runs, and the outcome is asserted.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { OutboxDispatcher } from '../../../api/dispatcher.js';
import { Reconciler, type ReconcilerOptions } from '../../../api/reconciler.js';
import { createWebhookWorker } from '../../../api/webhooks/worker.js';
import { transitionJob } from '../../../db/jobs.js';
import { BULLMQ_CONNECTION_OPTIONS, QUEUES } from '../../../contracts/queues.js';
import { createLogger } from '../../../common/logger.js';

let h: Harness;
let dispatcher: OutboxDispatcher;
const logger = createLogger('silent');

const reconciler = (o: Partial<ReconcilerOptions> = {}) =>
  new Reconciler({ sql: h.database.sql, db: h.database.db, queues: h.deps.queues, logger, graceMs: 0, staleRunMs: 0, ...o });

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A submitted job, dispatched to BullMQ, then started by a "runner" (attempt 1) in Postgres. */
async function runningJob(body: unknown = pretrain('fmnist')): Promise<string> {
  const res = await h.request('POST', '/v1/jobs', { body });
  assert.equal(res.status, 201, await res.clone().text());
  const { id } = (await res.json()) as { id: string };
  while ((await dispatcher.dispatchOnce()) > 0);
  const started = await transitionJob(h.database.db, id, { from: ['queued'], to: 'running', reason: 'attempt 1 on test', patch: { attempt: 1, startedAt: new Date() } });
  assert.ok(started);
  return id;
}

const state = async (id: string) => ((await h.database.sql`select state, attempt, finished_at from jobs where id = ${id}`)[0] as { state: string; attempt: number; finished_at: Date | null });

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  dispatcher = new OutboxDispatcher({ sql: h.database.sql, queues: h.deps.queues, logger, webhookBackoffMs: 50, webhookAttempts: 4 });
});
after(async () => h.close());

describe('stale running and canceling jobs', () => {
  test('running, BullMQ job gone → requeued with a reason, on the queue again, the enqueue in the outbox', async () => {
    const id = await runningJob();
    await (await h.deps.queues.train.getJob(id))!.remove();
    const report = await reconciler().reconcileOnce();
    assert.deepEqual(report.requeuedRuns, [id]);
    const after = await state(id);
    assert.equal(after.state, 'requeued');
    assert.equal(after.attempt, 1, 'the next runner counts the next attempt');
    const [event] = await h.database.sql`select from_state, to_state, reason from job_events where job_id = ${id} order by id desc limit 1`;
    assert.equal(event!.from_state, 'running');
    assert.equal(event!.to_state, 'requeued');
    assert.match(event!.reason, /lost its runner/);
    const back = await h.deps.queues.train.getJob(id);
    assert.ok(back && ['waiting', 'prioritized'].includes(await back.getState()), 'on the queue again');
    const [outbox] = await h.database.sql`select count(*)::int as n from outbox where topic = 'job.enqueue' and payload->>'jobId' = ${id}`;
    assert.equal(outbox!.n, 1, 'the re-enqueue is durable in the outbox too');
    while ((await dispatcher.dispatchOnce()) > 0); // the dispatcher finds it present: no duplicate
    assert.equal((await h.deps.queues.train.getJobs(['waiting', 'prioritized'])).filter((j) => j.id === id).length, 1);
    assert.deepEqual((await reconciler().reconcileOnce()).requeuedRuns, [], 'nothing to do the second time');
  });

  test('running, its BullMQ job failed (no runner holds it) → requeued and re-added', async () => {
    const id = await runningJob();
    const connection = new Redis(h.config.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
    const worker = new Worker(
      QUEUES.train,
      async (j) => {
        if (j.id === id) throw new UnrecoverableError('runner gave up without telling Postgres');
      },
      { connection, prefix: h.config.QUEUE_PREFIX },
    );
    try {
      await until('the BullMQ job to fail', async () => (await (await h.deps.queues.train.getJob(id))?.getState()) === 'failed');
    } finally {
      await worker.close();
      connection.disconnect();
    }
    assert.deepEqual((await reconciler().reconcileOnce()).requeuedRuns, [id]);
    assert.equal((await state(id)).state, 'requeued');
    assert.ok(['waiting', 'prioritized'].includes(await (await h.deps.queues.train.getJob(id))!.getState()));
  });

  test('running with a live BullMQ job, or gone for less than the grace period → left alone', async () => {
    const alive = await runningJob(); // still waiting on the queue (e.g. stalled back to wait)
    assert.ok(!(await reconciler().reconcileOnce()).requeuedRuns.includes(alive));
    assert.equal((await state(alive)).state, 'running');

    const recent = await runningJob();
    await (await h.deps.queues.train.getJob(recent))!.remove();
    assert.ok(!(await reconciler({ staleRunMs: 60_000 }).reconcileOnce()).requeuedRuns.includes(recent));
    assert.equal((await state(recent)).state, 'running');
  });

  test('canceling, BullMQ job gone → canceled and finished', async () => {
    const id = await runningJob();
    assert.equal((await h.request('POST', `/v1/jobs/${id}/cancel`)).status, 200);
    assert.equal((await state(id)).state, 'canceling');
    await (await h.deps.queues.train.getJob(id))!.remove();
    const report = await reconciler().reconcileOnce();
    assert.deepEqual(report.canceledRuns, [id]);
    const after = await state(id);
    assert.equal(after.state, 'canceled');
    assert.ok(after.finished_at);
    assert.equal(await h.deps.queues.train.getJob(id), undefined, 'not put back on the queue');
  });
});

describe('webhook deliveries lost from Redis', () => {
  test('a pending delivery whose queue job vanished is queued again and delivered; delivered ones are left alone', async () => {
    const received: string[] = [];
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        received.push(String(req.headers['webhook-id']));
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    try {
      const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist', { webhook: { url, events: ['job.queued'] } }) });
      assert.equal(res.status, 201);
      const { id: jobId } = (await res.json()) as { id: string };
      while ((await dispatcher.dispatchOnce()) > 0);
      const [delivery] = await h.database.sql<{ id: string; status: string }[]>`select id, status from webhook_deliveries where job_id = ${jobId}`;
      assert.equal(delivery!.status, 'pending');
      await (await h.deps.queues.webhooks.getJob(delivery!.id))!.remove(); // Redis lost it
      // A delivered one without a queue job is not sent again.
      const [done] = await h.database.sql<{ id: string }[]>`
        insert into webhook_deliveries (job_id, event, url, payload, status, attempts, delivered_at)
        values (${jobId}, 'job.queued', ${url}, '{}'::jsonb, 'delivered', 1, now()) returning id`;

      assert.deepEqual((await reconciler({ graceMs: 60_000 }).reconcileOnce()).redelivered, [], 'within the grace period');
      const report = await reconciler({ webhooks: { attempts: 4, backoffMs: 50 } }).reconcileOnce();
      assert.deepEqual(report.redelivered, [delivery!.id]);
      assert.ok(!report.redelivered.includes(done!.id));
      const queued = await h.deps.queues.webhooks.getJob(delivery!.id);
      assert.equal(queued?.opts.attempts, 4, 'the attempts it has left');

      const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(32), allowPrivate: true });
      try {
        await until('the delivery to arrive', async () => received.includes(delivery!.id));
        await until('the delivery to be recorded', async () => (await h.database.sql`select status from webhook_deliveries where id = ${delivery!.id}`)[0]!.status === 'delivered');
      } finally {
        await worker.close();
      }
      assert.deepEqual((await reconciler().reconcileOnce()).redelivered, [], 'nothing to do the second time');
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
