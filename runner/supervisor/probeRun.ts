/**
 * One attempt of a `probe` job: resolve the source job's checkpoint (a version or an alias),
 * download its backbone export (sha256 verified), train a linear classifier on frozen features in
 * a child process, then record the evaluation and move `best` on the source job when it beats it;
 * with `promote`, decide the gate and promote the checkpoint into the named model on a pass.
 */
import { join } from 'node:path';
import { probeSpec, pretrainSpec, type ProbeSpec } from '../../contracts/jobSpec.js';
import { getJobOfTenant, recordEvaluation, resolveCheckpoint, runningSecondsSoFar } from '../../db/runs.js';
import { decidePromotion } from '../../db/modelPromotion.js';
import { lineageOfJob } from '../../db/models.js';
import { buildProbeConfig } from '../trainConfig.js';
import { BACKBONE_FILES, CheckpointStore } from './checkpointStore.js';
import { PermanentRunError, type RunContext, type RunOutcome } from './context.js';
import { superviseChild } from './superviseChild.js';
import { outcomeOfChild } from './outcomes.js';
import { readyManifest } from './pretrainRun.js';
import type { EvaluationReport } from '../moco/evaluate.js';

/** Points of top-1 the model gains over each baseline (linear and kNN), for the CLI and dashboard. */
export function gainsOverBaselines(r: EvaluationReport): Record<string, { linearTop1: number; knnTop1: number }> {
  const m = r.subjects.model;
  const out: Record<string, { linearTop1: number; knnTop1: number }> = {};
  for (const name of ['random_init', 'raw_pixels'] as const) {
    const b = r.subjects[name];
    if (b) out[name] = { linearTop1: m.linear.top1 - b.linear.top1, knnTop1: m.knn.top1 - b.knn.top1 };
  }
  return out;
}

export async function runProbe(ctx: RunContext): Promise<RunOutcome> {
  const { job, log } = ctx;
  const spec = parseSpec(job.spec);
  const remainingSeconds = spec.maxRuntimeSeconds - (await runningSecondsSoFar(ctx.db, job.id));
  if (remainingSeconds <= 0) {
    return { kind: 'failed', reason: `exceeded maxRuntimeSeconds=${spec.maxRuntimeSeconds} (over all attempts)`, retryable: false };
  }

  // The API pins every source to a job and a version (a model reference included) at submission.
  if (!spec.source.job) throw new PermanentRunError(`source names no job (model ${spec.source.model ?? '?'} was not resolved at submission)`);
  const source = await getJobOfTenant(ctx.db, job.tenantId, spec.source.job);
  if (!source || source.type !== 'pretrain') throw new PermanentRunError(`source.job ${spec.source.job}: no pretrain job with that id`);
  const checkpointRef = spec.source.checkpoint ?? 'latest';
  const checkpoint = await resolveCheckpoint(ctx.db, source.id, checkpointRef);
  if (!checkpoint) throw new PermanentRunError(`source job ${source.id} has no checkpoint "${checkpointRef}"`);

  // The labeled data: the probe's own dataset, else the one the source job pretrained on.
  const sourceSpec = pretrainSpec.safeParse(source.spec);
  const manifest = spec.dataset
    ? await readyManifest(ctx, spec.dataset, null)
    : await readyManifest(ctx, sourceSpec.success ? sourceSpec.data.dataset : undefined, source.datasetVersionId);
  if (manifest.classes.length < 2) throw new PermanentRunError('the probe dataset has no labels (a linear probe needs at least 2 classes)');

  const backboneDir = join(ctx.workDir, 'backbone');
  await new CheckpointStore(ctx.db, ctx.storage, log).download(checkpoint, backboneDir, BACKBONE_FILES);
  log.info({ sourceJob: source.id, version: checkpoint.version, ref: spec.source.checkpoint }, 'probing checkpoint');

  const { outcome, stopReason } = await superviseChild(
    ctx,
    {
      kind: 'probe',
      jobId: job.id,
      attempt: ctx.attempt,
      backboneDir,
      manifest,
      probeConfig: buildProbeConfig(spec, manifest),
      initSeed: sourceSpec.success ? sourceSpec.data.seed : undefined,
      backend: spec.resources.backend !== 'auto' ? spec.resources.backend : ctx.config.TFJS_BACKEND,
      cacheDir: join(ctx.config.DATA_DIR, 'cache', 'datasets'),
    },
    { remainingSeconds, gpus: spec.resources.gpus },
  );
  if (outcome.kind !== 'completed') return outcomeOfChild(outcome, stopReason, `probe of v${checkpoint.version} not finished`);

  const top1 = Number(outcome.result.top1);
  const top5 = outcome.result.top5 === undefined || outcome.result.top5 === null ? null : Number(outcome.result.top5);
  if (!Number.isFinite(top1)) return { kind: 'failed', reason: 'the probe reported no top-1 accuracy', retryable: false };
  const report = outcome.result.evaluation as EvaluationReport | undefined;
  const gains = report ? gainsOverBaselines(report) : {};
  const { evaluation, movedBest, previousBestTop1 } = await recordEvaluation(ctx.db, {
    probeJobId: job.id,
    sourceJobId: source.id,
    checkpointId: checkpoint.id,
    kind: 'linear',
    top1,
    top5,
    details: {
      backend: outcome.result.backend,
      top1,
      top5,
      trainExamples: report?.trainExamples,
      valExamples: report?.evalExamples,
      numClasses: report?.numClasses,
      epochs: report?.protocol.epochs,
      gains,
      checkpointRef,
      checkpointVersion: checkpoint.version,
      checkpointStep: checkpoint.step,
    },
    knnTop1: report?.subjects.model.knn.top1 ?? null,
    subjects: (report?.subjects as Record<string, unknown> | undefined) ?? null,
    protocol: (report?.protocol as unknown as Record<string, unknown> | undefined) ?? null,
    attempt: ctx.attempt,
  });
  log.info({ top1, top5, version: checkpoint.version, movedBest, previousBestTop1 }, 'probe recorded');
  // A gated promotion: decided once per probe job, with the model locked (db/modelPromotion.ts).
  const gate = spec.promote
    ? await decidePromotion(ctx.db, {
        tenantId: job.tenantId,
        probeJob: job,
        evaluation,
        checkpoint,
        promote: spec.promote,
        lineage: await lineageOfJob(ctx.db, ctx.storage, source, null),
      })
    : undefined;
  if (gate) log.info({ model: gate.model, alias: gate.alias, passed: gate.passed, moved: gate.moved, version: gate.version }, gate.passed ? 'gate passed' : 'gate failed');
  return {
    kind: 'succeeded',
    result: {
      top1,
      top5,
      knnTop1: report?.subjects.model.knn.top1 ?? null,
      gains,
      evaluation: report ?? null,
      evaluationId: evaluation.id,
      sourceJob: source.id,
      checkpoint: { version: checkpoint.version, step: checkpoint.step, id: checkpoint.id },
      best: movedBest,
      ...(gate ? { gate } : {}),
    },
  };
}

function parseSpec(raw: unknown): ProbeSpec {
  const parsed = probeSpec.safeParse(raw);
  if (!parsed.success) {
    throw new PermanentRunError(`invalid probe spec: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}
