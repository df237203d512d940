/**
 * Group commit for job submissions: submissions that arrive while earlier ones are being written
 * share one statement, one transaction and one WAL flush, instead of one each.
 *
 * Why: a submission's statement (db/jobQueries.ts insertJob) costs Postgres far more in what every
 * statement pays (protocol messages, executor start-up over a dozen plan nodes, locks on three
 * tables and their indexes, a snapshot, a commit and its flush) than in its rows, and the API pays
 * a query's worth of postgres.js work per statement too. Under load, many wait at once.
 *
 * How: at most `maxInFlight` statements run at a time, and another one starts only for more
 * waiting submissions than there are statements out. A submission that arrives when none is out is
 * written at once, alone, by insertJob itself (no timer, no added latency when requests come one at
 * a time); the ones that arrive meanwhile wait, and the next statement takes them all (up to
 * `maxBatch`), with the same shape over a JSON array of the jobs. So batches grow with the load.
 *
 * Each job's answer is the one insertJob gives (the same outcomes, read by submissionOutcome), and
 * what a submission guarantees holds per job: its job, first event and outbox rows commit together;
 * idempotency is the same unique index (a key repeated within one batch inserts once; the second
 * finds the first, as it would one statement later); each tenant-limit check reads the statement's
 * snapshot. So that a batch does not weaken the active-job limit (soft only by the requests in
 * flight), a batch holds at most one submission per tenant that counts its active jobs; the
 * others wait for the next. A batch that fails as a whole (a dataset version deleted meanwhile: a
 * foreign key) is written again one job at a time, so each gets its own answer.
 */
import type { Sql } from './client.js';
import { OUTBOX_TOPICS } from '../contracts/outbox.js';
import { insertJob, submissionOutcome, type InsertJobResult, type NewJob, type SubmissionRow } from './jobQueries.js';

export interface JobInsertBatchOptions {
  /** Statements writing submissions at once. Default 2: one on the wire while Postgres runs the other. */
  maxInFlight?: number;
  /** Most submissions in one statement. Default 64. */
  maxBatch?: number;
}

interface Waiting {
  job: NewJob;
  resolve: (result: InsertJobResult) => void;
  reject: (err: unknown) => void;
}

export class JobInsertBatcher {
  private waiting: Waiting[] = [];
  private inFlight = 0;
  private readonly maxInFlight: number;
  private readonly maxBatch: number;

  constructor(
    private readonly sql: Sql,
    o: JobInsertBatchOptions = {},
  ) {
    this.maxInFlight = o.maxInFlight ?? 2;
    this.maxBatch = o.maxBatch ?? 64;
  }

  insert(job: NewJob): Promise<InsertJobResult> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ job, resolve, reject });
      this.writeWaiting();
    });
  }

  private writeWaiting(): void {
    // Another statement only for more submissions than there are statements out: one that waits
    // alone beside a busy statement waits for it or for company, and batches grow with the load.
    while (this.inFlight < this.maxInFlight && this.waiting.length > this.inFlight) {
      const batch = this.nextBatch();
      this.inFlight++;
      void this.write(batch).finally(() => {
        this.inFlight--;
        this.writeWaiting();
      });
    }
  }

  /** The oldest waiting submissions, up to maxBatch, with at most one that counts per tenant. */
  private nextBatch(): Waiting[] {
    if (this.waiting.length === 1) return this.waiting.splice(0, 1);
    const batch: Waiting[] = [];
    const rest: Waiting[] = [];
    const counting = new Set<string>();
    for (const w of this.waiting) {
      const counts = w.job.maxActiveJobs !== null;
      if (batch.length >= this.maxBatch || (counts && counting.has(w.job.tenantId))) {
        rest.push(w);
        continue;
      }
      if (counts) counting.add(w.job.tenantId);
      batch.push(w);
    }
    this.waiting = rest;
    return batch;
  }

  private async write(batch: Waiting[]): Promise<void> {
    if (batch.length === 1) return settle(batch[0]!, () => insertJob(this.sql, batch[0]!.job));
    let rows: SubmissionRow[];
    try {
      rows = await insertJobBatch(this.sql, batch.map((w) => w.job));
    } catch {
      // One job spoiled the statement for all: each alone gets its own answer (or its own error).
      await Promise.all(batch.map((w) => settle(w, () => insertJob(this.sql, w.job))));
      return;
    }
    await Promise.all(batch.map((w, i) => settle(w, () => submissionOutcome(this.sql, w.job, rows[i]!))));
  }
}

async function settle(w: Waiting, outcome: () => Promise<InsertJobResult>): Promise<void> {
  try {
    w.resolve(await outcome());
  } catch (err) {
    w.reject(err);
  }
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
 * insertJob's statement for many jobs: one row of answer per job, in the order given. Each job's
 * dataset, usage and insert are insertJob's, row by row (a lateral join per job instead of a CTE).
 * Timestamps are each row's own clock, not the transaction's start: jobs listed newest first come
 * in the order they were submitted, as they do when each has a statement of its own.
 */
export async function insertJobBatch(sql: Sql, jobs: NewJob[]): Promise<SubmissionRow[]> {
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
             case when r.max_active_jobs is not null then
               (select count(*)::int from jobs a where a.tenant_id = r.tenant_id and a.state in ('queued', 'requeued', 'running', 'canceling'))
             end as active_jobs,
             case when r.max_stored_bytes is not null then
               coalesce((select u.stored_bytes from tenant_usage u where u.tenant_id = r.tenant_id), 0::bigint)
             end as stored_bytes
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
