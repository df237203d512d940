/**
 * Job reads and the submission write, always scoped to a tenant. Submission is one SQL statement:
 * resolving the dataset reference, checking the tenant's limits, inserting the job (idempotently),
 * its first event and its outbox rows happen in a single round-trip that commits or fails as a whole.
 */
import { and, desc, eq, inArray, lt, or, sql as dsql, type SQL } from 'drizzle-orm';
import type { Db, Sql } from './client.js';
import type { JobRow } from './jobs.js';
import { jobs, type JobState, type JobType } from './schema.js';
import { OUTBOX_TOPICS } from '../contracts/outbox.js';
import { activeJobsSql, storedBytesSql } from './quotas.js';

export type { JobRow };

/** The dataset of a new job: a reference resolved inside the insert, or a version already resolved. */
export type JobDatasetInput =
  | { kind: 'ref'; name: string; version: number | 'latest' }
  | { kind: 'resolved'; versionId: string; ref: string };

export interface NewJob {
  id: string;
  tenantId: string;
  type: JobType;
  /** The spec as JSON text (the submission may have written it already, for its idempotency hash). */
  specJson: string;
  dataset: JobDatasetInput;
  idempotencyKey: string | null;
  requestHash: string | null;
  parentJobId: string | null;
  /** Write the `job.queued` event to the outbox: only a job whose webhook wants it has a use for it. */
  announceQueued: boolean;
  /**
   * Tenant limits checked in the same statement: nothing is inserted unless the tenant has fewer
   * active jobs than `maxActiveJobs` and stores less than `maxStoredBytes`. Null skips that check.
   */
  maxActiveJobs: number | null;
  maxStoredBytes: number | null;
}

/** What the statement measured of the tenant (null: not measured). */
export interface TenantUsage {
  activeJobs: number | null;
  storedBytes: number | null;
}

export type InsertJobResult =
  /** `apiJson`: the new job as the API answers it, built by Postgres as text (`job_api_json`, migration 0015). */
  | { outcome: 'created'; jobId: string; apiJson: string; usage: TenantUsage }
  /** The Idempotency-Key was used before: the earlier job (compare its requestHash). */
  | { outcome: 'existing'; job: JobRow; usage: TenantUsage }
  | { outcome: 'dataset_not_found'; usage: TenantUsage }
  | { outcome: 'active_job_limit'; usage: TenantUsage & { activeJobs: number } }
  | { outcome: 'storage_limit'; usage: TenantUsage & { storedBytes: number } };

/**
 * Note: drizzle makes the shared postgres.js client pass json/jsonb and timestamps through untouched,
 * so raw queries here send JSON as strings (`::jsonb`) and read rows as `row_to_json`.
 */
/** Maps the snake_case JSON of `row_to_json(jobs)` onto drizzle's row type. */
export function jobFromJson(r: Record<string, any>): JobRow {
  const date = (v: unknown) => (v == null ? null : new Date(v as string));
  return {
    id: r.id,
    tenantId: r.tenant_id,
    type: r.type,
    state: r.state,
    spec: r.spec,
    attempt: r.attempt,
    attemptBase: r.attempt_base ?? 0,
    idempotencyKey: r.idempotency_key,
    requestHash: r.request_hash,
    cancelRequested: r.cancel_requested,
    parentJobId: r.parent_job_id,
    datasetVersionId: r.dataset_version_id,
    progress: r.progress,
    runtime: r.runtime,
    result: r.result,
    error: r.error,
    createdAt: date(r.created_at)!,
    updatedAt: date(r.updated_at)!,
    startedAt: date(r.started_at),
    finishedAt: date(r.finished_at),
  };
}

/**
 * Inserts the job, its first event and its outbox rows in one statement, after resolving its dataset
 * and checking the tenant's limits in that statement's snapshot. When nothing was inserted the
 * answer says why, in this order: the Idempotency-Key was used before (the earlier job, whatever
 * the limits say now: a retry gets the answer the first request got), a limit, the dataset.
 */
export async function insertJob(sql: Sql, job: NewJob): Promise<InsertJobResult> {
  const [row] = await insertJobs(sql, [job]);
  return submissionOutcome(sql, job, row!);
}

