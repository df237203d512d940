/**
 * Turning a validated spec into a queued job: resolve what the spec names (dataset, source job,
 * checkpoint) within the caller's tenant, refuse unsafe webhook targets, then one insert that is
 * idempotent on (tenant, Idempotency-Key). Shared by POST /v1/jobs and POST /v1/jobs/{id}/retrain.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { AppDeps } from './deps.js';
import { ApiError, conflict, invalid, unresolvable } from './errors.js';
import { insertJob, getTenantJob, type InsertJobResult, type JobDatasetInput, type JobRow, type NewJob } from '../db/jobQueries.js';
import { JobInsertBatcher } from '../db/jobInsertBatch.js';
import { resolveCheckpoint } from '../db/checkpointQueries.js';
import { resolveReadyVersion } from '../db/datasets.js';
import { parseDatasetRef, type JobSpec, type ProbeSpec, type PretrainSpec, type WeightsSource } from '../contracts/jobSpec.js';
import { resolveModelRef } from '../db/models.js';
import { refuseWebhookTarget } from './webhooks/targets.js';
import { datasetRefError } from './datasetReadiness.js';
import { activeJobCounts, activeJobLimitError, refuseSpecThatCannotFit, storageLimitBytes, storageLimitError } from './quotas.js';
import { webhookWants } from '../contracts/outbox.js';
import { jobJson } from './serialize.js';

export interface SubmitOptions {
  tenantId: string;
  idempotencyKey?: string;
  parentJobId?: string;
  /** Distinguishes routes in the idempotency hash: a retrain and a submit never share a key by accident. */
  operation: string;
}

export interface Submitted {
  jobId: string;
  /**
   * The job as the API answers it (api/serialize.ts jobJson), as JSON text. A new job's comes from
   * Postgres with the insert (`job_api_json`, migration 0015), so the hot path neither parses the row nor writes it
   * out again; test/integration/api/jobJson.test.ts holds both renderings equal.
   */
  json: string;
  /** True when an earlier request with the same Idempotency-Key created this job. */
  replayed: boolean;
}

const FOREIGN_KEY_VIOLATION = '23503';

const batchers = new WeakMap<AppDeps, JobInsertBatcher>();

/** Writes a submission through this app's group commit (db/jobInsertBatch.ts), or alone when that is off. */
function insertSubmission(deps: AppDeps, job: NewJob): Promise<InsertJobResult> {
  const { API_SUBMIT_STATEMENTS: maxInFlight, API_SUBMIT_BATCH_MAX: maxBatch } = deps.config;
  if (maxBatch === 1) return insertJob(deps.sql, job);
  let batcher = batchers.get(deps);
  if (!batcher) batchers.set(deps, (batcher = new JobInsertBatcher(deps.sql, { maxInFlight, maxBatch })));
  return batcher.insert(job);
}

