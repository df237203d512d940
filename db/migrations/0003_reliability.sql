-- Issue 10 (reliability). The outbox dispatcher backs off per row instead of giving up after a
-- fixed number of attempts: a failed row is not claimed again before next_attempt_at.
ALTER TABLE "outbox" ADD COLUMN "next_attempt_at" timestamp with time zone;
-- A retried job counts its attempts (RUNNER_MAX_ATTEMPTS) and running time from the retry on,
-- while jobs.attempt keeps rising (it is the fencing token of a run's writes).
ALTER TABLE "jobs" ADD COLUMN "attempt_base" integer DEFAULT 0 NOT NULL;
