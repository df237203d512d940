/**
 * Webhook signing secrets, for receivers to verify deliveries, and their rotation; redelivery of a
 * delivery. A secret is per endpoint (the exact webhook URL) once rotated for it, else the tenant's
 * default (rotated without `url`), else derived from the deployment's root (db/webhookSecrets.ts).
 */
import { createRoute, z } from '@hono/zod-openapi';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps } from '../deps.js';
import { conflict, notFound } from '../errors.js';
import { commonErrors, conflictError, json, jsonBody, notFoundError, router, security } from '../openapi.js';
import { rotateWebhookSecret, signingSecrets, type SigningSecret } from '../../db/webhookSecrets.js';
import { webhookSpec } from '../../contracts/jobSpec.js';
import { withRedisDeadline } from '../../common/redis.js';
import { enqueueDelivery } from '../dispatcher.js';
import { loadJob } from './jobs.js';

const endpointUrl = webhookSpec.shape.url;

const SecretsSchema = z
  .object({
    /** The current secret: verify with it (and with `previous` while they last). */
    secret: z.string(),
    /** Secrets rotated away that still sign deliveries until `expiresAt`. */
    previous: z.array(z.object({ secret: z.string(), expiresAt: z.string() })),
    /** The webhook URL these secrets are for; null: the tenant's default. */
    endpoint: z.string().nullable(),
    scheme: z.literal('standard-webhooks-v1'),
    headers: z.array(z.string()),
  })
  .openapi('WebhookSecrets');

const secretRoute = createRoute({
  method: 'get',
  path: '/webhooks/secret',
  operationId: 'getWebhookSecret',
  tags: ['webhooks'],
  summary: 'The secrets that sign webhook deliveries to this tenant, or to one endpoint (`?url=`) (Standard Webhooks, whsec_…)',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { query: z.object({ url: endpointUrl.optional().openapi({ description: 'A webhook URL: its own secrets, or the default ones it is signed with' }) }) },
  responses: { 200: json(SecretsSchema), ...commonErrors },
});

const rotateRoute = createRoute({
  method: 'post',
  path: '/webhooks/secret/rotate',
  operationId: 'rotateWebhookSecret',
  tags: ['webhooks'],
  summary: 'A new random secret for one endpoint (`url`) or the tenant default; the old one keeps signing (both signatures sent) for `graceSeconds`',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: {
    body: jsonBody(
      z.strictObject({
        url: endpointUrl.optional(),
        /** How long the secret in use keeps signing too (default one day; 0 = stop at once). */
        graceSeconds: z.number().int().min(0).max(7 * 24 * 3600).default(24 * 3600),
      }),
    ),
  },
  responses: { 200: json(SecretsSchema), ...commonErrors },
});

const DeliveryParams = z.object({
  id: z.string().uuid().openapi({ param: { name: 'id', in: 'path' } }),
  deliveryId: z.string().uuid().openapi({ param: { name: 'deliveryId', in: 'path' } }),
});

const redeliverRoute = createRoute({
  method: 'post',
  path: '/jobs/{id}/webhook-deliveries/{deliveryId}/redeliver',
  operationId: 'redeliverWebhook',
  tags: ['webhooks'],
  summary: 'Send a delivery again (same webhook-id, signed afresh) with a full set of retries; 409 while it is still being tried',
  security,
  middleware: [requireScope('jobs:write')] as const,
  request: { params: DeliveryParams },
  responses: {
    202: json(z.object({ id: z.string(), status: z.string(), attempts: z.number().int() })),
    ...commonErrors,
    ...notFoundError,
    ...conflictError,
  },
});

function secretsJson(secrets: SigningSecret[], endpoint: string | undefined) {
  const [current, ...previous] = secrets;
  return {
    secret: current!.secret,
    previous: previous.map((s) => ({ secret: s.secret, expiresAt: s.expiresAt!.toISOString() })),
    endpoint: endpoint ?? null,
    scheme: 'standard-webhooks-v1' as const,
    headers: ['webhook-id', 'webhook-timestamp', 'webhook-signature'],
  };
}

export function webhookRoutes(deps: AppDeps) {
  const app = router();
  const root = deps.webhookSigningKey ?? deps.config.WEBHOOK_SIGNING_KEY;

  app.openapi(secretRoute, async (c) => {
    const { url } = c.req.valid('query');
    return c.json(secretsJson(await signingSecrets(deps.sql, root, c.get('principal').tenantId, url ?? ''), url), 200);
  });

  app.openapi(rotateRoute, async (c) => {
    const { url, graceSeconds } = c.req.valid('json');
    return c.json(secretsJson(await rotateWebhookSecret(deps.sql, root, c.get('principal').tenantId, url ?? '', graceSeconds), url), 200);
  });

  app.openapi(redeliverRoute, async (c) => {
    const { id, deliveryId } = c.req.valid('param');
    const job = await loadJob(deps, c.get('principal').tenantId, id);
    // Only a delivery that is done trying (delivered or failed) starts again: one in flight would be sent twice.
    const [row] = await deps.sql<{ id: string; status: string; attempts: number }[]>`
      update webhook_deliveries set status = 'pending', attempts = 0, last_error = null, response_status = null, delivered_at = null
      where id = ${deliveryId} and job_id = ${job.id} and status in ('delivered', 'failed')
      returning id, status, attempts`;
    if (!row) {
      const [current] = await deps.sql<{ status: string }[]>`select status from webhook_deliveries where id = ${deliveryId} and job_id = ${job.id}`;
      if (!current) throw notFound('webhook delivery', deliveryId, 'deliveryId');
      throw conflict('delivery_in_progress', `the delivery is ${current.status}; redeliver it once it is delivered or failed`, [{ path: 'deliveryId', message: current.status, in: 'path' }]);
    }
    // The row is pending: if Redis does not take the job now, the reconciler re-queues it (it looks
    // for pending deliveries without a live queue job), so the answer is 202 either way.
    try {
      const queue = deps.queues.webhooks;
      const deadline = deps.config.REDIS_REQUEST_TIMEOUT_MS;
      await withRedisDeadline(queue.remove(deliveryId), deadline, 'the finished delivery job removal'); // its finished copy would block the same jobId
      await withRedisDeadline(enqueueDelivery(queue, deliveryId), deadline, 'the redelivery');
    } catch (err) {
      deps.logger.warn({ err, deliveryId }, 'redelivery not queued now; the reconciler will queue it');
    }
    return c.json(row, 202);
  });

  return app;
}