/** A job as one element of the statement's JSON array; the spec is spliced in as the text it is. */
function jobElement(job: NewJob, n: number): string {
  const d = job.dataset;
  const fields = {
    n,
    id: job.id,
    tenant_id: job.tenantId,
    type: job.type,
    dataset_name: d.kind === 'ref' ? d.name : null,
    dataset_version: d.kind === 'ref' && d.version !== 'latest' ? d.version : null,
    version_id: d.kind === 'resolved' ? d.versionId : null,
    dataset_ref: d.kind === 'resolved' ? d.ref : null,
    idempotency_key: job.idempotencyKey,
    request_hash: job.requestHash,
    parent_job_id: job.parentJobId,
    announce_queued: job.announceQueued,
    max_active_jobs: job.maxActiveJobs,
    max_stored_bytes: job.maxStoredBytes,
  };
  return `{"spec":${job.specJson},${JSON.stringify(fields).slice(1)}`;
}

/**
 * The submission statement, for one job or many (db/jobInsertBatch.ts): each job's dataset resolved,
 * the tenant's limits read, and, when all hold, the job inserted (idempotently) with its first event
 * and outbox rows; one row of answer per job, in the order given. The jobs come as one JSON array,
 * so the statement's text is the same whatever they name or skip: one prepared statement, planned
 * once (a limit left out is null in the data, and a CASE on a column does not make Postgres plan
 * each execution anew, as a CASE on a parameter did). Timestamps are each row's own clock, not the
 * transaction's start: jobs listed newest first come in the order they were submitted.
 */
export async function insertJobs(sql: Sql, jobs: NewJob[]): Promise<SubmissionRow[]> {
  const input = `[${jobs.map(jobElement).join(',')}]`;
  const rows = await sql<(SubmissionRow & { n: number })[]>`
    with r as (
      select * from jsonb_to_recordset(${input}::jsonb) as r(
        n int, id uuid, tenant_id uuid, type text, spec jsonb, dataset_name text, dataset_version int, version_id uuid,
        dataset_ref text, idempotency_key text, request_hash text, parent_job_id uuid, announce_queued boolean,
        max_active_jobs int, max_stored_bytes bigint)
    ),
    rv as (
      select r.n, r.id, r.tenant_id, r.type, r.spec, r.idempotency_key, r.request_hash, r.parent_job_id, r.announce_queued,
             r.max_active_jobs, r.max_stored_bytes,
             coalesce(r.version_id, dv.id) as version_id, coalesce(r.dataset_ref, dv.ref) as dataset_ref,
             case when r.max_active_jobs is not null then ${activeJobsSql(sql, sql`r.tenant_id`)} end as active_jobs,
             case when r.max_stored_bytes is not null then ${storedBytesSql(sql, sql`r.tenant_id`)} end as stored_bytes
      from r left join lateral (
        select v.id, d.name || '@' || v.version as ref
        from dataset_versions v join datasets d on d.id = v.dataset_id
        where r.version_id is null and d.tenant_id = r.tenant_id and d.name = r.dataset_name and v.state = 'ready'
          and (r.dataset_version is null or v.version = r.dataset_version)
        order by v.version desc limit 1
      ) dv on true
    ),
    j as (
      insert into jobs (id, tenant_id, type, state, spec, idempotency_key, request_hash, parent_job_id, dataset_version_id, created_at, updated_at)
      select id, tenant_id, type, 'queued', jsonb_set(spec, '{dataset}', to_jsonb(dataset_ref)), idempotency_key, request_hash, parent_job_id, version_id,
             clock_timestamp(), clock_timestamp()
      from rv
      where version_id is not null
        and (active_jobs is null or active_jobs < max_active_jobs)
        and (stored_bytes is null or stored_bytes < max_stored_bytes)
      order by n
      on conflict (tenant_id, idempotency_key) do nothing
      returning *
    ),
    e as (
      insert into job_events (job_id, kind, from_state, to_state, attempt, reason)
      select id, 'state', null, 'queued', 0, 'submitted' from j
    ),
    o as (
      insert into outbox (topic, payload)
      select topic, payload from (
        select rv.n, 0 as k, ${OUTBOX_TOPICS.enqueue} as topic, jsonb_build_object('jobId', j.id, 'tenantId', j.tenant_id, 'type', j.type) as payload
        from j join rv on rv.id = j.id
        union all
        select rv.n, 1, ${OUTBOX_TOPICS.event}, jsonb_build_object('jobId', j.id, 'event', 'job.queued', 'at', now(), 'data', jsonb_build_object('reason', 'submitted', 'attempt', 0))
        from j join rv on rv.id = j.id where rv.announce_queued
      ) announced order by n, k
    )
    select rv.n, case when j.id is not null then job_api_json(j::jobs) end as job_json, rv.version_id is not null as dataset_found,
           rv.active_jobs, rv.stored_bytes::text as stored_bytes
    from rv left join j on j.id = rv.id
    order by rv.n`;
  return rows;
}

/** What the submission statement answers for one job. */
export interface SubmissionRow {
  job_json: string | null;
  dataset_found: boolean;
  active_jobs: number | null;
  stored_bytes: string | null;
}

