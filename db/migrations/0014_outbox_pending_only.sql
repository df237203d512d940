-- Issue 13. The outbox holds pending rows only: the dispatcher deletes the rows a pass handed on, in
-- that pass's transaction, instead of marking them dispatched. A mark was a new row version and a
-- primary-key entry per row (~10 % of a submission's throughput, BENCHMARKS.md), the table grew by
-- every job and event forever, and the reconciler's look-ups by job scanned all of it. A lost delete
-- (the pass commits asynchronously) re-dispatches its rows under the same ids, which is harmless.
-- Rolling upgrade: a replica of the previous version fails its dispatcher passes once this has run
-- (it marks a column that is gone); its rows wait for a new replica, nothing is lost.
DELETE FROM "outbox" WHERE "dispatched_at" IS NOT NULL;
--> statement-breakpoint
DROP INDEX "outbox_pending_idx";
--> statement-breakpoint
ALTER TABLE "outbox" DROP COLUMN "dispatched_at";
