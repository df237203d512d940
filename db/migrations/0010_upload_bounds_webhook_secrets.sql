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
