/** Sweeps and their runs (issue 12): insert idempotently, read with the state of every job they submitted. */
import type { Sql } from './client.js';
import type { SweepState } from './schema.js';

export interface SweepRow {
  id: string;
  tenantId: string;
  state: SweepState;
  spec: Record<string, any>;
  reason: string | null;
  idempotencyKey: string | null;
  requestHash: string | null;
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

export interface NewSweepRun {
  index: number;
  setting: Record<string, unknown>;
  spec: Record<string, unknown>;
}

/** A job of a run, as much of it as a results table needs. */
export interface RunJob {
  id: string;
  state: string;
  result: Record<string, any> | null;
  error: string | null;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface SweepRunState {
  index: number;
  setting: Record<string, unknown>;
  spec: Record<string, any>;
  error: string | null;
  pretrain: (RunJob & { spikes: number }) | null;
  probe: RunJob | null;
  /** The probe's evaluation row (linear top-1/top-5 and details), once stored. */
  evaluation: {
    kind: string;
    top1: number;
    top5: number | null;
    /** The model's kNN top-1 and every subject's figures (model, random_init, raw_pixels), when the probe measured them. */
    knnTop1?: number | null;
    subjects?: Record<string, any> | null;
    details: Record<string, any> | null;
  } | null;
}

const date = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string));

function sweepFromRow(r: Record<string, any>): SweepRow {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    state: r.state,
    spec: r.spec,
    reason: r.reason,
    idempotencyKey: r.idempotency_key,
    requestHash: r.request_hash,
    createdAt: date(r.created_at)!,
    updatedAt: date(r.updated_at)!,
    finishedAt: date(r.finished_at),
  };
}

/** Inserts the sweep and its runs in one transaction; an Idempotency-Key seen before returns that sweep instead. */
export async function insertSweep(
  sql: Sql,
  s: { id: string; tenantId: string; spec: Record<string, unknown>; idempotencyKey: string | null; requestHash: string | null; runs: NewSweepRun[] },
): Promise<{ outcome: 'created' | 'existing'; sweep: SweepRow }> {
  return sql.begin(async (tx) => {
    const [row] = await tx`
      insert into sweeps (id, tenant_id, spec, idempotency_key, request_hash)
      values (${s.id}, ${s.tenantId}, ${JSON.stringify(s.spec)}::jsonb, ${s.idempotencyKey}, ${s.requestHash})
      on conflict (tenant_id, idempotency_key) do nothing
      returning *`;
    if (!row) {
      const [existing] = await tx`select * from sweeps where tenant_id = ${s.tenantId} and idempotency_key = ${s.idempotencyKey}`;
      return { outcome: 'existing' as const, sweep: sweepFromRow(existing!) };
    }
    for (const run of s.runs) {
      await tx`insert into sweep_runs (sweep_id, index, setting, spec) values (${s.id}, ${run.index}, ${JSON.stringify(run.setting)}::jsonb, ${JSON.stringify(run.spec)}::jsonb)`;
    }
    return { outcome: 'created' as const, sweep: sweepFromRow(row) };
  }) as Promise<{ outcome: 'created' | 'existing'; sweep: SweepRow }>;
}

export async function getTenantSweep(sql: Sql, tenantId: string, id: string): Promise<SweepRow | undefined> {
  const [row] = await sql`select * from sweeps where id = ${id} and tenant_id = ${tenantId}`;
  return row && sweepFromRow(row);
}

export async function getSweep(sql: Sql, id: string): Promise<SweepRow | undefined> {
  const [row] = await sql`select * from sweeps where id = ${id}`;
  return row && sweepFromRow(row);
}

export async function listTenantSweeps(sql: Sql, tenantId: string, limit: number): Promise<SweepRow[]> {
  const rows = await sql`select * from sweeps where tenant_id = ${tenantId} order by created_at desc, id desc limit ${limit}`;
  return rows.map(sweepFromRow);
}

export async function runningSweepIds(sql: Sql): Promise<string[]> {
  const rows = await sql`select id from sweeps where state = 'running' order by created_at`;
  return rows.map((r) => r.id as string);
}

