/**
 * Group commit of submissions (db/jobInsertBatch.ts): submissions that wait for a free statement
 * share the next one, and each still gets the answer insertJob alone would give it. Which
 * submissions shared a transaction is read from Postgres itself: rows one transaction inserted
 * carry the same `xmin`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createHarness, pretrain, seedReadyDataset, type Harness } from '../api/harness.js';
import { getTenantJob, insertJobs, type InsertJobResult, type NewJob } from '../../../db/jobQueries.js';
import { JobInsertBatcher } from '../../../db/jobInsertBatch.js';
import { connectDatabase } from '../../../db/client.js';
import { jobJson } from '../../../api/serialize.js';

let h: Harness;

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 2);
  await seedReadyDataset(h, h.tenantB, 'fmnist', 1);
});
after(async () => h.close());

function newJob(o: Partial<NewJob> = {}): NewJob {
  return {
    id: randomUUID(),
    tenantId: h.tenantA,
    type: 'pretrain',
    specJson: JSON.stringify({ type: 'pretrain', dataset: 'fmnist@1', labels: { n: randomUUID() } }),
    dataset: { kind: 'ref', name: 'fmnist', version: 1 },
    idempotencyKey: null,
    requestHash: null,
    parentJobId: null,
    announceQueued: false,
    maxActiveJobs: null,
    maxStoredBytes: null,
    ...o,
  };
}

/** With one statement at a time, the first submission goes alone and the rest wait: they are the next batch. */
function submitTogether(jobs: NewJob[]): Promise<PromiseSettledResult<InsertJobResult>[]> {
  const batcher = new JobInsertBatcher(h.database.sql, { maxInFlight: 1 });
  return Promise.allSettled(jobs.map((j) => batcher.insert(j)));
}

async function transactionsOf(ids: string[]): Promise<Map<string, string>> {
  const rows = await h.database.sql<{ id: string; xmin: string }[]>`select id, xmin::text from jobs where id = any(${ids}::uuid[])`;
  return new Map(rows.map((r) => [r.id, r.xmin]));
}

const created = (r: PromiseSettledResult<InsertJobResult>) => {
  assert.equal(r.status, 'fulfilled', r.status === 'rejected' ? String(r.reason) : '');
  return (r as PromiseFulfilledResult<InsertJobResult>).value;
};