export async function submitJob(deps: AppDeps, spec: JobSpec, opts: SubmitOptions): Promise<Submitted> {
  if (spec.webhook) {
    const why = await refuseWebhookTarget(spec.webhook.url, deps.config.WEBHOOK_ALLOW_PRIVATE);
    if (why) throw invalid('webhook.url', why);
  }
  // Issue 10: what cannot fit a runner is refused before anything else; the tenant's limits are
  // checked by the insert itself (one round-trip for the whole submission, see api/quotas.ts).
  if (spec.type === 'pretrain') refuseSpecThatCannotFit(deps, spec);
  const resolved = spec.type === 'pretrain' ? await preparePretrain(deps, opts.tenantId, spec) : await prepareProbe(deps, opts.tenantId, spec);
  // The spec as submitted, written once: the idempotency hash reads it, and so does the insert when
  // resolving changed nothing (a pretrain job without initFrom, the common case).
  const submittedJson = opts.idempotencyKey || resolved.spec === spec ? JSON.stringify(spec) : undefined;
  const requestHash = opts.idempotencyKey ? createHash('sha256').update(opts.operation).update('\0').update(submittedJson!).digest('hex') : null;
  const maxActiveJobs = deps.config.TENANT_MAX_ACTIVE_JOBS;
  const counts = activeJobCounts(deps);
  const skipCount = counts.maySkipCount(opts.tenantId, maxActiveJobs);
  let result;
  try {
    result = await insertSubmission(deps, {
      id: randomUUID(),
      tenantId: opts.tenantId,
      type: spec.type,
      specJson: resolved.spec === spec ? submittedJson! : JSON.stringify(resolved.spec),
      dataset: resolved.dataset,
      idempotencyKey: opts.idempotencyKey ?? null,
      requestHash,
      parentJobId: opts.parentJobId ?? null,
      announceQueued: webhookWants(spec.webhook, 'job.queued'),
      maxActiveJobs: skipCount ? null : maxActiveJobs,
      maxStoredBytes: spec.type === 'pretrain' ? storageLimitBytes(deps) : null,
    });
  } catch (err) {
    // The dataset version was deleted between resolving it and inserting: same as never existing.
    if ((err as { code?: string }).code === FOREIGN_KEY_VIOLATION) throw await datasetProblem(deps, opts.tenantId, spec.dataset ?? '');
    throw err;
  }
  if (result.usage.activeJobs !== null) counts.counted(opts.tenantId, result.usage.activeJobs, result.outcome === 'created');
  switch (result.outcome) {
    case 'active_job_limit':
      throw activeJobLimitError(result.usage.activeJobs, maxActiveJobs);
    case 'storage_limit':
      throw storageLimitError(result.usage.storedBytes, storageLimitBytes(deps));
    case 'dataset_not_found':
      throw await datasetProblem(deps, opts.tenantId, spec.dataset ?? '');
    case 'existing':
      if (result.job.requestHash !== requestHash) {
        throw conflict('idempotency_key_reused', 'this Idempotency-Key was used with a different request; use a new key for a new job', [
          { path: 'idempotency-key', message: 'already used with another body', in: 'header' },
        ]);
      }
      return { jobId: result.job.id, json: JSON.stringify(jobJson(result.job)), replayed: true };
    case 'created':
      deps.onOutboxWritten?.();
      return { jobId: result.jobId, json: result.apiJson, replayed: false };
  }
}

/** Off the hot path (only when the insert found no ready version): says which, and why not. */
function datasetProblem(deps: AppDeps, tenantId: string, ref: string) {
  let parsed;
  try {
    parsed = parseDatasetRef(ref);
  } catch {
    return Promise.resolve(unresolvable('dataset_not_found', 'dataset', `no ready dataset version ${JSON.stringify(ref)} in this tenant`));
  }
  return datasetRefError(deps.db, tenantId, parsed.name, parsed.version);
}

interface Prepared {
  /** The spec to store: the submitted object itself when nothing in it needed resolving. */
  spec: JobSpec;
  dataset: JobDatasetInput;
}

async function preparePretrain(deps: AppDeps, tenantId: string, spec: PretrainSpec): Promise<Prepared> {
  let out: PretrainSpec = spec;
  if (spec.initFrom) {
    // Pin the version: `latest` at submission, not whatever is latest when the run starts.
    out = { ...spec, initFrom: (await resolveWeights(deps, tenantId, spec.initFrom, 'initFrom', ['succeeded', 'running', 'failed', 'canceled'])).pinned };
  }
  const ref = parseDatasetRef(spec.dataset);
  return { spec: out, dataset: { kind: 'ref', name: ref.name, version: ref.version } };
}

