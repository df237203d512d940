/**
 * The run bookkeeping in db/runs.ts against a real Postgres: `best` moves only when a probe beats
 * it, retention never deletes a version that an alias or an evaluation points at, and the running
 * time a max runtime is held to is summed over attempts; a superseded attempt cannot register a checkpoint.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createHarness, forceState, pretrain, seedCheckpoint, seedReadyDataset, type Harness } from '../api/harness.js';
import { checkpointsBeyondRetention, deleteCheckpointRows, listCheckpoints, recordEvaluation, registerCheckpoint, resolveCheckpoint, runningSecondsSoFar, setAlias, SupersededError } from '../../../db/runs.js';

let h: Harness;

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
});
after(async () => h.close());

/** A running pretrain job with checkpoint versions 1..n (ids by version). */
async function jobWithVersions(n: number): Promise<{ jobId: string; ids: Record<number, string> }> {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') });
  assert.equal(res.status, 201);
  const jobId = ((await res.json()) as any).id as string;
  await forceState(h, jobId, 'running');
  const ids: Record<number, string> = {};
  for (let v = 1; v <= n; v++) ids[v] = (await seedCheckpoint(h, h.tenantA, jobId, v, { 'state.safetensors': randomBytes(16) })).id;
  return { jobId, ids };
}

async function probeJob(sourceJobId: string, version: number): Promise<string> {
  const res = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: { job: sourceJobId, checkpoint: `v${version}` }, epochs: 1 } });
  assert.equal(res.status, 201, await res.clone().text());
  const id = ((await res.json()) as any).id as string;
  // Running as its first attempt, as the runner that records its result has it.
  await h.database.sql`update jobs set state = 'running', attempt = 1 where id = ${id}`;
  return id;
}

describe('best', () => {
  test('moves only when a probe beats the best top-1 (a tie or a worse one leaves it)', async () => {
    const { jobId, ids } = await jobWithVersions(4);
    const evaluate = async (version: number, top1: number) => {
      const probeJobId = await probeJob(jobId, version);
      const r = await recordEvaluation(h.database.db, { probeJobId, sourceJobId: jobId, checkpointId: ids[version]!, kind: 'linear', top1, top5: null, details: {}, attempt: 1 });
      return { moved: r.movedBest, previous: r.previousBestTop1, best: (await resolveCheckpoint(h.database.db, jobId, 'best'))?.version };
    };
    assert.deepEqual(await evaluate(1, 0.5), { moved: true, previous: null, best: 1 }, 'the first evaluation makes its version best');
    assert.deepEqual(await evaluate(2, 0.4), { moved: false, previous: 0.5, best: 1 }, 'worse');
    assert.deepEqual(await evaluate(3, 0.5), { moved: false, previous: 0.5, best: 1 }, 'a tie is no improvement');
    assert.deepEqual(await evaluate(4, 0.6), { moved: true, previous: 0.5, best: 4 }, 'better');
    assert.deepEqual(await evaluate(2, 0.55), { moved: false, previous: 0.6, best: 4 }, 'better than before but not than the best');
    const announced = await h.database.sql`
      select payload->'data'->>'movedBest' as moved from outbox
      where topic = 'job.event' and payload->>'event' = 'evaluation.completed' and payload->'data'->>'sourceJobId' = ${jobId} order by id`;
    assert.deepEqual(announced.map((r) => r.moved), ['true', 'false', 'false', 'true', 'false'], 'each result is announced with whether best moved');
  });
});

describe('retention', () => {
  test('keeps the newest versions and every version an alias or an evaluation points at', async () => {
    const { jobId, ids } = await jobWithVersions(6);
    await setAlias(h.database.db, jobId, 'production', ids[1]!); // a user's alias
    await setAlias(h.database.db, jobId, 'best', ids[2]!);
    const probeJobId = await probeJob(jobId, 3);
    await h.database.sql`insert into evaluations (job_id, checkpoint_id, kind, top1, top5) values (${probeJobId}, ${ids[3]!}, 'linear', 0.3, 0.9)`;
    const beyond = await checkpointsBeyondRetention(h.database.db, jobId, 2);
    assert.deepEqual(beyond.map((c) => c.version).sort(), [4], 'v5, v6 are the newest two; v1 aliased, v2 best, v3 evaluated');
    // The delete itself re-checks: versions that became pinned since the listing stay.
    const deleted = await deleteCheckpointRows(h.database.db, [ids[1]!, ids[2]!, ids[3]!, ids[4]!]);
    assert.deepEqual(deleted, [ids[4]]);
    assert.deepEqual((await listCheckpoints(h.database.db, jobId)).map((c) => c.version), [6, 5, 3, 2, 1]);
  });
});

