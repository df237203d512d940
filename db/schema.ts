/**
 * The metadata of Momentum. Postgres is the source of truth for every job, dataset and checkpoint;
 * Redis only delivers work. States are text with CHECK constraints (not enums) so that adding one
 * is a plain migration.
 */
import { sql } from 'drizzle-orm';
import {
  type AnyPgColumn,
  bigint,
  bigserial,
  boolean,
  check,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();

export const tenants = pgTable('tenants', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull().unique(),
  createdAt: createdAt(),
});

/**
 * What a tenant stores (checkpoint versions + ingested dataset uploads), kept current by triggers on
 * checkpoints, jobs, dataset_versions and datasets (migration 0013) in the transaction of each change:
 * the storage limit of every submission reads this one row instead of summing (db/quotas.ts).
 */
export const tenantUsage = pgTable('tenant_usage', {
  tenantId: uuid('tenant_id')
    .primaryKey()
    .references(() => tenants.id, { onDelete: 'cascade' }),
  storedBytes: bigint('stored_bytes', { mode: 'number' }).notNull().default(0),
});

/** API keys: the secret is shown once; only its sha256 is stored. `prefix` identifies a key in lists. */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    tenantId: uuid('tenant_id').notNull().references(() => tenants.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    prefix: text('prefix').notNull(),
    secretHash: text('secret_hash').notNull().unique(),
    scopes: text('scopes').array().notNull(),
    createdAt: createdAt(),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true }),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (t) => [index('api_keys_tenant_idx').on(t.tenantId)],
);

export const datasets = pgTable(
  'datasets',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    tenantId: uuid('tenant_id').notNull().references(() => tenants.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    description: text('description'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('datasets_tenant_name_uq').on(t.tenantId, t.name)],
);

export const DATASET_VERSION_STATES = ['awaiting_upload', 'ingesting', 'ready', 'failed'] as const;
export type DatasetVersionState = (typeof DATASET_VERSION_STATES)[number];

/** Immutable once `ready`: the manifest mirrors the one stored beside the shards in S3. */
export const datasetVersions = pgTable(
  'dataset_versions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    datasetId: uuid('dataset_id').notNull().references(() => datasets.id, { onDelete: 'cascade' }),
    version: integer('version').notNull(),
    state: text('state').$type<DatasetVersionState>().notNull().default('awaiting_upload'),
    /** What the user declared: format, image size, split fraction, resize policy. */
    options: jsonb('options').notNull().default({}),
    uploadKey: text('upload_key').notNull(),
    manifestKey: text('manifest_key'),
    manifest: jsonb('manifest'),
    error: text('error'),
    createdAt: createdAt(),
    readyAt: timestamp('ready_at', { withTimezone: true }),
    /** The archive's size as the client declared it: the PUT URL is signed for it, finalize checks it (migration 0010). */
    sizeBytes: bigint('size_bytes', { mode: 'number' }),
    /** Not finalized by then: the upload sweeper closes the version and aborts its multipart upload. */
    uploadDeadline: timestamp('upload_deadline', { withTimezone: true }),
    /** The archive's ETag when it was finalized: ingestion reads only those bytes. */
    uploadEtag: text('upload_etag'),
  },
  (t) => [
    uniqueIndex('dataset_versions_uq').on(t.datasetId, t.version),
    index('dataset_versions_awaiting_idx').on(t.uploadDeadline).where(sql`${t.state} = 'awaiting_upload'`),
    check('dataset_versions_state_ck', sql`${t.state} in ('awaiting_upload','ingesting','ready','failed')`),
  ],
);

export const JOB_TYPES = ['pretrain', 'probe', 'ingest'] as const;
export type JobType = (typeof JOB_TYPES)[number];
export const JOB_STATES = ['queued', 'running', 'canceling', 'requeued', 'succeeded', 'failed', 'canceled'] as const;
export type JobState = (typeof JOB_STATES)[number];

