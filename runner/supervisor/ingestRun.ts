/**
 * One attempt of an `ingest` job: the datasets module turns an uploaded archive into shards and a
 * manifest (runner/datasets), in a child process like training, since decoding tens of thousands
 * of images would otherwise hold the event loop that renews the job's lock.
 */
import type { IngestSpec } from '../../contracts/jobSpec.js';
import { runningSecondsSoFar } from '../../db/runs.js';
import { failDatasetVersion } from '../datasets/index.js';
import { PermanentRunError, type RunContext, type RunOutcome } from './context.js';
import { superviseChild } from './superviseChild.js';
import { outcomeOfChild } from './outcomes.js';

/** Ingest jobs carry no user spec with a runtime limit; this bounds a wedged decoder. */
const INGEST_MAX_SECONDS = 6 * 3600;

export async function runIngest(ctx: RunContext): Promise<RunOutcome> {
  const spec = ctx.job.spec as Partial<IngestSpec>;
  if (spec?.type !== 'ingest' || typeof spec.datasetVersionId !== 'string') {
    throw new PermanentRunError('invalid ingest spec: datasetVersionId is missing');
  }
  const remainingSeconds = INGEST_MAX_SECONDS - (await runningSecondsSoFar(ctx.db, ctx.job.id));
  const { outcome, stopReason } = await superviseChild(
    ctx,
    { kind: 'ingest', jobId: ctx.job.id, attempt: ctx.attempt, datasetVersionId: spec.datasetVersionId },
    { remainingSeconds },
  );
  const result = outcomeOfChild(outcome, stopReason, `ingestion of dataset version ${spec.datasetVersionId} not finished`);
  // Bad input already marked the version failed. A version left `ingesting` by a last failed
  // attempt or a cancel would wait forever: it is failed here, with the job's reason.
  const final =
    result.kind === 'canceled' || (result.kind === 'failed' && (!result.retryable || ctx.attempt - ctx.job.attemptBase >= ctx.config.RUNNER_MAX_ATTEMPTS));
  if (final) {
    await failDatasetVersion(ctx, spec.datasetVersionId, result.reason).catch((err: unknown) => {
      ctx.log.error({ err: (err as Error).message }, 'could not mark the dataset version failed');
    });
  }
  return result;
}