describe('retention and unfinished jobs', () => {
  test('a version a queued probe or retrain pinned is kept until that job finishes', async () => {
    const { jobId, ids } = await jobWithVersions(5);
    // A probe of v1, queued (no evaluation yet), and a retrain from v2, queued.
    const probe = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: { job: jobId, checkpoint: 'v1' }, epochs: 1 } });
    assert.equal(probe.status, 201, await probe.clone().text());
    const probeId = ((await probe.json()) as any).id as string;
    const [source] = await h.database.sql`select spec from jobs where id = ${jobId}`;
    const retrain = await h.request('POST', '/v1/jobs', { body: { ...source!.spec, initFrom: { job: jobId, checkpoint: 'v2' }, keepCheckpoints: 3 } });
    assert.equal(retrain.status, 201, await retrain.clone().text());
    const retrainId = ((await retrain.json()) as any).id as string;
    // Aliases would protect them too: take them off the old versions so that only the jobs pin them.
    await h.database.sql`delete from checkpoint_aliases where job_id = ${jobId} and checkpoint_id = any(${[ids[1]!, ids[2]!, ids[3]!]}::uuid[])`;

    assert.deepEqual((await checkpointsBeyondRetention(h.database.db, jobId, 2)).map((c) => c.version), [3], 'v4, v5 newest; v1 and v2 pinned');
    assert.deepEqual(await deleteCheckpointRows(h.database.db, [ids[1]!, ids[2]!]), [], 'the delete re-checks the pins');

    await h.database.sql`update jobs set state = 'succeeded' where id = ${probeId}`;
    await h.database.sql`update jobs set state = 'canceled' where id = ${retrainId}`;
    assert.deepEqual((await checkpointsBeyondRetention(h.database.db, jobId, 2)).map((c) => c.version).sort(), [1, 2, 3], 'finished jobs pin nothing');
  });
});

describe('max runtime', () => {
  test('the running time is summed over every attempt; queued and requeued time does not count', async () => {
    const { jobId } = await jobWithVersions(0);
    // Events at fixed times an hour ago: running 30 s, requeued 70 s, running 20 s, then still running since 40 s ago.
    const t0 = Date.now() - 3600_000;
    const at = (s: number) => new Date(t0 + s * 1000).toISOString();
    await h.database.sql`delete from job_events where job_id = ${jobId}`;
    const event = (s: number, to: string) => h.database.sql`insert into job_events (job_id, at, kind, to_state) values (${jobId}, ${at(s)}::timestamptz, 'state', ${to})`;
    await event(0, 'queued');
    await event(10, 'running');
    await event(40, 'requeued');
    await event(110, 'running');
    await event(130, 'requeued');
    assert.equal(await runningSecondsSoFar(h.database.db, jobId), 50);
    await h.database.sql`insert into job_events (job_id, at, kind, to_state) values (${jobId}, now() - interval '40 seconds', 'state', 'running')`;
    const sofar = await runningSecondsSoFar(h.database.db, jobId);
    assert.ok(sofar >= 90, `an attempt still running counts up to now (${sofar} s)`);
  });
});

describe('fencing', () => {
  test('a runner whose attempt was superseded (lost lock) cannot register a checkpoint; the current attempt can', async () => {
    const { jobId } = await jobWithVersions(0);
    await h.database.sql`update jobs set attempt = 2 where id = ${jobId}`; // attempt 2 took over the job
    const checkpoint = (attempt: number, version: number) =>
      registerCheckpoint(h.database.db, { jobId, attempt, version, step: version * 10, s3Prefix: `checkpoints/x/${jobId}/v${version}/`, files: {}, bytes: 1, sha256: 'ab' });
    await assert.rejects(checkpoint(1, 1), (err: Error) => err instanceof SupersededError && /attempt 1 .* superseded by attempt 2/.test(err.message));
    const nothing = await h.database.sql`
      select (select count(*)::int from checkpoints where job_id = ${jobId}) as versions,
             (select count(*)::int from outbox where payload->>'jobId' = ${jobId} and payload->>'event' = 'checkpoint.created') as announced`;
    assert.deepEqual({ ...nothing[0] }, { versions: 0, announced: 0 }, 'the zombie wrote nothing');
    const row = await checkpoint(2, 1);
    assert.equal(row.version, 1);
    assert.equal((await resolveCheckpoint(h.database.db, jobId, 'latest'))?.id, row.id);
    await assert.rejects(checkpoint(2, 1), SupersededError, 'a version number is taken once');
  });
});