export const jobs = pgTable(
  'jobs',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    tenantId: uuid('tenant_id').notNull().references(() => tenants.id, { onDelete: 'cascade' }),
    type: text('type').$type<JobType>().notNull(),
    state: text('state').$type<JobState>().notNull().default('queued'),
    spec: jsonb('spec').notNull(),
    /** Runs started so far; a resumed run after a crash or preemption increments it. */
    attempt: integer('attempt').notNull().default(0),
    /** The attempt a `POST /retry` started from: attempts are counted against RUNNER_MAX_ATTEMPTS from it. */
    attemptBase: integer('attempt_base').notNull().default(0),
    idempotencyKey: text('idempotency_key'),
    /** Hash of the request body that created the job: the same key with another body is a conflict. */
    requestHash: text('request_hash'),
    cancelRequested: boolean('cancel_requested').notNull().default(false),
    parentJobId: uuid('parent_job_id'),
    datasetVersionId: uuid('dataset_version_id').references(() => datasetVersions.id),
    /** Latest progress as the runner reports it (step, total, loss, images/s). */
    progress: jsonb('progress'),
    /** Where it ran: backend, device, versions, runner host. */
    runtime: jsonb('runtime'),
    result: jsonb('result'),
    error: text('error'),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    startedAt: timestamp('started_at', { withTimezone: true }),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [
    uniqueIndex('jobs_tenant_idempotency_uq').on(t.tenantId, t.idempotencyKey),
    index('jobs_tenant_created_idx').on(t.tenantId, t.createdAt, t.id),
    /** Jobs past 'queued' and not finished, by state and age, for the reconciler (migration 0013: a new job writes no entry here). */
    index('jobs_running_idx').on(t.state, t.updatedAt).where(sql`${t.state} in ('requeued','running','canceling')`),
    /** The tenant's active jobs, counted against TENANT_MAX_ACTIVE_JOBS at submission (migration 0012). */
    index('jobs_tenant_active_idx').on(t.tenantId).where(sql`${t.state} in ('queued','requeued','running','canceling')`),
    check('jobs_type_ck', sql`${t.type} in ('pretrain','probe','ingest')`),
    check(
      'jobs_state_ck',
      sql`${t.state} in ('queued','running','canceling','requeued','succeeded','failed','canceled')`,
    ),
  ],
);

/** Every lifecycle transition and notable happening of a job, in order. */
export const jobEvents = pgTable(
  'job_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    jobId: uuid('job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
    kind: text('kind').notNull(),
    fromState: text('from_state'),
    toState: text('to_state'),
    attempt: integer('attempt'),
    reason: text('reason'),
    data: jsonb('data'),
  },
  (t) => [index('job_events_job_idx').on(t.jobId, t.id)],
);

/** One row per job, step and metric name: a resumed run re-writing a step overwrites, never duplicates. */
export const metrics = pgTable(
  'metrics',
  {
    jobId: uuid('job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    step: integer('step').notNull(),
    name: text('name').notNull(),
    value: doublePrecision('value').notNull(),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.name, t.step] })],
);

export const jobLogs = pgTable(
  'job_logs',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    jobId: uuid('job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    attempt: integer('attempt').notNull(),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
    level: text('level').notNull(),
    message: text('message').notNull(),
  },
  (t) => [index('job_logs_job_idx').on(t.jobId, t.id)],
);

/** Registered only after the upload finished and its sha256 was recorded: a row means the bytes exist. */
export const checkpoints = pgTable(
  'checkpoints',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    jobId: uuid('job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    version: integer('version').notNull(),
    step: integer('step').notNull(),
    epoch: doublePrecision('epoch'),
    /** Key prefix in S3; `files` lists each object under it with bytes and sha256. */
    s3Prefix: text('s3_prefix').notNull(),
    files: jsonb('files').notNull(),
    bytes: bigint('bytes', { mode: 'number' }).notNull(),
    sha256: text('sha256').notNull(),
    metrics: jsonb('metrics'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('checkpoints_job_version_uq').on(t.jobId, t.version), index('checkpoints_job_step_idx').on(t.jobId, t.step)],
);

/** Movable names for checkpoint versions: `latest`, `best`, or the user's own. */
export const checkpointAliases = pgTable(
  'checkpoint_aliases',
  {
    jobId: uuid('job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    alias: text('alias').notNull(),
    checkpointId: uuid('checkpoint_id').notNull().references(() => checkpoints.id, { onDelete: 'cascade' }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.alias] })],
);

