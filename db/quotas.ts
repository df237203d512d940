/** What a tenant holds right now, for the per-tenant limits (api/quotas.ts). */
import type { Sql } from './client.js';

/** Jobs of the tenant that are waiting or running (they hold a place in the queue or on a runner). */
export async function countActiveJobs(sql: Sql, tenantId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from jobs
    where tenant_id = ${tenantId} and state in ('queued', 'requeued', 'running', 'canceling')`;
  return row?.n ?? 0;
}

/** Bytes the tenant stores: every checkpoint version plus every ingested dataset upload. */
export async function storedBytes(sql: Sql, tenantId: string): Promise<number> {
  const [row] = await sql<{ bytes: string }[]>`
    select (
      coalesce((select sum(c.bytes) from checkpoints c join jobs j on j.id = c.job_id where j.tenant_id = ${tenantId}), 0)
      + coalesce((select sum((v.manifest->'source'->>'bytes')::bigint) from dataset_versions v join datasets d on d.id = v.dataset_id where d.tenant_id = ${tenantId}), 0)
    )::text as bytes`;
  return Number(row?.bytes ?? 0);
}
