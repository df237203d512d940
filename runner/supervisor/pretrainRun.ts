/**
 * One attempt of a `pretrain` job: resolve the dataset and the starting point (this job's newest
 * checkpoint, else `initFrom`, else fresh), run the trainer in a child process, upload and register
 * each checkpoint it writes (then prune old versions), and say how the attempt ended.
 */
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { pretrainSpec, type PretrainSpec, type WeightsSource } from '../../contracts/jobSpec.js';
import type { DatasetManifest } from '../../contracts/datasetSpec.js';
import { getJobOfTenant, resolveCheckpoint, resolveDatasetVersion, runningSecondsSoFar, SupersededError, type CheckpointRow } from '../../db/runs.js';
import { recordJobEvent } from '../../db/jobs.js';
import { buildTrainConfigWithSources } from '../trainConfig.js';
import { CheckpointStore, STATE_FILES } from './checkpointStore.js';
import { PermanentRunError, type RunContext, type RunOutcome } from './context.js';
import { superviseChild } from './superviseChild.js';
import { describeStop, outcomeOfChild } from './outcomes.js';

export async function runPretrain(ctx: RunContext): Promise<RunOutcome> {
  const { job, log } = ctx;
  const spec = parseSpec(job.spec);
  const manifest = await readyManifest(ctx, spec.dataset, job.datasetVersionId);
  const { config: trainConfig, sources } = buildTrainConfigWithSources(spec, manifest, ctx.config.RUNNER_MEMORY_MB * 1024 * 1024);
  // What will run and why: every resolved value with its source (user, dataset-size default...).
  await recordJobEvent(ctx.db, job.id, 'config-resolved', { attempt: ctx.attempt, data: { config: trainConfig, sources } });
  const store = new CheckpointStore(ctx.db, ctx.storage, log);

  const remainingSeconds = spec.maxRuntimeSeconds - (await runningSecondsSoFar(ctx.db, job.id));
  if (remainingSeconds <= 0) {
    return { kind: 'failed', reason: `exceeded maxRuntimeSeconds=${spec.maxRuntimeSeconds} (over all attempts)`, retryable: false };
  }

  // Resume from this job's newest checkpoint that verifies; else start from initFrom; else fresh.
  const resumeDir = join(ctx.workDir, 'resume');
  const resumed = await store.downloadNewestValid(job.id, resumeDir);
  const initDir = join(ctx.workDir, 'init');
  if (resumed) {
    log.info({ version: resumed.version, step: resumed.step }, 'resuming from checkpoint');
  } else if (spec.initFrom) {
    // Retraining: the weights of another job's checkpoint, with a fresh optimizer and schedule.
    const source = await initSource(ctx, spec.initFrom);
    await store.download(source, initDir, STATE_FILES);
    log.info({ fromJob: spec.initFrom.job, fromModel: spec.initFrom.model, version: source.version, step: source.step }, 'initialising from checkpoint');
  }

  let lastCheckpoint: CheckpointRow | undefined = resumed ?? undefined;
  let checkpointError: string | undefined;
  let superseded: string | undefined;
  const supervised = await superviseChild(
    ctx,
    {
      kind: 'pretrain',
      jobId: job.id,
      attempt: ctx.attempt,
      trainConfig,
      backend: spec.resources.backend !== 'auto' ? spec.resources.backend : ctx.config.TFJS_BACKEND,
      manifest,
      resumeDir: resumed ? resumeDir : undefined,
      initDir: !resumed && spec.initFrom ? initDir : undefined,
      workDir: join(ctx.workDir, 'checkpoints'),
      cacheDir: join(ctx.config.DATA_DIR, 'cache', 'datasets'),
    },
    {
      remainingSeconds,
      gpus: spec.resources.gpus,
      async onCheckpoint(ck, run) {
        try {
          if (superseded) return;
          lastCheckpoint = await store.publish({ jobId: job.id, tenantId: job.tenantId, attempt: ctx.attempt }, ck);
          checkpointError = undefined;
          await store.applyRetention(job.id, spec.keepCheckpoints).catch((err: unknown) => {
            log.warn({ err: (err as Error).message }, 'checkpoint retention failed; will retry at the next checkpoint');
          });
        } catch (err) {
          if (err instanceof SupersededError) {
            superseded = err.message;
            run.kill();
            return;
          }
          // Training goes on: the next checkpoint may upload fine, and a resume uses the previous one.
          checkpointError = `checkpoint at step ${ck.step} could not be stored: ${(err as Error).message}`;
          log.error({ err: (err as Error).message, step: ck.step }, 'checkpoint upload failed');
        } finally {
          await rm(ck.dir, { recursive: true, force: true });
        }
      },
    },
  );

  if (superseded) return { kind: 'superseded', reason: superseded };
  const { outcome, stopReason } = supervised;
  const version = lastCheckpoint ? { version: lastCheckpoint.version, step: lastCheckpoint.step } : null;
  if (outcome.kind === 'completed') {
    if (checkpointError) return { kind: 'failed', reason: `training finished but its ${checkpointError}`, retryable: true };
    return { kind: 'succeeded', result: { ...outcome.result, checkpoint: version } };
  }
  if (outcome.kind === 'stopped' && stopReason === 'max-runtime') {
    return { kind: 'failed', reason: `exceeded maxRuntimeSeconds=${spec.maxRuntimeSeconds}; ${describeStop(version)}`, retryable: false };
  }
  return outcomeOfChild(outcome, stopReason, describeStop(version));
}

function parseSpec(raw: unknown): PretrainSpec {
  const parsed = pretrainSpec.safeParse(raw);
  if (!parsed.success) {
    throw new PermanentRunError(`invalid pretrain spec: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}

/** The manifest of the dataset version a job names; a clear permanent error when it is not usable. */
export async function readyManifest(ctx: RunContext, ref: string | undefined, pinnedId: string | null): Promise<DatasetManifest> {
  const version = await resolveDatasetVersion(ctx.db, ctx.job.tenantId, ref, pinnedId);
  const name = ref ?? pinnedId ?? '(none)';
  if (!version) throw new PermanentRunError(`dataset ${name} not found`);
  if (version.state !== 'ready' || !version.manifest) {
    throw new PermanentRunError(`dataset ${version.datasetName}@${version.version} is not ready (state ${version.state}${version.error ? `: ${version.error}` : ''})`);
  }
  return version.manifest as DatasetManifest;
}

async function initSource(ctx: RunContext, from: WeightsSource): Promise<CheckpointRow> {
  // The API pins every source to a job and a version (a model reference included) at submission.
  if (!from.job) throw new PermanentRunError(`initFrom names no job (model ${from.model ?? '?'} was not resolved at submission)`);
  const source = await getJobOfTenant(ctx.db, ctx.job.tenantId, from.job);
  if (!source || source.type !== 'pretrain') throw new PermanentRunError(`initFrom.job ${from.job}: no pretrain job with that id`);
  const ref = from.checkpoint ?? 'latest';
  const ck = await resolveCheckpoint(ctx.db, source.id, ref);
  if (!ck) throw new PermanentRunError(`initFrom: job ${from.job} has no checkpoint "${ref}"`);
  return ck;
}
