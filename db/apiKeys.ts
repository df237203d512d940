/** Tenants and API keys: the rows behind authentication. Keys are looked up by the sha256 of the secret. */
import { and, desc, eq, isNull, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { apiKeys, tenants } from './schema.js';

export type ApiKeyRow = typeof apiKeys.$inferSelect;
export type TenantRow = typeof tenants.$inferSelect;

/** The tenant named `name`, created when absent (safe under concurrency). */
export async function ensureTenant(db: Db, name: string): Promise<TenantRow> {
  await db.insert(tenants).values({ name }).onConflictDoNothing({ target: tenants.name });
  const [row] = await db.select().from(tenants).where(eq(tenants.name, name));
  return row!;
}

export async function insertApiKey(
  db: Db,
  key: { tenantId: string; name: string; prefix: string; secretHash: string; scopes: string[] },
): Promise<ApiKeyRow> {
  const [row] = await db.insert(apiKeys).values(key).returning();
  return row!;
}

export interface KeyPrincipal {
  keyId: string;
  tenantId: string;
  scopes: string[];
  revoked: boolean;
}

/** The key with this hash, revoked or not (the caller decides); undefined when unknown. */
export async function findKeyByHash(db: Db, secretHash: string): Promise<KeyPrincipal | undefined> {
  const [row] = await db
    .select({ keyId: apiKeys.id, tenantId: apiKeys.tenantId, scopes: apiKeys.scopes, revokedAt: apiKeys.revokedAt })
    .from(apiKeys)
    .where(eq(apiKeys.secretHash, secretHash));
  return row && { keyId: row.keyId, tenantId: row.tenantId, scopes: row.scopes, revoked: row.revokedAt !== null };
}

export async function listApiKeys(db: Db, tenantId: string): Promise<ApiKeyRow[]> {
  return db.select().from(apiKeys).where(eq(apiKeys.tenantId, tenantId)).orderBy(desc(apiKeys.createdAt));
}

/** Marks a key revoked; returns it, or undefined when it is not the tenant's (or already revoked). */
export async function revokeApiKey(db: Db, tenantId: string, keyId: string): Promise<ApiKeyRow | undefined> {
  const [row] = await db
    .update(apiKeys)
    .set({ revokedAt: sql`now()` })
    .where(and(eq(apiKeys.id, keyId), eq(apiKeys.tenantId, tenantId), isNull(apiKeys.revokedAt)))
    .returning();
  return row;
}

export async function getApiKey(db: Db, tenantId: string, keyId: string): Promise<ApiKeyRow | undefined> {
  const [row] = await db.select().from(apiKeys).where(and(eq(apiKeys.id, keyId), eq(apiKeys.tenantId, tenantId)));
  return row;
}

export async function touchApiKey(db: Db, keyId: string): Promise<void> {
  await db.update(apiKeys).set({ lastUsedAt: sql`now()` }).where(eq(apiKeys.id, keyId));
}
