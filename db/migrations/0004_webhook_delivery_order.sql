-- Issue 13. Webhook deliveries of one job go out in the order of the changes they announce: each
-- delivery keeps the id of the outbox row it came from (outbox ids follow commit order per job),
-- and the worker holds a delivery back while an earlier one of the same job is unfinished.
ALTER TABLE "webhook_deliveries" ADD COLUMN "seq" bigint;--> statement-breakpoint
CREATE INDEX "webhook_deliveries_job_seq_idx" ON "webhook_deliveries" USING btree ("job_id","seq") WHERE "webhook_deliveries"."status" in ('pending','retrying');
