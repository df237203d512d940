import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { createHarness, pretrain, randomUUID, seedReadyDataset, type Harness } from './harness.js';
import { enqueueDelivery, OutboxDispatcher } from '../../../api/dispatcher.js';
import { Reconciler } from '../../../api/reconciler.js';
import { createWebhookWorker } from '../../../api/webhooks/worker.js';
import { carriesSignature, specSignature } from '../../support/standardWebhooks.js';
import { transitionJob } from '../../../db/jobs.js';
import { registerCheckpoint } from '../../../db/runs.js';
import { BULLMQ_CONNECTION_OPTIONS, QUEUES } from '../../../contracts/queues.js';
import { createLogger } from '../../../common/logger.js';

let h: Harness;
let dispatcher: OutboxDispatcher;
const logger = createLogger('silent');

async function submit(body: unknown) {
  const res = await h.request('POST', '/v1/jobs', { body });
  assert.equal(res.status, 201, await res.clone().text());
  return (await res.json()) as any;
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  dispatcher = new OutboxDispatcher({ sql: h.database.sql, queues: h.deps.queues, logger, webhookBackoffMs: 50, webhookAttempts: 4 });
});
after(async () => h.close());

describe('outbox dispatcher', () => {
  test('puts submitted jobs on BullMQ with jobId = job.id, and a worker receives them', async () => {
    const job = await submit(pretrain('fmnist'));
    await dispatcher.dispatchOnce();
    const queued = await h.deps.queues.train.getJob(job.id);
    assert.ok(queued, 'on the train queue');
    assert.equal(queued!.id, job.id);
    assert.deepEqual(queued!.data, { jobId: job.id, tenantId: h.tenantA, type: 'pretrain' });
    const pending = await h.database.sql`select count(*)::int as n from outbox where payload->>'jobId' = ${job.id}`;
    assert.equal(pending[0]!.n, 0);

    const connection = new Redis(h.config.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
    const seen: string[] = [];
    const worker = new Worker(QUEUES.train, async (j) => void seen.push(j.id!), { connection, prefix: h.config.QUEUE_PREFIX });
    await until('the worker to take the job', async () => seen.includes(job.id));
    await worker.close();
    connection.disconnect();
  });

  test('a job canceled before dispatch never reaches the queue', async () => {
    const job = await submit(pretrain('fmnist'));
    assert.equal((await h.request('POST', `/v1/jobs/${job.id}/cancel`)).status, 200);
    await dispatcher.dispatchOnce();
    assert.equal(await h.deps.queues.train.getJob(job.id), undefined);
  });

  test('a retried job is enqueued again although BullMQ still holds its finished first attempt', async () => {
    const job = await submit(pretrain('fmnist'));
    await dispatcher.dispatchOnce();
    // A real worker takes the job and fails it: BullMQ keeps the failed copy under the same id.
    const connection = new Redis(h.config.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
    const worker = new Worker(QUEUES.train, async (j) => {
      if (j.id === job.id) throw new Error('first attempt failed');
    }, { connection, prefix: h.config.QUEUE_PREFIX });
    try {
      await until('the first attempt failed in BullMQ', async () => (await (await h.deps.queues.train.getJob(job.id))?.getState()) === 'failed');
    } finally {
      await worker.close();
      connection.disconnect();
    }
    // What the runner leaves behind a failed first attempt.
    await h.database.sql`update jobs set state = 'failed', attempt = 1 where id = ${job.id}`;
    assert.equal((await h.request('POST', `/v1/jobs/${job.id}/retry`)).status, 200);
    await dispatcher.dispatchOnce();
    const again = await h.deps.queues.train.getJob(job.id);
    assert.ok(again);
    assert.ok(['waiting', 'prioritized'].includes(await again!.getState()), await again!.getState());
    assert.ok(!again!.failedReason, 'a fresh copy, not the failed one');
    const [outbox] = await h.database.sql`select count(*)::int as n from outbox where payload->>'jobId' = ${job.id}`;
    assert.equal(outbox!.n, 0, 'the retry\'s enqueue row is done');
  });

  test('several dispatchers at once (replicas) dispatch every row exactly once', async () => {
    const ids = [];
    // With a webhook that wants job.queued, each submission writes both kinds of row (enqueue, event).
    const webhook = { url: 'http://127.0.0.1:9/hook', events: ['job.queued'] };
    for (let i = 0; i < 30; i++) ids.push((await submit(pretrain('fmnist', { webhook }))).id);
    assert.equal((await h.database.sql`select id from outbox where payload->>'jobId' = any(${ids})`).length, 60);
    // What the replicas hand on, counted where they hand it: each enqueue and each delivery exactly once.
    const handedOn = new Map<string, number>();
    const count = (id: string) => handedOn.set(id, (handedOn.get(id) ?? 0) + 1);
    const { train, webhooks } = h.deps.queues;
    const [addBulk, add] = [train.addBulk, webhooks.add];
    train.addBulk = (jobs) => (jobs.forEach((j) => count(`train:${j.opts!.jobId}`)), addBulk.call(train, jobs));
    webhooks.add = (name, data, opts) => (count(`delivery:${opts!.jobId}`), add.call(webhooks, name, data, opts));
    try {
      const replicas = [0, 1, 2].map(() => new OutboxDispatcher({ sql: h.database.sql, queues: h.deps.queues, logger, batchSize: 7 }));
      await Promise.all(replicas.map(async (d) => { while ((await d.dispatchOnce()) > 0); }));
    } finally {
      [train.addBulk, webhooks.add] = [addBulk, add];
    }
    assert.equal((await h.database.sql`select id from outbox where payload->>'jobId' = any(${ids})`).length, 0, 'every row dispatched and gone');
    assert.equal(handedOn.size, 60, 'an enqueue and a delivery per job');
    assert.ok([...handedOn.values()].every((n) => n === 1), `each row handed on by exactly one dispatcher: ${JSON.stringify([...handedOn])}`);
    for (const id of ids) assert.ok(await h.deps.queues.train.getJob(id), id);
  });

  test('a pass whose commit was lost (it commits asynchronously) is dispatched again without a second queue job or delivery', async () => {
    const webhook = { url: 'http://127.0.0.1:9/hook', events: ['job.queued'] };
    const job = await submit(pretrain('fmnist', { webhook }));
    const rows = await h.database.sql`select id, topic, payload, created_at from outbox where payload->>'jobId' = ${job.id}`;
    assert.equal(rows.length, 2, 'enqueue and job.queued');
    while ((await dispatcher.dispatchOnce()) > 0);
    const first = await h.deps.queues.train.getJob(job.id);
    assert.ok(first);
    const trainCounts = await h.deps.queues.train.getJobCounts();
    const webhookCounts = await h.deps.queues.webhooks.getJobCounts();
    // What a crash right after the pass's asynchronous commit can leave: its deletes, and the delivery row, lost.
    await h.database.sql`delete from webhook_deliveries where job_id = ${job.id}`;
    for (const r of rows) await h.database.sql`insert into outbox (id, topic, payload, created_at) values (${r.id}, ${r.topic}, ${JSON.stringify(r.payload)}::jsonb, ${r.created_at})`;
    while ((await dispatcher.dispatchOnce()) > 0);
    assert.deepEqual(await h.deps.queues.train.getJobCounts(), trainCounts, 'no second train job');
    assert.equal((await h.deps.queues.train.getJob(job.id))!.timestamp, first!.timestamp, 'the same BullMQ job');
    assert.deepEqual(await h.deps.queues.webhooks.getJobCounts(), webhookCounts, 'no second delivery job');
    const deliveries = await h.database.sql`select id from webhook_deliveries where job_id = ${job.id}`;
    assert.equal(deliveries.length, 1, 'one delivery row, under the id derived from the outbox row');
    assert.ok(await h.deps.queues.webhooks.getJob(deliveries[0]!.id as string));
  });

  test('a row whose jobId is not a UUID does not stop the pass: it and the rows beside it are dispatched', async () => {
    const [odd] = (await h.database.sql`
      insert into outbox (topic, payload) values ('job.event', ${JSON.stringify({ jobId: '------------------------------------', event: 'job.queued', at: new Date().toISOString() })}::jsonb)
      returning id`) as unknown as { id: number }[];
    const job = await submit(pretrain('fmnist'));
    while ((await dispatcher.dispatchOnce()) > 0);
    const rows = await h.database.sql`select id from outbox where id = ${odd!.id} or payload->>'jobId' = ${job.id}`;
    assert.equal(rows.length, 0, 'both dispatched and gone');
    assert.ok(await h.deps.queues.train.getJob(job.id));
  });

  test('the running dispatcher is woken by a submission (no poll wait)', async () => {
    const live = new OutboxDispatcher({ sql: h.database.sql, queues: h.deps.queues, logger, pollMs: 60_000 });
    h.deps.onOutboxWritten = () => live.wake();
    live.start();
    try {
      const job = await submit(pretrain('fmnist'));
      await until('the job on the queue', async () => h.deps.queues.train.getJob(job.id), 5000);
    } finally {
      h.deps.onOutboxWritten = undefined;
      await live.stop();
    }
  });
});

describe('reconciler', () => {
  test('re-enqueues a queued job whose BullMQ job vanished (Redis flushed)', async () => {
    const job = await submit(pretrain('fmnist'));
    await dispatcher.dispatchOnce();
    await (await h.deps.queues.train.getJob(job.id))!.remove();
    assert.equal(await h.deps.queues.train.getJob(job.id), undefined);
    const reconciler = new Reconciler({ sql: h.database.sql, db: h.database.db, queues: h.deps.queues, logger, graceMs: 0 });
    const { reenqueued } = await reconciler.reconcileOnce();
    assert.ok(reenqueued.includes(job.id));
    const back = await h.deps.queues.train.getJob(job.id);
    assert.equal(back?.id, job.id);
    assert.deepEqual((await reconciler.reconcileOnce()).reenqueued, [], 'nothing to do the second time');
  });

  test('leaves alone jobs still waiting in the outbox, finished jobs and recent changes', async () => {
    const job = await submit(pretrain('fmnist')); // not dispatched yet
    const reconciler = new Reconciler({ sql: h.database.sql, db: h.database.db, queues: h.deps.queues, logger, graceMs: 0 });
    assert.ok(!(await reconciler.reconcileOnce()).reenqueued.includes(job.id));
    const patient = new Reconciler({ sql: h.database.sql, db: h.database.db, queues: h.deps.queues, logger, graceMs: 60_000 });
    await dispatcher.dispatchOnce();
    await (await h.deps.queues.train.getJob(job.id))!.remove();
    assert.ok(!(await patient.reconcileOnce()).reenqueued.includes(job.id), 'within the grace period');
  });
});

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

async function receiver(answer: (n: number) => number) {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.writeHead(answer(received.length)).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  return { url, received, close: () => new Promise((r) => server.close(r)) };
}

describe('webhooks', () => {
  test('deliveries are signed (Standard Webhooks) with the tenant secret, filtered by event, and recorded', async () => {
    const rx = await receiver(() => 204);
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'test-webhook-signing-root-key', allowPrivate: true });
    try {
      const job = await submit(pretrain('fmnist', { webhook: { url: rx.url, events: ['job.running', 'job.succeeded'] } }));
      await transitionJob(h.database.db, job.id, { from: ['queued'], to: 'running' });
      await transitionJob(h.database.db, job.id, { from: ['running'], to: 'succeeded', reason: 'done' });
      await dispatcher.dispatchOnce();
      await until('two deliveries', async () => rx.received.length >= 2);
      const { secret } = (await (await h.request('GET', '/v1/webhooks/secret')).json()) as any;
      assert.match(secret, /^whsec_/);
      const types = [];
      for (const r of rx.received) {
        // Checked against the specification's own computation (test/support/standardWebhooks.ts), not the project's sign().
        const [id, timestamp, signature] = [String(r.headers['webhook-id']), String(r.headers['webhook-timestamp']), String(r.headers['webhook-signature'])];
        assert.ok(carriesSignature(signature, specSignature(secret, id, timestamp, r.body)), 'signature verifies');
        assert.ok(!carriesSignature(signature, specSignature(secret, id, timestamp, r.body + ' ')), 'a changed body does not');
        const payload = JSON.parse(r.body);
        assert.equal(payload.data.jobId, job.id);
        types.push(payload.type);
      }
      assert.deepEqual(types.sort(), ['job.running', 'job.succeeded'], 'job.queued was filtered out');
      const { secret: otherSecret } = (await (await h.request('GET', '/v1/webhooks/secret', { key: h.keys.adminB })).json()) as any;
      assert.notEqual(otherSecret, secret, 'each tenant has its own secret');
      const deliveries = (await (await h.request('GET', `/v1/jobs/${job.id}/webhook-deliveries`)).json()) as any;
      await until('deliveries recorded', async () => {
        const d = (await (await h.request('GET', `/v1/jobs/${job.id}/webhook-deliveries`)).json()) as any;
        return d.deliveries.length === 2 && d.deliveries.every((x: any) => x.status === 'delivered' && x.responseStatus === 204);
      });
      assert.ok(deliveries.deliveries.length <= 2);
    } finally {
      await worker.close();
      await rx.close();
    }
  });

  test('a failing receiver is retried with backoff until it accepts; attempts are recorded', async () => {
    const rx = await receiver((n) => (n <= 2 ? 500 : 200));
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'test-webhook-signing-root-key', allowPrivate: true });
    try {
      const job = await submit(pretrain('fmnist', { webhook: { url: rx.url, events: ['job.queued'] } }));
      await dispatcher.dispatchOnce();
      const row = await until('the delivery to succeed', async () => {
        const [d] = await h.database.sql`select status, attempts, response_status from webhook_deliveries where job_id = ${job.id}`;
        return d?.status === 'delivered' ? d : undefined;
      });
      assert.equal(row.attempts, 3);
      assert.equal(row.response_status, 200);
      assert.equal(rx.received.length, 3);
      const ids = new Set(rx.received.map((r) => r.headers['webhook-id']));
      assert.equal(ids.size, 1, 'retries carry the same webhook-id, so receivers can de-duplicate');
    } finally {
      await worker.close();
      await rx.close();
    }
  });

  test('a receiver that never accepts ends `failed` after the last attempt', async () => {
    const rx = await receiver(() => 503);
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: true });
    try {
      const job = await submit(pretrain('fmnist', { webhook: { url: rx.url, events: ['job.queued'] } }));
      await dispatcher.dispatchOnce();
      const row = await until('the delivery to fail', async () => {
        const [d] = await h.database.sql`select status, attempts, last_error from webhook_deliveries where job_id = ${job.id}`;
        return d?.status === 'failed' ? d : undefined;
      });
      assert.equal(row.attempts, 4);
      assert.match(row.last_error, /503/);
    } finally {
      await worker.close();
      await rx.close();
    }
  });

  test('requeued, failed, canceled and checkpoint.created are delivered to the jobs that subscribed', async () => {
    const rx = await receiver(() => 204);
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: true });
    try {
      const events = ['job.requeued', 'job.failed', 'job.canceled', 'checkpoint.created'];
      const ran = await submit(pretrain('fmnist', { webhook: { url: rx.url, events } }));
      const canceled = await submit(pretrain('fmnist', { webhook: { url: rx.url, events } }));
      // What a runner does: attempt 1 preempted, attempt 2 writes a checkpoint and fails for good.
      await transitionJob(h.database.db, ran.id, { from: ['queued'], to: 'running', patch: { attempt: 1 } });
      await transitionJob(h.database.db, ran.id, { from: ['running'], to: 'requeued', reason: 'runner shutting down' });
      await transitionJob(h.database.db, ran.id, { from: ['requeued'], to: 'running', patch: { attempt: 2 } });
      await registerCheckpoint(h.database.db, { jobId: ran.id, attempt: 2, version: 1, step: 8, s3Prefix: `checkpoints/${h.tenantA}/${ran.id}/v1/`, files: {}, bytes: 10, sha256: 'ab' });
      await transitionJob(h.database.db, ran.id, { from: ['running'], to: 'failed', reason: 'NaN loss' });
      assert.equal((await h.request('POST', `/v1/jobs/${canceled.id}/cancel`)).status, 200);
      while ((await dispatcher.dispatchOnce()) > 0);
      await until('four deliveries', async () => rx.received.length >= 4);
      const got = rx.received.map((r) => JSON.parse(r.body)).map((p) => [p.data.jobId, p.type] as const);
      assert.deepEqual(
        got.map(([id, type]) => `${id === ran.id ? 'ran' : 'canceled'} ${type}`).sort(),
        ['canceled job.canceled', 'ran checkpoint.created', 'ran job.failed', 'ran job.requeued'],
      );
      const checkpoint = rx.received.map((r) => JSON.parse(r.body)).find((p) => p.type === 'checkpoint.created');
      assert.deepEqual([checkpoint.data.version, checkpoint.data.step], [1, 8]);
      const failed = rx.received.map((r) => JSON.parse(r.body)).find((p) => p.type === 'job.failed');
      assert.equal(failed.data.reason, 'NaN loss');
    } finally {
      await worker.close();
      await rx.close();
    }
  });

  test('redirects are not followed: a 3xx is a failed attempt and the redirect target is never called', async () => {
    const elsewhere = await receiver(() => 200);
    const rx = await new Promise<{ url: string; hits: number[]; close(): Promise<unknown> }>((resolve) => {
      const hits: number[] = [];
      const server = http.createServer((req, res) => {
        hits.push(Date.now());
        req.resume();
        res.writeHead(302, { location: elsewhere.url }).end();
      });
      server.listen(0, '127.0.0.1', () =>
        resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits, close: () => new Promise((r) => server.close(r)) }),
      );
    });
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: true });
    try {
      const job = await submit(pretrain('fmnist', { webhook: { url: rx.url, events: ['job.queued'] } }));
      await dispatcher.dispatchOnce();
      const row = await until('the delivery to fail', async () => {
        const [d] = await h.database.sql`select status, attempts, response_status, last_error from webhook_deliveries where job_id = ${job.id}`;
        return d?.status === 'failed' ? d : undefined;
      });
      assert.equal(row.response_status, 302);
      assert.match(row.last_error, /302/);
      assert.equal(rx.hits.length, row.attempts, 'each attempt reached the receiver once');
      assert.equal(elsewhere.received.length, 0, 'the Location was never requested');
    } finally {
      await worker.close();
      await rx.close();
      await elsewhere.close();
    }
  });

  test('a receiver that does not answer within the timeout is a failed attempt, retried, then failed', async () => {
    const held: http.ServerResponse[] = [];
    const server = http.createServer((req, res) => {
      req.resume();
      held.push(res); // never answered
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: true, timeoutMs: 300 });
    try {
      const job = await submit(pretrain('fmnist', { webhook: { url, events: ['job.queued'] } }));
      await dispatcher.dispatchOnce();
      const row = await until('the delivery to fail', async () => {
        const [d] = await h.database.sql`select status, attempts, response_status, last_error from webhook_deliveries where job_id = ${job.id}`;
        return d?.status === 'failed' ? d : undefined;
      }, 60_000);
      assert.equal(row.attempts, 4, 'every attempt timed out');
      assert.equal(row.response_status, null);
      assert.match(row.last_error, /no answer within 300 ms/);
      assert.equal(held.length, 4);
    } finally {
      await worker.close();
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  test('the default retry schedule: 8 attempts, exponential from 2 s with 50 % jitter', async () => {
    const id = randomUUID();
    await enqueueDelivery(h.deps.queues.webhooks, id);
    const queued = await h.deps.queues.webhooks.getJob(id);
    assert.equal(queued!.opts.attempts, 8);
    assert.deepEqual(queued!.opts.backoff, { type: 'exponential', delay: 2000, jitter: 0.5 });
    await queued!.remove();
  });

  test('private, loopback and link-local targets are refused at submission and at delivery unless allowed', async () => {
    const strict = await createHarness({ WEBHOOK_ALLOW_PRIVATE: false });
    try {
      await seedReadyDataset(strict, strict.tenantA, 'fmnist', 1);
      for (const url of ['http://127.0.0.1:9/hook', 'http://localhost/hook', 'http://10.1.2.3/', 'http://169.254.169.254/latest/meta-data', 'http://[::1]/', 'http://192.168.0.10/', 'http://[::ffff:127.0.0.1]/']) {
        const res = await strict.request('POST', '/v1/jobs', { body: pretrain('fmnist', { webhook: { url } }) });
        assert.equal(res.status, 400, url);
        const body = (await res.json()) as any;
        assert.equal(body.error.details[0].path, 'webhook.url', url);
      }
      // A target that passed submission (allowed then) is still refused by the delivery's own lookup.
      const rx = await receiver(() => 200);
      const job = await submit(pretrain('fmnist', { webhook: { url: rx.url, events: ['job.queued'] } }));
      const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: false });
      try {
        await dispatcher.dispatchOnce();
        const row = await until('the delivery to be refused', async () => {
          const [d] = await h.database.sql`select status, last_error from webhook_deliveries where job_id = ${job.id}`;
          return d?.status === 'failed' ? d : undefined;
        });
        assert.match(row.last_error, /private/);
        assert.equal(rx.received.length, 0, 'nothing reached the private address');
      } finally {
        await worker.close();
        await rx.close();
      }
    } finally {
      await strict.close();
    }
  });
});