describe('submissions that wait share one statement', () => {
  test('each is created with its own job, first event and outbox rows, and answered as insertJob answers', async () => {
    const jobs = [newJob(), ...Array.from({ length: 5 }, (_, i) => newJob({ announceQueued: i % 2 === 0, dataset: { kind: 'ref', name: 'fmnist', version: 'latest' } }))];
    const results = (await submitTogether(jobs)).map(created);
    const xmins = await transactionsOf(jobs.map((j) => j.id));
    assert.equal(new Set(jobs.slice(1).map((j) => xmins.get(j.id))).size, 1, 'the five that waited were written by one transaction');
    assert.notEqual(xmins.get(jobs[0]!.id), xmins.get(jobs[1]!.id), 'the first went alone');
    for (const [i, job] of jobs.entries()) {
      const r = results[i]!;
      assert.equal(r.outcome, 'created');
      if (r.outcome !== 'created') continue;
      assert.equal(r.jobId, job.id);
      const row = await getTenantJob(h.database.sql, h.tenantA, job.id);
      assert.deepEqual(JSON.parse(r.apiJson), JSON.parse(JSON.stringify(jobJson(row!))));
      assert.equal((row!.spec as { dataset: string }).dataset, i === 0 ? 'fmnist@1' : 'fmnist@2', 'the reference is resolved per job');
      const events = await h.database.sql`select to_state, reason from job_events where job_id = ${job.id}`;
      assert.deepEqual([...events], [{ to_state: 'queued', reason: 'submitted' }]);
      const outbox = await h.database.sql<{ topic: string; payload: Record<string, unknown> }[]>`select topic, payload from outbox where payload->>'jobId' = ${job.id} order by id`;
      assert.deepEqual(
        outbox.map((o) => o.topic),
        job.announceQueued ? ['job.enqueue', 'job.event'] : ['job.enqueue'],
      );
      assert.deepEqual(outbox[0]!.payload, { jobId: job.id, tenantId: h.tenantA, type: 'pretrain' });
    }
    // Created in submission order (each row's own clock, not the transaction's): a listing keeps it.
    const byCreation = await h.database.sql<{ id: string }[]>`select id from jobs where id = any(${jobs.map((j) => j.id)}::uuid[]) order by created_at, id`;
    assert.deepEqual(
      byCreation.map((c) => c.id),
      jobs.map((j) => j.id),
    );
    // Outbox rows in submission order: the dispatcher hands jobs to the queue in the order they came.
    const order = await h.database.sql<{ job_id: string }[]>`select payload->>'jobId' as job_id from outbox where topic = 'job.enqueue' and payload->>'jobId' = any(${jobs.map((j) => j.id)}) order by id`;
    assert.deepEqual(
      order.map((o) => o.job_id),
      jobs.map((j) => j.id),
    );
  });

  test('every outcome insertJob knows, side by side in one batch', async () => {
    const key = randomUUID();
    const first = newJob({ idempotencyKey: key, requestHash: 'same' });
    const jobs = [
      newJob(), // alone: the batch below is the rest
      first,
      newJob({ idempotencyKey: key, requestHash: 'same' }), // the same request again: the first's job
      newJob({ idempotencyKey: key, requestHash: 'other' }), // the key with another body: the first's job, to refuse
      newJob({ dataset: { kind: 'ref', name: 'nope', version: 'latest' } }),
      newJob({ maxStoredBytes: 0 }),
      newJob({ tenantId: h.tenantB, maxActiveJobs: 0 }),
      newJob({ tenantId: h.tenantB }),
    ];
    const results = (await submitTogether(jobs)).map(created);
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['created', 'created', 'existing', 'existing', 'dataset_not_found', 'storage_limit', 'active_job_limit', 'created'],
    );
    for (const r of [results[2]!, results[3]!]) assert.equal(r.outcome === 'existing' && r.job.id, first.id);
    assert.equal(results[3]!.outcome === 'existing' && results[3]!.job.requestHash, 'same', 'the caller sees the hash differs and refuses');
    assert.deepEqual(results[5]!.usage, { activeJobs: null, storedBytes: 0 });
    const xmins = await transactionsOf(jobs.map((j) => j.id));
    assert.equal(xmins.get(first.id), xmins.get(jobs[7]!.id), 'created in one transaction');
    assert.equal(xmins.size, 3, 'only the created jobs exist');
  });

  test('a batch that fails as a whole is written again one job at a time: only the bad one fails', async () => {
    const gone = newJob({ type: 'probe', dataset: { kind: 'resolved', versionId: randomUUID(), ref: 'fmnist@9' } });
    const jobs = [newJob(), newJob(), gone, newJob()];
    const results = await submitTogether(jobs);
    assert.equal(results[2]!.status, 'rejected');
    assert.equal((results[2] as PromiseRejectedResult).reason.code, '23503', 'the foreign key of the missing dataset version');
    for (const i of [0, 1, 3]) assert.equal(created(results[i]!).outcome, 'created');
    const xmins = await transactionsOf(jobs.map((j) => j.id));
    assert.notEqual(xmins.get(jobs[1]!.id), xmins.get(jobs[3]!.id), 'written apart after the batch failed');
  });

  test('at most one submission per tenant that counts its active jobs in a batch', async () => {
    const counting = Array.from({ length: 4 }, () => newJob({ maxActiveJobs: 1_000_000 }));
    const other = newJob({ tenantId: h.tenantB, maxActiveJobs: 1_000_000 });
    const free = newJob();
    const jobs = [newJob(), ...counting, other, free];
    for (const r of await submitTogether(jobs)) assert.equal(created(r).outcome, 'created');
    const xmins = await transactionsOf(jobs.map((j) => j.id));
    assert.equal(new Set(counting.map((j) => xmins.get(j.id))).size, 4, "each of the tenant's counting submissions in its own statement");
    assert.equal(xmins.get(other.id), xmins.get(counting[0]!.id), "another tenant's rides along");
    assert.equal(xmins.get(free.id), xmins.get(counting[0]!.id), 'so does one that does not count');
  });

  test('the batch statement settles on a generic plan', async () => {
    const database = connectDatabase(h.database.url, { max: 1 });
    try {
      for (let i = 0; i < 12; i++) await insertJobs(database.sql, [newJob(), newJob({ maxActiveJobs: 1_000_000, maxStoredBytes: 1e15 })]);
      const [plan] = await database.sql<{ custom_plans: number; generic_plans: number }[]>`
        select custom_plans::int, generic_plans::int from pg_prepared_statements where statement like '%jsonb_to_recordset%' and statement not like '%pg_prepared_statements%'`;
      assert.ok(plan!.custom_plans <= 5, `planned anew at ${plan!.custom_plans} of 12 executions`);
      assert.equal(plan!.custom_plans + plan!.generic_plans, 12);
    } finally {
      await database.close();
    }
  });
});

describe('through the API, with one submission statement at a time', () => {
  let limited: Harness;
  before(async () => {
    // Every submission counts (quotaCountMs 0), and all but the first wait: the limit must hold exactly.
    limited = await createHarness({ TENANT_MAX_ACTIVE_JOBS: 3, API_SUBMIT_STATEMENTS: 1 }, { quotaCountMs: 0 });
    await seedReadyDataset(limited, limited.tenantA, 'fmnist', 1);
  });
  after(async () => limited.close());

  test('concurrent submissions never pass the active-job limit', async () => {
    const statuses = await Promise.all(Array.from({ length: 10 }, () => limited.request('POST', '/v1/jobs', { body: pretrain('fmnist') }).then((r) => r.status)));
    assert.deepEqual(
      statuses.toSorted((a, b) => a - b),
      [201, 201, 201, 429, 429, 429, 429, 429, 429, 429],
    );
  });

  test('one Idempotency-Key sent concurrently makes one job; a different body under it is a 409', async () => {
    const key = randomUUID();
    const body = pretrain('fmnist', { labels: { k: key } });
    const other = { ...body, epochs: 3 };
    await limited.database.sql`update jobs set state = 'canceled'`; // room under the limit
    const bodies = [body, body, body, other];
    const answers = await Promise.all(bodies.map((b) => limited.request('POST', '/v1/jobs', { body: b, headers: { 'idempotency-key': key } })));
    const [job] = await limited.database.sql<{ id: string; epochs: number }[]>`
      select id, (spec->>'epochs')::int as epochs from jobs where idempotency_key = ${key}`;
    // Whichever body came first made the job: its copies are 201 (one new, the rest replayed), the other body 409.
    const winner = job!.epochs === 3 ? other : body;
    assert.deepEqual(
      answers.map((a) => a.status),
      bodies.map((b) => (b === winner ? 201 : 409)),
    );
    const won = answers.filter((a) => a.status === 201);
    for (const a of won) assert.equal(((await a.json()) as { id: string }).id, job!.id);
    assert.deepEqual(
      won.map((a) => a.headers.get('idempotent-replayed')).toSorted(),
      [null, ...Array(won.length - 1).fill('true')],
    );
  });
});
