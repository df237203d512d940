/**
 * What a tenant holds right now, for the per-tenant limits (api/quotas.ts). Each measure is a SQL
 * fragment too, so that the job submission evaluates it inside its own insert statement
 * (db/jobQueries.ts) instead of spending a round-trip on it.
 */
import type { Fragment } from 'postgres';
import type { Sql } from './client.js';

/**
 * Jobs of the tenant that are waiting or running, as an int expression (the states of index
 * jobs_tenant_active_idx). The tenant is an id, or a fragment naming a column of the outer query.
 */
export function activeJobsSql(sql: Sql, tenant: string | Fragment) {
  return sql`(select count(*)::int from jobs where tenant_id = ${tenant} and state in ('queued', 'requeued', 'running', 'canceling'))`;
}

/**
 * Bytes the tenant stores, as a bigint expression: its `tenant_usage` row, which triggers keep equal
 * to {@link recountStoredBytes} (migration 0013). One index lookup, whatever the tenant holds.
 */
export function storedBytesSql(sql: Sql, tenant: string | Fragment) {
  return sql`coalesce((select stored_bytes from tenant_usage where tenant_id = ${tenant}), 0::bigint)`;
}

export async function storedBytes(sql: Sql, tenantId: string): Promise<number> {
  const [row] = await sql<{ bytes: string }[]>`select ${storedBytesSql(sql, tenantId)}::text as bytes`;
  return Number(row?.bytes ?? 0);
}

/**
 * The same figure summed from the rows it stands for: every checkpoint version plus every ingested
 * dataset upload. Reads all of the tenant's jobs: for checks (tests), never per request.
 */
export async function recountStoredBytes(sql: Sql, tenantId: string): Promise<number> {
  const [row] = await sql<{ bytes: string }[]>`select (
      coalesce((select sum(c.bytes) from checkpoints c join jobs j on j.id = c.job_id where j.tenant_id = ${tenantId}), 0)
      + coalesce((select sum(dataset_version_stored_bytes(v.manifest)) from dataset_versions v join datasets d on d.id = v.dataset_id where d.tenant_id = ${tenantId}), 0)
    )::text as bytes`;
  return Number(row?.bytes ?? 0);
}
