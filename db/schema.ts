/**
 * The metadata of Momentum. Postgres is the source of truth for every job, dataset and checkpoint;
 * Redis only delivers work. States are text with CHECK constraints (not enums) so that adding one
 * is a plain migration.
 */
import { sql } from 'drizzle-orm';
import {
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
  },
  (t) => [
    uniqueIndex('dataset_versions_uq').on(t.datasetId, t.version),
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
    index('jobs_state_idx').on(t.state),
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
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('evaluations_job_uq').on(t.jobId), index('evaluations_checkpoint_idx').on(t.checkpointId)],
);

/** Transactional outbox: written in the same transaction as the row it announces, then dispatched. */
export const outbox = pgTable(
  'outbox',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    topic: text('topic').notNull(),
    payload: jsonb('payload').notNull(),
    createdAt: createdAt(),
    dispatchedAt: timestamp('dispatched_at', { withTimezone: true }),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    /** A failed row is not claimed again before this (exponential, capped, jittered backoff). */
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }),
  },
  (t) => [index('outbox_pending_idx').on(t.id).where(sql`${t.dispatchedAt} is null`)],
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
  },
  (t) => [
    index('webhook_deliveries_job_idx').on(t.jobId),
    // The reconciler looks for unfinished deliveries by age every pass; keep that off a full scan.
    index('webhook_deliveries_unfinished_idx').on(t.createdAt).where(sql`${t.status} in ('pending','retrying')`),
  ],
);
