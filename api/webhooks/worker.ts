/**
 * The webhook delivery worker: takes `webhooks` queue jobs, POSTs the delivery's JSON to its URL
 * signed the Standard Webhooks way, and records every attempt. A non-2xx answer, a timeout or a
 * refused target throws, so BullMQ retries with exponential backoff; the last failure marks the
 * delivery `failed`. Redirects are not followed (a redirect could lead to a private address).
 */
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../../common/logger.js';
import type { Sql } from '../../db/client.js';
import { QUEUES, type WebhookPayload } from '../../contracts/queues.js';
import { isPrivateAddress, publicOnlyLookup } from './targets.js';
import { sign } from './signing.js';
import { signingSecrets } from '../../db/webhookSecrets.js';

export interface WebhookWorkerOptions {
  sql: Sql;
  /** BullMQ duplicates it for its blocking connection. */
  connection: Redis;
  prefix: string;
  logger: Logger;
  signingKey: string;
  allowPrivate: boolean;
  concurrency?: number;
  /** Idle socket timeout. */
  timeoutMs?: number;
  /** Whole delivery, connect to last byte: a receiver trickling bytes cannot hold a slot longer. Default 15 s. */
  deadlineMs?: number;
  /** Response bytes read at most; the rest is cut off (the body is not needed). Default 64 KiB. */
  maxResponseBytes?: number;
  /** Deliveries of one tenant in flight at once in this worker; more wait (without spending an attempt). Default 2. */
  perTenantConcurrency?: number;
}

interface PostResult {
  status: number;
}

interface PostLimits {
  timeoutMs: number;
  deadlineMs: number;
  maxResponseBytes: number;
}

function post(url: string, body: string, headers: Record<string, string>, allowPrivate: boolean, limits: PostLimits): Promise<PostResult> {
  const { timeoutMs } = limits;
  const target = new URL(url);
  // Sockets skip `lookup` for a literal address, so judge one here.
  const literal = target.hostname.replace(/^\[|\]$/g, '');
  if (!allowPrivate && isIP(literal) && isPrivateAddress(literal)) {
    return Promise.reject(Object.assign(new Error('webhook target is a private address'), { code: 'EPRIVATE' }));
  }
  const request = target.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request(
      target,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'momentum-webhooks/1', ...headers },
        lookup: publicOnlyLookup(allowPrivate),
        timeout: timeoutMs,
      },
      (res) => {
        // The body is not needed: read up to the cap (so the socket is freed), then stop.
        let seen = 0;
        res.on('data', (chunk: Buffer) => {
          seen += chunk.length;
          if (seen > limits.maxResponseBytes) {
            clearTimeout(deadline);
            resolve({ status: res.statusCode ?? 0 });
            req.destroy();
          }
        });
        res.on('end', () => {
          clearTimeout(deadline);
          resolve({ status: res.statusCode ?? 0 });
        });
        res.on('error', reject);
      },
    );
    const deadline = setTimeout(() => req.destroy(new Error(`delivery took longer than ${limits.deadlineMs} ms`)), limits.deadlineMs);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => {
      clearTimeout(deadline);
      reject(err);
    });
    req.end(body);
  });
}

/** How soon a delivery held back behind an earlier one of its job looks again. */
const ORDER_WAIT_MS = 100;

