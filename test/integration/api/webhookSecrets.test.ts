/**
 * Rotatable webhook secrets, per endpoint or per tenant, and redelivery (issue 10), with a real
 * worker posting to real receivers. Signatures are checked with the specification's own recipe
 * (test/support/standardWebhooks.ts), not with the code under test.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Worker } from 'bullmq';
import { createHarness, pretrain, SIGNING_KEY, seedReadyDataset, type Harness } from './harness.js';
import { OutboxDispatcher } from '../../../api/dispatcher.js';
import { createWebhookWorker } from '../../../api/webhooks/worker.js';
import { createLogger } from '../../../common/logger.js';
import { carriesSignature, specSignature } from '../../support/standardWebhooks.js';

const logger = createLogger('silent');
let h: Harness;
let dispatcher: OutboxDispatcher;
let worker: Worker;

interface Received {
  id: string;
  timestamp: string;
  signature: string;
  body: string;
}

async function receiver() {
  const got: Received[] = [];
  const s = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      got.push({ id: String(req.headers['webhook-id']), timestamp: String(req.headers['webhook-timestamp']), signature: String(req.headers['webhook-signature']), body });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(s.address() as AddressInfo).port}/hook`;
  return { url, got, close: () => (s.closeAllConnections(), new Promise((r) => s.close(r))) };
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Submits a job whose job.queued event goes to `url`, and waits for that delivery to arrive. */
async function deliveryTo(rx: Awaited<ReturnType<typeof receiver>>, key = h.keys.admin): Promise<Received> {
  const before = rx.got.length;
  const res = await h.request('POST', '/v1/jobs', { key, body: pretrain('hooks', { webhook: { url: rx.url, events: ['job.queued'] } }) });
  assert.equal(res.status, 201, await res.clone().text());
  await dispatcher.dispatchOnce();
  return until('the delivery', () => rx.got.length > before && rx.got[rx.got.length - 1]);
}

const signs = (d: Received, secret: string) => carriesSignature(d.signature, specSignature(secret, d.id, d.timestamp, d.body));

async function secrets(url?: string, key = h.keys.admin) {
  const res = await h.request('GET', `/v1/webhooks/secret${url ? `?url=${encodeURIComponent(url)}` : ''}`, { key });
  assert.equal(res.status, 200);
  return (await res.json()) as { secret: string; previous: { secret: string; expiresAt: string }[]; endpoint: string | null };
}

async function rotate(body: Record<string, unknown>, key = h.keys.admin) {
  const res = await h.request('POST', '/v1/webhooks/secret/rotate', { key, body });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as { secret: string; previous: { secret: string; expiresAt: string }[]; endpoint: string | null };
}

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'hooks');
  await seedReadyDataset(h, h.tenantB, 'hooks');
  dispatcher = new OutboxDispatcher({ sql: h.database.sql, queues: h.deps.queues, logger, webhookBackoffMs: 50, webhookAttempts: 2 });
  worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: SIGNING_KEY, allowPrivate: true });
});
after(async () => {
  await worker.close();
  await h.close();
});

