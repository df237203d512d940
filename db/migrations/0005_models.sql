CREATE TABLE "models" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"tenant_id" uuid NOT NULL,
	"name" text NOT NULL,
	"description" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "model_versions" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"model_id" uuid NOT NULL,
	"version" integer NOT NULL,
	"checkpoint_id" uuid NOT NULL,
	"job_id" uuid NOT NULL,
	"checkpoint_version" integer NOT NULL,
	"parent_version_id" uuid,
	"parent_job_id" uuid,
	"parent_checkpoint_version" integer,
	"dataset_version_id" uuid,
	"dataset_ref" text,
	"manifest_sha256" text,
	"spec" jsonb NOT NULL,
	"code_version" jsonb,
	"created_by_job_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "model_aliases" (
	"model_id" uuid NOT NULL,
	"alias" text NOT NULL,
	"version_id" uuid NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "model_aliases_model_id_alias_pk" PRIMARY KEY("model_id","alias")
);
--> statement-breakpoint
CREATE TABLE "model_gate_results" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"model_id" uuid NOT NULL,
	"probe_job_id" uuid NOT NULL,
	"alias" text NOT NULL,
	"checkpoint_id" uuid NOT NULL,
	"evaluation_id" uuid NOT NULL,
	"passed" boolean NOT NULL,
	"moved" boolean NOT NULL,
	"version_id" uuid,
	"previous_version_id" uuid,
	"rules" jsonb NOT NULL,
	"dataset_version_id" uuid,
	"protocol" jsonb,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "models" ADD CONSTRAINT "models_tenant_id_tenants_id_fk" FOREIGN KEY ("tenant_id") REFERENCES "public"."tenants"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_model_id_models_id_fk" FOREIGN KEY ("model_id") REFERENCES "public"."models"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_checkpoint_id_checkpoints_id_fk" FOREIGN KEY ("checkpoint_id") REFERENCES "public"."checkpoints"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_parent_version_id_model_versions_id_fk" FOREIGN KEY ("parent_version_id") REFERENCES "public"."model_versions"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_aliases" ADD CONSTRAINT "model_aliases_model_id_models_id_fk" FOREIGN KEY ("model_id") REFERENCES "public"."models"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_aliases" ADD CONSTRAINT "model_aliases_version_id_model_versions_id_fk" FOREIGN KEY ("version_id") REFERENCES "public"."model_versions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_gate_results" ADD CONSTRAINT "model_gate_results_model_id_models_id_fk" FOREIGN KEY ("model_id") REFERENCES "public"."models"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_gate_results" ADD CONSTRAINT "model_gate_results_probe_job_id_jobs_id_fk" FOREIGN KEY ("probe_job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "models_tenant_name_uq" ON "models" USING btree ("tenant_id","name");--> statement-breakpoint
CREATE UNIQUE INDEX "model_versions_uq" ON "model_versions" USING btree ("model_id","version");--> statement-breakpoint
CREATE UNIQUE INDEX "model_versions_checkpoint_uq" ON "model_versions" USING btree ("model_id","checkpoint_id");--> statement-breakpoint
CREATE INDEX "model_versions_checkpoint_idx" ON "model_versions" USING btree ("checkpoint_id");--> statement-breakpoint
CREATE UNIQUE INDEX "model_gate_results_probe_uq" ON "model_gate_results" USING btree ("probe_job_id");--> statement-breakpoint
CREATE INDEX "model_gate_results_model_idx" ON "model_gate_results" USING btree ("model_id","created_at");
