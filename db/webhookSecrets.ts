/**
 * Webhook signing secrets (migration 0010). A delivery to `url` is signed with the endpoint's own
 * secrets when it has any, else with the tenant's default ones, else with the secret derived from
 * the deployment's root (api/webhooks/signing.ts), which is what every tenant starts with.
 * Rotating keeps the secret in use valid for a grace period: receivers switch over without a gap.
 */
import { randomBytes } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import type { Sql } from './client.js';
import { tenantWebhookSecret } from '../api/webhooks/signing.js';

export interface SigningSecret {
  secret: string;
  /** null: the current secret; otherwise it stops signing then. */
  expiresAt: Date | null;
}

type Query = Sql | TransactionSql;

/** The secrets that sign a delivery to `endpoint` ('' = the tenant's default), current first. */
export async function signingSecrets(sql: Query, root: string, tenantId: string, endpoint: string): Promise<SigningSecret[]> {
  // drizzle leaves timestamps of raw queries as text: parsed here.
  const rows = await sql<{ endpoint: string; secret: string; expires_at: string | Date | null }[]>`
    select endpoint, secret, expires_at from webhook_secrets
    where tenant_id = ${tenantId} and endpoint in (${endpoint}, '') and (expires_at is null or expires_at > now())
    order by (expires_at is null) desc, created_at desc`;
  for (const which of [endpoint, '']) {
    const own = rows.filter((r) => r.endpoint === which);
    if (own.length) return own.map((r) => ({ secret: r.secret, expiresAt: r.expires_at === null ? null : new Date(r.expires_at) }));
  }
  return [{ secret: tenantWebhookSecret(root, tenantId), expiresAt: null }];
}

/** A new random Standard Webhooks secret: whsec_ + 32 random bytes in base64. */
export function newWebhookSecret(): string {
  return 'whsec_' + randomBytes(32).toString('base64');
}

/**
 * Makes a new current secret for `endpoint`; the one signing its deliveries until now (its own, the
 * tenant's default or the derived one) keeps signing for `graceSeconds`, and no older one longer. Returns the secrets now
 * signing, current first. Serialized per endpoint, so two rotations at once give one current secret.
 */
export async function rotateWebhookSecret(sql: Sql, root: string, tenantId: string, endpoint: string, graceSeconds: number): Promise<SigningSecret[]> {
  return sql.begin(async (tx) => {
    const q: Query = tx;
    await q`select pg_advisory_xact_lock(hashtext(${`webhook-secret:${tenantId}:${endpoint}`}))`;
    const [own] = await q<{ id: string }[]>`
      select id from webhook_secrets where tenant_id = ${tenantId} and endpoint = ${endpoint} and expires_at is null`;
    // Every secret of the endpoint now stops within the grace period (earlier rotations' too).
    await q`
      update webhook_secrets set expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => ${graceSeconds}))
      where tenant_id = ${tenantId} and endpoint = ${endpoint} and (expires_at is null or expires_at > now())`;
    if (!own) {
      // The endpoint followed the tenant's default (or the derived secret): keep that one valid here.
      const [inUse] = await signingSecrets(q, root, tenantId, endpoint);
      await q`
        insert into webhook_secrets (tenant_id, endpoint, secret, expires_at)
        values (${tenantId}, ${endpoint}, ${inUse!.secret}, now() + make_interval(secs => ${graceSeconds}))`;
    }
    await q`insert into webhook_secrets (tenant_id, endpoint, secret) values (${tenantId}, ${endpoint}, ${newWebhookSecret()})`;
    // Secrets past their grace sign nothing: forget them after a day (kept a little for support).
    await q`delete from webhook_secrets where tenant_id = ${tenantId} and expires_at < now() - interval '1 day'`;
    return signingSecrets(q, root, tenantId, endpoint);
  }) as Promise<SigningSecret[]>;
}
