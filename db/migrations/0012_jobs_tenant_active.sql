-- Issue 13. The per-tenant limit on active jobs (TENANT_MAX_ACTIVE_JOBS) counts a tenant's queued and
-- running jobs inside the submission's own statement. Without this index that count read every job
-- the tenant ever had (jobs_tenant_created_idx) or every active job of every tenant (jobs_state_idx);
-- with it, only the tenant's active ones.
CREATE INDEX "jobs_tenant_active_idx" ON "jobs" USING btree ("tenant_id") WHERE "jobs"."state" in ('queued','requeued','running','canceling');
