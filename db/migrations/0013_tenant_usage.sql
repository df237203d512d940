-- Issue 13. The per-tenant storage limit (TENANT_MAX_STORAGE_GB) is checked on every pretrain
-- submission, inside its insert statement. It used to sum the tenant's checkpoints through all of the
-- tenant's jobs, plus its dataset manifests: with a plan cached while the tables were small, a nested
-- loop over every job the tenant ever had (5,000 jobs: 10,000 buffer hits and 3.3 ms of Postgres CPU
-- per submission, growing with each job). The figure is now kept in one row per tenant, moved by
-- triggers in the transaction of each change that moves it, so a submission reads one row and an
-- uncommitted checkpoint or manifest counts for no one, as before.
CREATE TABLE "tenant_usage" (
	"tenant_id" uuid PRIMARY KEY NOT NULL REFERENCES "public"."tenants"("id") ON DELETE cascade,
	"stored_bytes" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
-- Adds `delta` to a tenant's figure. A positive delta creates the row; a negative one only updates it
-- (a row that is not there counted nothing), and only while the tenant exists: when a tenant is
-- deleted, its jobs and datasets go by cascade after it, and writing its usage row then would fail
-- the row's foreign key (the row goes by cascade too).
CREATE FUNCTION "tenant_usage_add"(tenant uuid, delta bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF tenant IS NULL OR delta = 0 THEN
		RETURN;
	END IF;
	IF delta > 0 THEN
		INSERT INTO tenant_usage (tenant_id, stored_bytes) VALUES (tenant, delta)
		ON CONFLICT (tenant_id) DO UPDATE SET stored_bytes = tenant_usage.stored_bytes + excluded.stored_bytes;
	ELSE
		UPDATE tenant_usage SET stored_bytes = stored_bytes + delta
		WHERE tenant_id = tenant AND EXISTS (SELECT 1 FROM tenants WHERE id = tenant);
	END IF;
END $$;
--> statement-breakpoint
-- The bytes of a dataset version's uploaded archive, as its manifest records them.
CREATE FUNCTION "dataset_version_stored_bytes"(manifest jsonb) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
	SELECT coalesce((manifest->'source'->>'bytes')::bigint, 0)
$$;
--> statement-breakpoint
-- A checkpoint row's tenant is its job's. When the job is being deleted (its checkpoints go by
-- cascade) the job is no longer visible here: the job's own trigger below took its checkpoints off.
CREATE FUNCTION "tenant_usage_checkpoints"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM tenant_usage_add((SELECT tenant_id FROM jobs WHERE id = OLD.job_id), -OLD.bytes);
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		PERFORM tenant_usage_add((SELECT tenant_id FROM jobs WHERE id = NEW.job_id), NEW.bytes);
	END IF;
	RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "checkpoints_tenant_usage" AFTER INSERT OR DELETE OR UPDATE OF "bytes", "job_id" ON "checkpoints"
	FOR EACH ROW EXECUTE FUNCTION tenant_usage_checkpoints();
--> statement-breakpoint
CREATE FUNCTION "tenant_usage_job_deleted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM tenant_usage_add(OLD.tenant_id, -(SELECT coalesce(sum(bytes), 0) FROM checkpoints WHERE job_id = OLD.id)::bigint);
	RETURN OLD;
END $$;
--> statement-breakpoint
CREATE TRIGGER "jobs_tenant_usage" BEFORE DELETE ON "jobs" FOR EACH ROW EXECUTE FUNCTION tenant_usage_job_deleted();
--> statement-breakpoint
-- Same for dataset versions through their dataset (a state change that leaves the manifest alone fires nothing).
CREATE FUNCTION "tenant_usage_dataset_versions"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM tenant_usage_add((SELECT tenant_id FROM datasets WHERE id = OLD.dataset_id), -dataset_version_stored_bytes(OLD.manifest));
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		PERFORM tenant_usage_add((SELECT tenant_id FROM datasets WHERE id = NEW.dataset_id), dataset_version_stored_bytes(NEW.manifest));
	END IF;
	RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "dataset_versions_tenant_usage" AFTER INSERT OR DELETE OR UPDATE OF "manifest", "dataset_id" ON "dataset_versions"
	FOR EACH ROW EXECUTE FUNCTION tenant_usage_dataset_versions();
--> statement-breakpoint
CREATE FUNCTION "tenant_usage_dataset_deleted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM tenant_usage_add(OLD.tenant_id, -(SELECT coalesce(sum(dataset_version_stored_bytes(manifest)), 0) FROM dataset_versions WHERE dataset_id = OLD.id)::bigint);
	RETURN OLD;
END $$;
--> statement-breakpoint
CREATE TRIGGER "datasets_tenant_usage" BEFORE DELETE ON "datasets" FOR EACH ROW EXECUTE FUNCTION tenant_usage_dataset_deleted();
--> statement-breakpoint
-- What the tenants already store.
INSERT INTO tenant_usage (tenant_id, stored_bytes)
SELECT t.id,
	coalesce((SELECT sum(c.bytes) FROM checkpoints c JOIN jobs j ON j.id = c.job_id WHERE j.tenant_id = t.id), 0)
	+ coalesce((SELECT sum(dataset_version_stored_bytes(v.manifest)) FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id WHERE d.tenant_id = t.id), 0)
FROM tenants t;
--> statement-breakpoint
-- One index less written per submission: `jobs_state_idx` held every job under its state, so each
-- new job added an entry under 'queued' (a hot page: every key equal). The two queries that look
-- jobs up by state across tenants (api/reconciler.ts) ask for active states only: queued or
-- requeued jobs are found through jobs_tenant_active_idx (migration 0012; its predicate covers
-- them), running or canceling ones through this smaller index, which a job enters when it leaves 'queued'.
DROP INDEX "jobs_state_idx";
--> statement-breakpoint
CREATE INDEX "jobs_running_idx" ON "jobs" USING btree ("state", "updated_at") WHERE "jobs"."state" in ('requeued','running','canceling');
