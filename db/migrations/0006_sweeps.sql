CREATE TABLE "sweeps" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"tenant_id" uuid NOT NULL,
	"state" text DEFAULT 'running' NOT NULL,
	"spec" jsonb NOT NULL,
	"reason" text,
	"idempotency_key" text,
	"request_hash" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	CONSTRAINT "sweeps_state_ck" CHECK ("sweeps"."state" in ('running','completed','canceled'))
);
--> statement-breakpoint
CREATE TABLE "sweep_runs" (
	"sweep_id" uuid NOT NULL,
	"index" integer NOT NULL,
	"setting" jsonb NOT NULL,
	"spec" jsonb NOT NULL,
	"pretrain_job_id" uuid,
	"probe_job_id" uuid,
	"error" text,
	CONSTRAINT "sweep_runs_sweep_id_index_pk" PRIMARY KEY("sweep_id","index")
);
--> statement-breakpoint
ALTER TABLE "sweeps" ADD CONSTRAINT "sweeps_tenant_id_tenants_id_fk" FOREIGN KEY ("tenant_id") REFERENCES "public"."tenants"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sweep_runs" ADD CONSTRAINT "sweep_runs_sweep_id_sweeps_id_fk" FOREIGN KEY ("sweep_id") REFERENCES "public"."sweeps"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sweep_runs" ADD CONSTRAINT "sweep_runs_pretrain_job_id_jobs_id_fk" FOREIGN KEY ("pretrain_job_id") REFERENCES "public"."jobs"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sweep_runs" ADD CONSTRAINT "sweep_runs_probe_job_id_jobs_id_fk" FOREIGN KEY ("probe_job_id") REFERENCES "public"."jobs"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "sweeps_tenant_idempotency_uq" ON "sweeps" USING btree ("tenant_id","idempotency_key");--> statement-breakpoint
CREATE INDEX "sweeps_tenant_created_idx" ON "sweeps" USING btree ("tenant_id","created_at","id");--> statement-breakpoint
CREATE INDEX "sweeps_running_idx" ON "sweeps" USING btree ("created_at") WHERE "sweeps"."state" = 'running';