const jobJson = (prefix: string) => `case when ${prefix}.id is null then null else json_build_object(
  'id', ${prefix}.id, 'state', ${prefix}.state, 'result', ${prefix}.result, 'error', ${prefix}.error,
  'startedAt', ${prefix}.started_at, 'finishedAt', ${prefix}.finished_at) end`;

/** Every run of a sweep in order, with its jobs' states, the pretrain job's spike count and the probe's evaluation. */
export async function sweepRunStates(sql: Sql, sweepId: string): Promise<SweepRunState[]> {
  const rows = await sql`
    select r.index, r.setting, r.spec, r.error,
           ${sql.unsafe(jobJson('p'))} as pretrain,
           (select count(*)::int from job_events e where e.job_id = p.id and e.kind = 'spike') as spikes,
           ${sql.unsafe(jobJson('q'))} as probe,
           (select json_build_object('kind', ev.kind, 'top1', ev.top1, 'top5', ev.top5, 'knnTop1', ev.knn_top1, 'subjects', ev.subjects, 'details', ev.details)
              from evaluations ev where ev.job_id = q.id limit 1) as evaluation
    from sweep_runs r
    left join jobs p on p.id = r.pretrain_job_id
    left join jobs q on q.id = r.probe_job_id
    where r.sweep_id = ${sweepId}
    order by r.index`;
  const job = (j: any): RunJob | null =>
    j && { id: j.id, state: j.state, result: j.result, error: j.error, startedAt: date(j.startedAt), finishedAt: date(j.finishedAt) };
  return rows.map((r) => ({
    index: r.index,
    setting: r.setting,
    spec: r.spec,
    error: r.error,
    pretrain: r.pretrain ? { ...job(r.pretrain)!, spikes: r.spikes } : null,
    probe: job(r.probe),
    evaluation: r.evaluation,
  }));
}

export async function setRunJob(sql: Sql, sweepId: string, index: number, kind: 'pretrain' | 'probe', jobId: string): Promise<void> {
  if (kind === 'pretrain') await sql`update sweep_runs set pretrain_job_id = ${jobId} where sweep_id = ${sweepId} and index = ${index}`;
  else await sql`update sweep_runs set probe_job_id = ${jobId} where sweep_id = ${sweepId} and index = ${index}`;
}

export async function setRunError(sql: Sql, sweepId: string, index: number, error: string): Promise<void> {
  await sql`update sweep_runs set error = ${error} where sweep_id = ${sweepId} and index = ${index}`;
}

/** running → completed/canceled; null when the sweep was not running any more. */
export async function finishSweep(sql: Sql, id: string, state: Exclude<SweepState, 'running'>, reason: string | null): Promise<SweepRow | null> {
  const [row] = await sql`
    update sweeps set state = ${state}, reason = ${reason}, finished_at = now(), updated_at = now()
    where id = ${id} and state = 'running' returning *`;
  return row ? sweepFromRow(row) : null;
}

/** Minutes the sweep's jobs (pretrain and probe) have run so far, the running ones up to now. */
export async function sweepMinutesUsed(sql: Sql, sweepId: string): Promise<number> {
  const [row] = await sql`
    select coalesce(sum(extract(epoch from coalesce(j.finished_at, now()) - j.started_at)), 0)::float8 / 60 as minutes
    from sweep_runs r join jobs j on j.id in (r.pretrain_job_id, r.probe_job_id)
    where r.sweep_id = ${sweepId} and j.started_at is not null`;
  return row!.minutes as number;
}

/**
 * Runs `fn` while holding the sweep's advisory lock (one advancer or canceler at a time, across
 * processes); `wait` false gives up at once when another holds it and returns undefined.
 */
export async function withSweepLock<T>(sql: Sql, sweepId: string, wait: boolean, fn: () => Promise<T>): Promise<T | undefined> {
  return sql.begin(async (tx) => {
    if (wait) await tx`select pg_advisory_xact_lock(hashtext(${'sweep:' + sweepId}))`;
    else {
      const [r] = await tx`select pg_try_advisory_xact_lock(hashtext(${'sweep:' + sweepId})) as locked`;
      if (!r!.locked) return undefined;
    }
    return fn();
  }) as Promise<T | undefined>;
}
