-- Issue 10 (reliability). The outbox dispatcher backs off per row instead of giving up after a
-- fixed number of attempts: a failed row is not claimed again before next_attempt_at.
ALTER TABLE "outbox" ADD COLUMN "next_attempt_at" timestamp with time zone;