describe('webhook secrets', () => {
  test('rotating one endpoint: both signatures during the grace period, other endpoints untouched, then the new one only', async () => {
    const a = await receiver();
    const b = await receiver();
    try {
      const derived = (await secrets()).secret;
      assert.ok(signs(await deliveryTo(a), derived), 'before any rotation: the tenant secret');

      const rotated = await rotate({ url: a.url, graceSeconds: 3600 });
      assert.match(rotated.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
      assert.notEqual(rotated.secret, derived);
      assert.deepEqual(rotated.previous.map((p) => p.secret), [derived]);
      assert.equal(rotated.endpoint, a.url);
      assert.deepEqual(await secrets(a.url), rotated, 'what GET answers for that endpoint');

      const during = await deliveryTo(a);
      assert.equal(during.signature.split(' ').length, 2);
      assert.ok(signs(during, rotated.secret), 'the new secret signs');
      assert.ok(signs(during, derived), 'the old secret still signs during the grace period');
      const other = await deliveryTo(b);
      assert.equal(other.signature.split(' ').length, 1);
      assert.ok(signs(other, derived), 'another endpoint keeps the tenant secret');

      const again = await rotate({ url: a.url, graceSeconds: 0 });
      assert.deepEqual(again.previous, [], 'no grace: the old secret stopped at once');
      const afterwards = await deliveryTo(a);
      assert.ok(signs(afterwards, again.secret));
      assert.ok(!signs(afterwards, rotated.secret) && !signs(afterwards, derived), 'rotated-away secrets sign nothing');
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("rotating the tenant default moves every endpoint without its own secret; another tenant's is untouched", async () => {
    const c = await receiver();
    try {
      const derivedA = (await secrets()).secret;
      const derivedB = (await secrets(undefined, h.keys.adminB)).secret;
      const rotated = await rotate({ graceSeconds: 600 });
      assert.equal(rotated.endpoint, null);
      assert.deepEqual(rotated.previous.map((p) => p.secret), [derivedA]);
      const d = await deliveryTo(c);
      assert.ok(signs(d, rotated.secret) && signs(d, derivedA));
      assert.equal((await secrets(undefined, h.keys.adminB)).secret, derivedB);
      const fromB = await deliveryTo(c, h.keys.adminB);
      assert.ok(signs(fromB, derivedB) && !signs(fromB, rotated.secret));
    } finally {
      await c.close();
    }
  });
});

describe('redelivery', () => {
  test('a delivered delivery is sent again with its webhook-id; unknown, foreign and in-flight ones are refused', async () => {
    const rx = await receiver();
    try {
      const first = await deliveryTo(rx);
      const [row] = await h.database.sql<{ job_id: string }[]>`select job_id from webhook_deliveries where id = ${first.id}`;
      const path = `/v1/jobs/${row!.job_id}/webhook-deliveries/${first.id}/redeliver`;
      await until('delivered', async () => (await h.database.sql`select status from webhook_deliveries where id = ${first.id}`)[0]?.status === 'delivered');

      assert.equal((await h.request('POST', path, { key: h.keys.adminB })).status, 404, "another tenant's delivery");
      assert.equal((await h.request('POST', `/v1/jobs/${row!.job_id}/webhook-deliveries/00000000-0000-4000-8000-000000000000/redeliver`)).status, 404);
      assert.equal((await h.request('POST', path, { key: h.keys.readOnly })).status, 403);

      const count = rx.got.length;
      const res = await h.request('POST', path);
      assert.equal(res.status, 202, await res.clone().text());
      assert.deepEqual(await res.json(), { id: first.id, status: 'pending', attempts: 0 });
      // Pending again: a second redelivery now would send it twice.
      const busy = await h.request('POST', path);
      if (busy.status !== 202) {
        assert.equal(busy.status, 409);
        assert.equal(((await busy.json()) as any).error.code, 'delivery_in_progress');
      }
      const resent = await until('the redelivery', () => rx.got.length > count && rx.got[count]);
      assert.equal(resent.id, first.id, 'the same webhook-id: receivers de-duplicate on it');
      assert.equal(resent.body, first.body);
      assert.ok(signs(resent, (await secrets(rx.url)).secret), 'signed afresh');
      await until('delivered again', async () => (await h.database.sql`select status, attempts from webhook_deliveries where id = ${first.id}`)[0]?.status === 'delivered');
    } finally {
      await rx.close();
    }
  });

  test('while a delivery is pending, redelivery is refused with 409', async () => {
    const [job] = await h.database.sql<{ id: string }[]>`select id from jobs where tenant_id = ${h.tenantA} limit 1`;
    const [d] = await h.database.sql<{ id: string }[]>`
      insert into webhook_deliveries (job_id, event, url, payload, status) values (${job!.id}, 'job.queued', 'http://127.0.0.1:9/x', '{}'::jsonb, 'retrying') returning id`;
    const res = await h.request('POST', `/v1/jobs/${job!.id}/webhook-deliveries/${d!.id}/redeliver`);
    assert.equal(res.status, 409);
    assert.equal(((await res.json()) as any).error.details[0].path, 'deliveryId');
  });
});