/** The outcome of one job's submission from its row of the statement's answer (text of the answer: no parse, no re-serialisation). */
export async function submissionOutcome(sql: Sql, job: NewJob, row: SubmissionRow): Promise<InsertJobResult> {
  const usage: TenantUsage = { activeJobs: row.active_jobs, storedBytes: row.stored_bytes === null ? null : Number(row.stored_bytes) };
  // The answer as text: the route sends it as it is (no parse into a row, no re-serialisation).
  if (row.job_json !== null) return { outcome: 'created', jobId: job.id, apiJson: row.job_json, usage };
  // Nothing inserted. An Idempotency-Key seen before wins over everything else.
  if (job.idempotencyKey !== null) {
    const existing = await findJobByIdempotencyKey(sql, job.tenantId, job.idempotencyKey);
    if (existing) return { outcome: 'existing', job: existing, usage };
  }
  if (usage.activeJobs !== null && usage.activeJobs >= job.maxActiveJobs!) return { outcome: 'active_job_limit', usage: { ...usage, activeJobs: usage.activeJobs } };
  if (usage.storedBytes !== null && usage.storedBytes >= job.maxStoredBytes!) return { outcome: 'storage_limit', usage: { ...usage, storedBytes: usage.storedBytes } };
  if (!row.dataset_found) return { outcome: 'dataset_not_found', usage };
  // Resolved, under the limits, and yet nothing inserted and no earlier job: cannot happen (keys are never deleted alone).
  throw new Error('idempotency conflict without an existing job');
}

export async function findJobByIdempotencyKey(sql: Sql, tenantId: string, key: string): Promise<JobRow | undefined> {
  const [row] = await sql<{ job: Record<string, any> }[]>`
    select row_to_json(jobs) as job from jobs where tenant_id = ${tenantId} and idempotency_key = ${key}`;
  return row && jobFromJson(row.job);
}


/**
 * One job of the tenant as the API's JSON (GET /v1/jobs/{id}), or undefined: the UTF-8 bytes
 * Postgres sent (`.raw()`), answered as they are, with no decode into a string and encode back.
 */
export async function getTenantJobApiJson(sql: Sql, tenantId: string, jobId: string): Promise<Buffer | undefined> {
  const [row] = await sql`select job_api_json(j) from jobs j where j.id = ${jobId} and j.tenant_id = ${tenantId}`.raw();
  return row?.[0] ?? undefined;
}

/** One job of the tenant (prepared statement: this is the hot read path). */
export async function getTenantJob(sql: Sql, tenantId: string, jobId: string): Promise<JobRow | undefined> {
  const [row] = await sql<{ job: Record<string, any> }[]>`
    select row_to_json(jobs) as job from jobs where id = ${jobId} and tenant_id = ${tenantId}`;
  return row && jobFromJson(row.job);
}

export interface JobListFilter {
  states?: JobState[];
  types?: JobType[];
  /** Every label must match (jsonb containment on spec.labels). */
  labels?: Record<string, string>;
  /** Id of the last job of the previous page. */
  after?: string;
  limit: number;
}

/** Newest first; keyset pagination on (created_at, id), exact to the microsecond. */
export async function listTenantJobs(db: Db, tenantId: string, f: JobListFilter): Promise<{ rows: JobRow[]; hasMore: boolean }> {
  const where: (SQL | undefined)[] = [eq(jobs.tenantId, tenantId)];
  if (f.states?.length) where.push(inArray(jobs.state, f.states));
  if (f.types?.length) where.push(inArray(jobs.type, f.types));
  if (f.labels && Object.keys(f.labels).length) where.push(dsql`${jobs.spec} @> ${JSON.stringify({ labels: f.labels })}::jsonb`);
  if (f.after) {
    const cursor = dsql`(select created_at from jobs where id = ${f.after} and tenant_id = ${tenantId})`;
    where.push(or(lt(jobs.createdAt, cursor), and(eq(jobs.createdAt, cursor), lt(jobs.id, f.after))));
  }
  const rows = await db
    .select()
    .from(jobs)
    .where(and(...where))
    .orderBy(desc(jobs.createdAt), desc(jobs.id))
    .limit(f.limit + 1);
  return { rows: rows.slice(0, f.limit), hasMore: rows.length > f.limit };
}

/** Does the job exist for this tenant (for cursor validation)? */
export async function tenantJobExists(sql: Sql, tenantId: string, jobId: string): Promise<boolean> {
  const [row] = await sql`select 1 from jobs where id = ${jobId} and tenant_id = ${tenantId}`;
  return Boolean(row);
}
