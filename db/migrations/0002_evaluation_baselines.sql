-- Evaluations with their baselines and protocol (issue 9). top1/top5 stay the model's linear probe;
-- knn_top1 is the model's kNN; subjects holds, per subject (model / random_init / raw_pixels),
-- { featureDim, linear: { top1, top5, trainTop1, trainTop5, selectedLr, lrSelection }, knn: { top1, top5 } };
-- protocol is the evaluation protocol they all ran under.
ALTER TABLE "evaluations" ADD COLUMN IF NOT EXISTS "knn_top1" double precision;--> statement-breakpoint
ALTER TABLE "evaluations" ADD COLUMN IF NOT EXISTS "subjects" jsonb;--> statement-breakpoint
ALTER TABLE "evaluations" ADD COLUMN IF NOT EXISTS "protocol" jsonb;
