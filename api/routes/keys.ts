/** API keys of the caller's tenant: create (the secret is shown once), list, revoke. Admin scope. */
import { createRoute, z } from '@hono/zod-openapi';
import { getApiKey, insertApiKey, listApiKeys, revokeApiKey } from '../../db/apiKeys.js';
import { generateApiKey } from '../auth/keys.js';
import { requireScope, type KeyCache } from '../auth/middleware.js';
import { SCOPES } from '../auth/scopes.js';
import type { AppDeps } from '../deps.js';
import { conflict, notFound } from '../errors.js';
import { commonErrors, conflictError, json, jsonBody, notFoundError, router, security } from '../openapi.js';
import { keyJson } from '../serialize.js';

const KeySchema = z
  .object({
    id: z.string(),
    name: z.string(),
    prefix: z.string(),
    scopes: z.array(z.string()),
    createdAt: z.string().nullable(),
    lastUsedAt: z.string().nullable(),
    revokedAt: z.string().nullable(),
  })
  .openapi('ApiKey');

const createKeyRoute = createRoute({
  method: 'post',
  path: '/keys',
  operationId: 'createApiKey',
  tags: ['keys'],
  summary: 'Create an API key (the secret is in this answer only)',
  security,
  middleware: [requireScope('admin')] as const,
  request: {
    body: jsonBody(
      z.strictObject({
        name: z.string().min(1).max(100),
        scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length),
      }),
    ),
  },
  responses: { 201: json(KeySchema.extend({ key: z.string() })), ...commonErrors },
});

const listKeysRoute = createRoute({
  method: 'get',
  path: '/keys',
  operationId: 'listApiKeys',
  tags: ['keys'],
  summary: "The tenant's API keys (never their secrets)",
  security,
  middleware: [requireScope('admin')] as const,
  responses: { 200: json(z.object({ keys: z.array(KeySchema) })), ...commonErrors },
});

const KeyIdParam = z.object({ id: z.uuid().openapi({ param: { name: 'id', in: 'path' } }) });

const revokeKeyRoute = createRoute({
  method: 'delete',
  path: '/keys/{id}',
  operationId: 'revokeApiKey',
  tags: ['keys'],
  summary: 'Revoke an API key (takes effect within a second on every replica)',
  security,
  middleware: [requireScope('admin')] as const,
  request: { params: KeyIdParam },
  responses: { 200: json(KeySchema), ...commonErrors, ...notFoundError, ...conflictError },
});

export function keyRoutes(deps: AppDeps, cache: KeyCache) {
  const app = router();

  app.openapi(createKeyRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const body = c.req.valid('json');
    const material = generateApiKey();
    const row = await insertApiKey(deps.db, { tenantId, name: body.name, prefix: material.prefix, secretHash: material.hash, scopes: [...new Set(body.scopes)] });
    return c.json({ ...keyJson(row), key: material.secret }, 201);
  });

  app.openapi(listKeysRoute, async (c) => {
    return c.json({ keys: (await listApiKeys(deps.db, c.get('principal').tenantId)).map(keyJson) }, 200);
  });

  app.openapi(revokeKeyRoute, async (c) => {
    const { tenantId } = c.get('principal');
    const { id } = c.req.valid('param');
    const row = await revokeApiKey(deps.db, tenantId, id);
    if (!row) {
      const existing = await getApiKey(deps.db, tenantId, id);
      if (!existing) throw notFound('API key', id, 'id');
      throw conflict('already_revoked', 'this API key is revoked already');
    }
    cache.invalidate();
    return c.json(keyJson(row), 200);
  });

  return app;
}