/** A probe result: one per probe job, about one checkpoint version. */
export const evaluations = pgTable(
  'evaluations',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    jobId: uuid('job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    checkpointId: uuid('checkpoint_id').notNull().references(() => checkpoints.id, { onDelete: 'cascade' }),
    kind: text('kind').notNull(),
    top1: doublePrecision('top1').notNull(),
    top5: doublePrecision('top5'),
    details: jsonb('details'),
    /** The model's kNN top-1 (same protocol); null for evaluations made before it was measured. */
    knnTop1: doublePrecision('knn_top1'),
    /** Per subject (model / random_init / raw_pixels): linear and kNN results (migration 0002). */
    subjects: jsonb('subjects'),
    /** The evaluation protocol every subject ran under. */
    protocol: jsonb('protocol'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('evaluations_job_uq').on(t.jobId), index('evaluations_checkpoint_idx').on(t.checkpointId)],
);

/** Transactional outbox: written in the same transaction as the row it announces; deleted by the pass that dispatches it. */
export const outbox = pgTable(
  'outbox',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    topic: text('topic').notNull(),
    payload: jsonb('payload').notNull(),
    createdAt: createdAt(),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    /** A failed row is not claimed again before this (exponential, capped, jittered backoff). */
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }),
  },
);

export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    jobId: uuid('job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    event: text('event').notNull(),
    url: text('url').notNull(),
    payload: jsonb('payload').notNull(),
    status: text('status').notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    responseStatus: integer('response_status'),
    lastError: text('last_error'),
    createdAt: createdAt(),
    deliveredAt: timestamp('delivered_at', { withTimezone: true }),
    /** The outbox row it came from: deliveries of one job go out in this order (issue 13, migration 0004). */
    seq: bigint('seq', { mode: 'number' }),
  },
  (t) => [
    index('webhook_deliveries_job_idx').on(t.jobId),
    index('webhook_deliveries_job_seq_idx').on(t.jobId, t.seq).where(sql`${t.status} in ('pending','retrying')`),
    // The reconciler looks for unfinished deliveries by age every pass; keep that off a full scan.
    index('webhook_deliveries_unfinished_idx').on(t.createdAt).where(sql`${t.status} in ('pending','retrying')`),
  ],
);

/**
 * Webhook signing secrets of a tenant's own (migration 0010): per endpoint (the exact webhook URL)
 * or the tenant's default (endpoint ''). At most one current (expires_at null) per endpoint; a
 * rotated-away one signs too until it expires.
 */
export const webhookSecrets = pgTable(
  'webhook_secrets',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    tenantId: uuid('tenant_id').notNull().references(() => tenants.id, { onDelete: 'cascade' }),
    endpoint: text('endpoint').notNull().default(''),
    secret: text('secret').notNull(),
    createdAt: createdAt(),
    expiresAt: timestamp('expires_at', { withTimezone: true }),
  },
  (t) => [
    uniqueIndex('webhook_secrets_current_uq').on(t.tenantId, t.endpoint).where(sql`${t.expiresAt} is null`),
    index('webhook_secrets_tenant_idx').on(t.tenantId, t.endpoint, t.createdAt),
  ],
);

export const SWEEP_STATES = ['running', 'completed', 'canceled'] as const;
export type SweepState = (typeof SWEEP_STATES)[number];

/** A sweep: one pretrain job (and then one probe) per setting of a grid over a base spec (issue 12). */
export const sweeps = pgTable(
  'sweeps',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    tenantId: uuid('tenant_id').notNull().references(() => tenants.id, { onDelete: 'cascade' }),
    state: text('state').$type<SweepState>().notNull().default('running'),
    /** The request as validated: base spec (dataset pinned), grid, variants, seeds, probe, budget. */
    spec: jsonb('spec').notNull(),
    /** Why it ended when it did not just complete (canceled by the user, budget used up). */
    reason: text('reason'),
    idempotencyKey: text('idempotency_key'),
    requestHash: text('request_hash'),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [
    uniqueIndex('sweeps_tenant_idempotency_uq').on(t.tenantId, t.idempotencyKey),
    index('sweeps_tenant_created_idx').on(t.tenantId, t.createdAt, t.id),
    index('sweeps_running_idx').on(t.createdAt).where(sql`${t.state} = 'running'`),
    check('sweeps_state_ck', sql`${t.state} in ('running','completed','canceled')`),
  ],
);

