/**
 * Webhook deliveries cannot be held or turned against the inside: a total deadline per delivery, a
 * response cap, deliveries of one tenant limited in flight, an SSRF guard covering the IPv6
 * transition ranges and non-web ports without echoing what a name resolved to, and no start with
 * the public development signing key beyond loopback.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { OutboxDispatcher } from '../../../api/dispatcher.js';
import { createWebhookWorker } from '../../../api/webhooks/worker.js';
import { refuseWebhookTarget } from '../../../api/webhooks/targets.js';
import { DEV_WEBHOOK_SIGNING_KEY, refuseDevSigningKey } from '../../../common/config.js';
import { createLogger } from '../../../common/logger.js';

const logger = createLogger('silent');
let h: Harness;
let dispatcher: OutboxDispatcher;

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function server(handler: http.RequestListener) {
  const s = http.createServer(handler);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}/hook`, close: () => (s.closeAllConnections(), new Promise((r) => s.close(r))) };
}

async function submitWithHook(url: string): Promise<string> {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist', { webhook: { url, events: ['job.queued'] } }) });
  assert.equal(res.status, 201);
  return ((await res.json()) as { id: string }).id;
}

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  dispatcher = new OutboxDispatcher({ sql: h.database.sql, queues: h.deps.queues, logger, webhookBackoffMs: 50, webhookAttempts: 1 });
});
after(async () => h.close());

describe('SSRF guard', () => {
  test('IPv4-compatible, NAT64, 6to4 and Teredo addresses are refused, and the message echoes no address', async () => {
    for (const url of ['http://[::a00:1]/', 'http://[64:ff9b::a00:1]/', 'http://[64:ff9b:1::a00:1]/', 'http://[2002:a00:1::1]/', 'http://[2001:0:a00:1::1]/']) {
      const why = await refuseWebhookTarget(url, false);
      assert.ok(why, url);
      assert.doesNotMatch(why!, /a00|10\.0\.0\.1|::/, `no address in "${why}"`);
    }
  });

  test('only web ports: 6379 on a public address is refused, 443 and 8443 are not', async () => {
    assert.match((await refuseWebhookTarget('http://93.184.216.34:6379/', false)) ?? '', /port 6379 is not allowed/);
    assert.equal(await refuseWebhookTarget('https://93.184.216.34/', false), undefined);
    assert.equal(await refuseWebhookTarget('https://93.184.216.34:8443/', false), undefined);
  });

  test('the public development signing key is refused beyond loopback', () => {
    assert.match(refuseDevSigningKey({ WEBHOOK_SIGNING_KEY: DEV_WEBHOOK_SIGNING_KEY, API_HOST: '0.0.0.0' }) ?? '', /development default/);
    assert.equal(refuseDevSigningKey({ WEBHOOK_SIGNING_KEY: DEV_WEBHOOK_SIGNING_KEY, API_HOST: '127.0.0.1' }), null);
    assert.equal(refuseDevSigningKey({ WEBHOOK_SIGNING_KEY: 'x'.repeat(32), API_HOST: '0.0.0.0' }), null);
  });
});

describe('delivery limits', () => {
  test('a receiver trickling one byte at a time is cut at the total deadline', async () => {
    const rx = await server((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' });
      const t = setInterval(() => res.write('x'), 100); // always within the idle timeout
      res.on('close', () => clearInterval(t));
    });
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: true, deadlineMs: 800, timeoutMs: 5000 });
    try {
      const jobId = await submitWithHook(rx.url);
      await dispatcher.dispatchOnce();
      const row = await until('the delivery to fail', async () => {
        const [d] = await h.database.sql`select status, last_error from webhook_deliveries where job_id = ${jobId}`;
        return d?.status === 'failed' ? d : undefined;
      });
      assert.match(row.last_error, /longer than 800 ms/);
    } finally {
      await worker.close();
      await rx.close();
    }
  });

  test('a huge response is cut at the cap and the delivery still counts', async () => {
    let sent = 0;
    const rx = await server((req, res) => {
      req.resume();
      res.writeHead(200);
      const chunk = Buffer.alloc(64 * 1024, 120);
      const pump = () => {
        while (sent < 512 * 1024 * 1024 && res.write(chunk)) sent += chunk.length;
      };
      res.on('drain', pump);
      pump();
    });
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: true, maxResponseBytes: 16 * 1024 });
    try {
      const jobId = await submitWithHook(rx.url);
      await dispatcher.dispatchOnce();
      await until('delivered', async () => (await h.database.sql`select status from webhook_deliveries where job_id = ${jobId}`)[0]?.status === 'delivered');
      assert.ok(sent < 64 * 1024 * 1024, `the worker stopped reading (the receiver got ${sent} bytes out)`);
    } finally {
      await worker.close();
      await rx.close();
    }
  });

  test("one tenant's deliveries are limited in flight", async () => {
    let now = 0;
    let most = 0;
    const rx = await server((req, res) => {
      req.resume();
      most = Math.max(most, ++now);
      setTimeout(() => {
        now--;
        res.writeHead(204).end();
      }, 300);
    });
    const worker = createWebhookWorker({ sql: h.database.sql, connection: h.deps.redis, prefix: h.config.QUEUE_PREFIX, logger, signingKey: 'k'.repeat(20), allowPrivate: true, concurrency: 8, perTenantConcurrency: 1 });
    try {
      const ids = [await submitWithHook(rx.url), await submitWithHook(rx.url), await submitWithHook(rx.url)];
      await dispatcher.dispatchOnce();
      await until('three deliveries', async () => {
        const rows = await h.database.sql`select status from webhook_deliveries where job_id = any(${ids})`;
        return rows.length === 3 && rows.every((r) => r.status === 'delivered');
      });
      assert.equal(most, 1, 'never two of the tenant at once');
    } finally {
      await worker.close();
      await rx.close();
    }
  });
});
