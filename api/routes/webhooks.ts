/** The tenant's webhook signing secret, for receivers to verify deliveries. */
import { createRoute, z } from '@hono/zod-openapi';
import { requireScope } from '../auth/middleware.js';
import type { AppDeps } from '../deps.js';
import { commonErrors, json, router, security } from '../openapi.js';
import { tenantWebhookSecret } from '../webhooks/signing.js';

const secretRoute = createRoute({
  method: 'get',
  path: '/webhooks/secret',
  operationId: 'getWebhookSecret',
  tags: ['webhooks'],
  summary: 'The secret that signs webhook deliveries to this tenant (Standard Webhooks, whsec_…)',
  security,
  middleware: [requireScope('jobs:write')] as const,
  responses: {
    200: json(z.object({ secret: z.string(), scheme: z.literal('standard-webhooks-v1'), headers: z.array(z.string()) })),
    ...commonErrors,
  },
});

export function webhookRoutes(deps: AppDeps) {
  const app = router();
  const root = deps.webhookSigningKey ?? deps.config.WEBHOOK_SIGNING_KEY;
  app.openapi(secretRoute, (c) =>
    c.json(
      {
        secret: tenantWebhookSecret(root, c.get('principal').tenantId),
        scheme: 'standard-webhooks-v1' as const,
        headers: ['webhook-id', 'webhook-timestamp', 'webhook-signature'],
      },
      200,
    ),
  );
  return app;
}
