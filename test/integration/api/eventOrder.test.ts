/**
 * Events reach webhook receivers and SSE listeners in the order of the changes they announce: the
 * final checkpoint.created before the job.succeeded that followed it, even when the receiver
 * refused the checkpoint's first delivery and the worker had both in hand at once.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { OutboxDispatcher } from '../../../api/dispatcher.js';
import { createWebhookWorker } from '../../../api/webhooks/worker.js';
import { transitionJob } from '../../../db/jobs.js';
import { registerCheckpoint } from '../../../db/runs.js';
import { createLogger } from '../../../common/logger.js';

let h: Harness;
const logger = createLogger('silent');
before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
});
after(async () => h.close());

async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A job that ran, wrote its final checkpoint, then succeeded: what a runner's transactions leave. */
async function finishedJobWithCheckpoint(webhookUrl: string) {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist', { webhook: { url: webhookUrl, events: ['checkpoint.created', 'job.succeeded'] } }) });
  const job = (await res.json()) as { id: string };
  const running = await transitionJob(h.database.db, job.id, { from: ['queued'], to: 'running', patch: { attempt: 1 } });
  await registerCheckpoint(h.database.db, { jobId: job.id, attempt: running!.attempt, version: 1, step: 100, s3Prefix: 'x/', files: {}, bytes: 0, sha256: 'none', reason: 'final' });
  await transitionJob(h.database.db, job.id, { from: ['running'], to: 'succeeded', reason: 'done' });
  return job.id;
}

test('webhooks: the final checkpoint.created is delivered before job.succeeded, though its first attempt was refused', async () => {
  const delivered: string[] = [];
  let refusedOnce = false;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const type = JSON.parse(body).type as string;
      if (type === 'checkpoint.created' && !refusedOnce) {
        refusedOnce = true;
        res.writeHead(503).end();
        return;
      }
      delivered.push(type);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: true, concurrency: 8 });
  try {
    await finishedJobWithCheckpoint(`http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`);
    const dispatcher = new OutboxDispatcher({ sql: h.database.sql, queues: h.deps.queues, logger, webhookBackoffMs: 300, webhookAttempts: 4 });
    await dispatcher.dispatchOnce();
    await until('both deliveries', () => delivered.length >= 2);
    assert.ok(refusedOnce, 'the first attempt was refused');
    assert.deepEqual(delivered, ['checkpoint.created', 'job.succeeded']);
  } finally {
    await worker.close();
    await new Promise((r) => server.close(r));
  }
});

test('SSE: the checkpoint event comes before the success it preceded', async () => {
  const jobId = await finishedJobWithCheckpoint('http://127.0.0.1:1/unused');
  const res = await h.request('GET', `/v1/jobs/${jobId}/events`, { headers: { accept: 'text/event-stream' } });
  const text = await res.text();
  const events = [...text.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]!) as { kind?: string; toState?: string | null }).filter((e) => e.kind);
  assert.deepEqual(events.map((e) => (e.kind === 'state' ? e.toState : e.kind)), ['queued', 'running', 'checkpoint', 'succeeded']);
});