/** One setting of a sweep: its values, its full pretrain spec, and the jobs submitted for it. */
export const sweepRuns = pgTable(
  'sweep_runs',
  {
    sweepId: uuid('sweep_id').notNull().references(() => sweeps.id, { onDelete: 'cascade' }),
    index: integer('index').notNull(),
    /** Dotted path → value for every grid/variant/seed field this setting sets. */
    setting: jsonb('setting').notNull(),
    spec: jsonb('spec').notNull(),
    pretrainJobId: uuid('pretrain_job_id').references(() => jobs.id, { onDelete: 'set null' }),
    probeJobId: uuid('probe_job_id').references(() => jobs.id, { onDelete: 'set null' }),
    /** Why a job for this setting could not be submitted (its dataset was deleted, say). */
    error: text('error'),
  },
  (t) => [primaryKey({ columns: [t.sweepId, t.index] })],
);

// --- named models (migration 0005) ---------------------------------------------------------------

/** A tenant-scoped name (`fmnist-backbone`) whose versions point at checkpoints of any of its jobs. */
export const models = pgTable(
  'models',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    tenantId: uuid('tenant_id').notNull().references(() => tenants.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    description: text('description'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('models_tenant_name_uq').on(t.tenantId, t.name)],
);

/**
 * One version of a model: a checkpoint version of a pretrain job, immutable, with its lineage as it
 * was when registered (parent weights, dataset version and manifest digest, spec, code version). The
 * checkpoint is pinned: retention never deletes a checkpoint a model version points at.
 */
export const modelVersions = pgTable(
  'model_versions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    modelId: uuid('model_id').notNull().references(() => models.id, { onDelete: 'cascade' }),
    version: integer('version').notNull(),
    checkpointId: uuid('checkpoint_id').notNull().references(() => checkpoints.id),
    jobId: uuid('job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    checkpointVersion: integer('checkpoint_version').notNull(),
    /** The model version whose weights the job started from (initFrom), when there is one. */
    parentVersionId: uuid('parent_version_id').references((): AnyPgColumn => modelVersions.id, { onDelete: 'set null' }),
    parentJobId: uuid('parent_job_id'),
    parentCheckpointVersion: integer('parent_checkpoint_version'),
    datasetVersionId: uuid('dataset_version_id'),
    /** `name@N` as the job resolved it (kept even if the dataset version is deleted later). */
    datasetRef: text('dataset_ref'),
    manifestSha256: text('manifest_sha256'),
    spec: jsonb('spec').notNull(),
    /** The runner's code version (package version, git commit) from the job's runtime. */
    codeVersion: jsonb('code_version'),
    /** The probe job whose gate promoted it; null when registered through the API. */
    createdByJobId: uuid('created_by_job_id'),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('model_versions_uq').on(t.modelId, t.version),
    uniqueIndex('model_versions_checkpoint_uq').on(t.modelId, t.checkpointId),
    index('model_versions_checkpoint_idx').on(t.checkpointId),
  ],
);

/** Movable names of model versions (`production`, `staging`, the user's own); `latest` is implicit. */
export const modelAliases = pgTable(
  'model_aliases',
  {
    modelId: uuid('model_id').notNull().references(() => models.id, { onDelete: 'cascade' }),
    alias: text('alias').notNull(),
    versionId: uuid('version_id').notNull().references(() => modelVersions.id, { onDelete: 'cascade' }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.modelId, t.alias] })],
);

/** Every gated promotion decided by a probe: pass or fail, each rule with both numbers. One per probe job. */
export const modelGateResults = pgTable(
  'model_gate_results',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    modelId: uuid('model_id').notNull().references(() => models.id, { onDelete: 'cascade' }),
    probeJobId: uuid('probe_job_id').notNull().references(() => jobs.id, { onDelete: 'cascade' }),
    alias: text('alias').notNull(),
    checkpointId: uuid('checkpoint_id').notNull(),
    evaluationId: uuid('evaluation_id').notNull(),
    passed: boolean('passed').notNull(),
    /** The alias moved to this candidate (false when it failed, or already pointed there). */
    moved: boolean('moved').notNull(),
    versionId: uuid('version_id'),
    previousVersionId: uuid('previous_version_id'),
    rules: jsonb('rules').notNull(),
    datasetVersionId: uuid('dataset_version_id'),
    protocol: jsonb('protocol'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('model_gate_results_probe_uq').on(t.probeJobId), index('model_gate_results_model_idx').on(t.modelId, t.createdAt)],
);