export function createWebhookWorker(o: WebhookWorkerOptions): Worker<WebhookPayload> {
  const limits: PostLimits = { timeoutMs: o.timeoutMs ?? 10_000, deadlineMs: o.deadlineMs ?? 15_000, maxResponseBytes: o.maxResponseBytes ?? 64 * 1024 };
  const perTenant = o.perTenantConcurrency ?? 2;
  /** Deliveries in flight per tenant: one tenant's slow receivers cannot take every slot. */
  const inFlight = new Map<string, number>();

  async function deliver(job: Job<WebhookPayload>, token?: string): Promise<void> {
    const { deliveryId } = job.data;
    const [d] = await o.sql<{ id: string; url: string; payload: unknown; status: string; tenant_id: string; job_id: string; earlier_unfinished: boolean }[]>`
      select d.id, d.url, d.payload, d.status, j.tenant_id, d.job_id,
        exists (select 1 from webhook_deliveries e
                where e.job_id = d.job_id and e.seq < d.seq and e.status in ('pending','retrying')) as earlier_unfinished
      from webhook_deliveries d join jobs j on j.id = d.job_id where d.id = ${deliveryId}`;
    if (!d) {
      // The dispatcher adds the queue job just before its transaction commits: not visible yet.
      // Look again shortly without spending one of the delivery's attempts; after a minute the
      // transaction must have rolled back, and there is nothing to deliver.
      if (Date.now() - job.timestamp < 60_000 && token) {
        await job.moveToDelayed(Date.now() + 200, token);
        throw new DelayedError();
      }
      o.logger.warn({ deliveryId }, 'webhook delivery row never appeared; dropping');
      return;
    }
    if (d.status === 'delivered') return;
    // In order per job: a checkpoint.created goes out before the job.succeeded that followed it.
    // Wait (without spending an attempt) while an earlier delivery of this job is still unfinished.
    if (d.earlier_unfinished && token) {
      await job.moveToDelayed(Date.now() + ORDER_WAIT_MS, token);
      throw new DelayedError();
    }
    if ((inFlight.get(d.tenant_id) ?? 0) >= perTenant && token) {
      await job.moveToDelayed(Date.now() + 250 + Math.floor(Math.random() * 500), token);
      throw new DelayedError();
    }
    inFlight.set(d.tenant_id, (inFlight.get(d.tenant_id) ?? 0) + 1);
    try {
      await attempt(job, d);
    } finally {
      const left = (inFlight.get(d.tenant_id) ?? 1) - 1;
      if (left > 0) inFlight.set(d.tenant_id, left);
      else inFlight.delete(d.tenant_id);
    }
  }

  async function attempt(job: Job<WebhookPayload>, d: { id: string; url: string; payload: unknown; tenant_id: string; job_id: string }): Promise<void> {
    const body = JSON.stringify(d.payload);
    const timestamp = Math.floor(Date.now() / 1000);
    // During a rotation both the new and the old secret sign (Standard Webhooks: space-separated).
    const secrets = await signingSecrets(o.sql, o.signingKey, d.tenant_id, d.url);
    const signature = secrets.map((s) => sign(s.secret, d.id, timestamp, body)).join(' ');
    const headers = { 'webhook-id': d.id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature };
    const last = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    let status: number | null = null;
    let error: string | null = null;
    let retryable = true;
    try {
      status = (await post(d.url, body, headers, o.allowPrivate, limits)).status;
      if (status < 200 || status >= 300) error = `receiver answered ${status}`;
    } catch (err) {
      error = (err as Error).message || String(err);
      // A refused (private) target stays refused: no point retrying.
      retryable = (err as { code?: string }).code !== 'EPRIVATE';
    }
    const outcome = error === null ? 'delivered' : last || !retryable ? 'failed' : 'retrying';
    await o.sql`
      update webhook_deliveries
      set attempts = attempts + 1, status = ${outcome}, response_status = ${status}, last_error = ${error},
          delivered_at = case when ${outcome} = 'delivered' then now() end
      where id = ${d.id}`;
    if (error !== null) {
      o.logger.warn({ deliveryId: d.id, jobId: d.job_id, attempt: job.attemptsMade + 1, error }, 'webhook delivery failed');
      throw retryable ? new Error(error) : new UnrecoverableError(error);
    }
  }

  const worker = new Worker<WebhookPayload>(QUEUES.webhooks, deliver, {
    connection: o.connection,
    prefix: o.prefix,
    concurrency: o.concurrency ?? 8,
  });
  worker.on('error', (err) => o.logger.error({ err }, 'webhook worker error'));
  return worker;
}