async function prepareProbe(deps: AppDeps, tenantId: string, spec: ProbeSpec): Promise<Prepared> {
  const { job: source, pinned } = await resolveWeights(deps, tenantId, spec.source, 'source', ['succeeded', 'running']);
  const out: ProbeSpec = { ...spec, source: pinned };
  if (spec.dataset) {
    const ref = parseDatasetRef(spec.dataset);
    const v = await resolveReadyVersion(deps.db, tenantId, ref.name, ref.version);
    if (!v) throw await datasetProblem(deps, tenantId, spec.dataset);
    return { spec: out, dataset: { kind: 'resolved', versionId: v.version.id, ref: v.ref } };
  }
  // Defaults to the pretrain job's own dataset version.
  const sourceRef = (source.spec as { dataset?: string }).dataset;
  if (!source.datasetVersionId || !sourceRef) {
    throw unresolvable('dataset_not_found', 'dataset', `the source job's dataset version no longer exists; name a dataset`);
  }
  return { spec: out, dataset: { kind: 'resolved', versionId: source.datasetVersionId, ref: sourceRef } };
}

/**
 * A weights source (probe `source`, pretrain `initFrom`) → the job and checkpoint it names, pinned:
 * `{ job, checkpoint: "vN" }`, plus `model: "name@N"` when a model version was named. A model
 * version's job may be in any state: the version pins a checkpoint that exists.
 */
async function resolveWeights(
  deps: AppDeps,
  tenantId: string,
  src: WeightsSource,
  path: 'source' | 'initFrom',
  states: string[],
): Promise<{ job: JobRow; pinned: WeightsSource }> {
  if (src.model) {
    const named = await resolveModelRef(deps.db, tenantId, src.model);
    if (!named.ok) {
      const what = named.reason === 'model_not_found' ? 'no model of that name' : 'the model has no such version or alias';
      throw unresolvable(named.reason === 'model_not_found' ? 'model_not_found' : 'model_version_not_found', `${path}.model`, `${JSON.stringify(src.model)}: ${what} in this tenant`);
    }
    const job = await sourceJob(deps, tenantId, named.version.jobId, `${path}.model`, ['queued', 'running', 'canceling', 'requeued', 'succeeded', 'failed', 'canceled']);
    if (src.job && src.job !== job.id) throw unresolvable('model_mismatch', `${path}.job`, `${src.model} is a checkpoint of job ${job.id}, not of ${src.job}`);
    if (src.checkpoint) {
      const cp = await resolveCheckpoint(deps.db, job.id, src.checkpoint);
      if (cp?.id !== named.checkpoint.id) throw unresolvable('model_mismatch', `${path}.checkpoint`, `${src.model} is checkpoint v${named.checkpoint.version}, not ${src.checkpoint}`);
    }
    return { job, pinned: { job: job.id, checkpoint: `v${named.checkpoint.version}`, model: `${named.model.name}@${named.version.version}` } };
  }
  const job = await sourceJob(deps, tenantId, src.job!, `${path}.job`, states);
  const ref = src.checkpoint ?? 'latest';
  const cp = await resolveCheckpoint(deps.db, job.id, ref);
  if (!cp) throw unresolvable('checkpoint_not_found', `${path}.checkpoint`, `job ${job.id} has no checkpoint ${JSON.stringify(ref)}`);
  return { job, pinned: { job: job.id, checkpoint: `v${cp.version}` } };
}

async function sourceJob(deps: AppDeps, tenantId: string, jobId: string, path: string, states: string[]): Promise<JobRow> {
  const job = await getTenantJob(deps.sql, tenantId, jobId);
  if (!job) throw unresolvable('job_not_found', path, `no job ${jobId} in this tenant`);
  if (job.type !== 'pretrain') throw unresolvable('wrong_job_type', path, `job ${jobId} is a ${job.type} job, not a pretrain job`);
  if (!states.includes(job.state)) {
    throw new ApiError(409, 'wrong_job_state', `${path}: job ${jobId} is ${job.state}; it must be ${states.join(' or ')}`, [
      { path, message: `job is ${job.state}`, in: 'body' },
    ]);
  }
  return job;
}
