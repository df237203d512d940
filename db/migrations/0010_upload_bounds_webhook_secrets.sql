-- Issue 10 (hostile input). A dataset version's upload is bounded: the size the client declared
-- (the presigned PUT is signed for it and finalize checks it), a deadline after which the upload
-- sweeper closes an unfinalized version (aborting its multipart upload), and the ETag of the
-- archive at finalize (ingestion reads only those bytes: a PUT after finalize is never ingested).
ALTER TABLE "dataset_versions" ADD COLUMN "size_bytes" bigint;
--> statement-breakpoint
ALTER TABLE "dataset_versions" ADD COLUMN "upload_deadline" timestamp with time zone;
--> statement-breakpoint
ALTER TABLE "dataset_versions" ADD COLUMN "upload_etag" text;
--> statement-breakpoint
CREATE INDEX "dataset_versions_awaiting_idx" ON "dataset_versions" ("upload_deadline") WHERE "state" = 'awaiting_upload';
--> statement-breakpoint
-- Webhook signing secrets of one's own, per endpoint (the exact webhook URL) or per tenant (endpoint
-- ''), rotatable: a rotated-away secret keeps signing until expires_at (deliveries then carry both
-- signatures). A tenant with no row is signed with the secret derived from WEBHOOK_SIGNING_KEY.
CREATE TABLE "webhook_secrets" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"tenant_id" uuid NOT NULL REFERENCES "public"."tenants"("id") ON DELETE cascade,
	"endpoint" text DEFAULT '' NOT NULL,
	"secret" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone
);
--> statement-breakpoint
CREATE UNIQUE INDEX "webhook_secrets_current_uq" ON "webhook_secrets" ("tenant_id", "endpoint") WHERE "expires_at" IS NULL;
--> statement-breakpoint
CREATE INDEX "webhook_secrets_tenant_idx" ON "webhook_secrets" ("tenant_id", "endpoint", "created_at");
