/**
 * A zombie attempt (a runner that lost its lock and keeps running) against the attempt that took
 * over: real Postgres and S3; the zombie's upload is held at a gate so that the takeover happens
 * exactly between its fence check and its upload, the interleaving that used to corrupt a version.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHarness, pretrain, seedReadyDataset, type Harness } from '../api/harness.js';
import { CheckpointStore, ALL_CHECKPOINT_FILES } from '../../../runner/supervisor/checkpointStore.js';
import { MetricsWriter } from '../../../runner/supervisor/metricsWriter.js';
import { Storage } from '../../../common/storage.js';
import { recordEvaluation, setProgress, SupersededError, upsertMetrics } from '../../../db/runs.js';
import { transitionJob } from '../../../db/jobs.js';
import { createLogger } from '../../../common/logger.js';
import type { Db } from '../../../db/client.js';
import { processDelivery } from '../../../runner/supervisor/jobAttempt.js';
import type { RunnerServices } from '../../../runner/supervisor/context.js';

const log = createLogger('silent');
let h: Harness;
let dir: string;

/** The real S3 storage; putFile waits at a gate first (to interleave a takeover with an upload). */
class GatedStorage extends Storage {
  gate: Promise<void> = Promise.resolve();
  reachedGate!: () => void;
  reached = new Promise<void>((r) => (this.reachedGate = r));
  override async putFile(key: string, path: string, contentType?: string) {
    this.reachedGate();
    await this.gate;
    return super.putFile(key, path, contentType);
  }
}

async function checkpointDir(name: string, fill: string): Promise<string> {
  const d = join(dir, name);
  await rm(d, { recursive: true, force: true });
  await import('node:fs/promises').then((fs) => fs.mkdir(d, { recursive: true }));
  for (const f of ALL_CHECKPOINT_FILES) await writeFile(join(d, f), `${fill}:${f}:`.repeat(1000));
  return d;
}

async function newRunningJob(): Promise<{ id: string; tenantId: string }> {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') });
  const { id } = (await res.json()) as { id: string };
  assert.ok(await transitionJob(h.database.db, id, { from: ['queued'], to: 'running', patch: { attempt: 1 }, attempt: 0 }));
  return { id, tenantId: h.tenantA };
}

/** Attempt 2 takes over from attempt 1 (what a second runner does once the lock lapsed). */
const takeOver = (id: string) => transitionJob(h.database.db, id, { from: ['running'], to: 'running', reason: 'attempt 2: attempt 1 lost its runner', patch: { attempt: 2 }, attempt: 1 });

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  dir = await mkdtemp(join(tmpdir(), 'fencing-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
  await h.close();
});

describe('a zombie attempt cannot corrupt what the attempt that took over wrote', () => {
  test('checkpoint: the zombie uploads beside, never over, the registered version; its registration is refused', async () => {
    const job = await newRunningJob();
    const gated = new GatedStorage({ ...h.bucket.storage.cfg });
    let open!: () => void;
    gated.gate = new Promise((r) => (open = r));
    const zombieStore = new CheckpointStore(h.database.db, gated, log);
    const zombie = zombieStore.publish({ jobId: job.id, tenantId: job.tenantId, attempt: 1 }, { step: 10, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointDir('zombie', 'zombie'), reason: 'periodic' } as never);
    await gated.reached; // the zombie passed its fence check and computed version 1

    assert.ok(await takeOver(job.id));
    const store = new CheckpointStore(h.database.db, h.bucket.storage, log);
    const registered = await store.publish({ jobId: job.id, tenantId: job.tenantId, attempt: 2 }, { step: 10, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointDir('live', 'live'), reason: 'periodic' } as never);
    assert.equal(registered.version, 1);

    open(); // the zombie's upload goes ahead now
    await assert.rejects(zombie, SupersededError);
    const out = join(dir, 'download');
    await store.download(registered, out); // throws when any byte differs from its sha256
    assert.match(registered.s3Prefix, /\/v1\/a2\/$/);
    const versions = await h.database.sql`select version from checkpoints where job_id = ${job.id}`;
    assert.equal(versions.length, 1, 'the zombie registered nothing');
    gated.destroy();
  });

  test('a superseded attempt uploads nothing at all', async () => {
    const job = await newRunningJob();
    assert.ok(await takeOver(job.id));
    const store = new CheckpointStore(h.database.db, h.bucket.storage, log);
    await assert.rejects(store.publish({ jobId: job.id, tenantId: job.tenantId, attempt: 1 }, { step: 5, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointDir('late', 'late'), reason: 'periodic' } as never), SupersededError);
    assert.deepEqual(await h.bucket.storage.list(`checkpoints/${job.tenantId}/${job.id}/`), []);
  });

  test('metrics, progress, evaluation and finishing are fenced by the attempt', async () => {
    const job = await newRunningJob();
    await upsertMetrics(h.database.db, job.id, [{ step: 1, name: 'loss', value: 1 }], 1);
    assert.ok(await takeOver(job.id));
    await assert.rejects(upsertMetrics(h.database.db, job.id, [{ step: 1, name: 'loss', value: 99 }, { step: 2, name: 'loss', value: 99 }], 1), SupersededError);
    await assert.rejects(setProgress(h.database.db, job.id, { step: 2 }, 1), SupersededError);
    const [m] = await h.database.sql`select count(*)::int as n, max(value) as v from metrics where job_id = ${job.id}`;
    assert.deepEqual({ n: m!.n, v: m!.v }, { n: 1, v: 1 }, 'the zombie wrote no metric');
    assert.equal(await transitionJob(h.database.db, job.id, { from: ['running'], to: 'succeeded', attempt: 1 }), null, 'the zombie cannot finish the job');
    assert.equal((await h.database.sql`select state from jobs where id = ${job.id}`)[0]!.state, 'running');
    await assert.rejects(
      recordEvaluation(h.database.db, { probeJobId: job.id, sourceJobId: job.id, checkpointId: '00000000-0000-0000-0000-000000000000', kind: 'linear', top1: 1, top5: 1, details: {}, attempt: 1 }),
      SupersededError,
    );

    // The metrics writer of the zombie stops at its first refused flush and says so once.
    const reasons: string[] = [];
    const writer = new MetricsWriter({ db: h.database.db, jobId: job.id, attempt: 1, log, onSuperseded: (r) => reasons.push(r), flushIntervalMs: 10_000 });
    writer.add({ step: 3, loss: 5 } as never);
    await writer.flush();
    writer.add({ step: 4, loss: 5 } as never);
    await writer.close();
    assert.equal(reasons.length, 1);
    assert.match(reasons[0]!, /superseded by attempt 2/);
    const [after] = await h.database.sql`select count(*)::int as n from metrics where job_id = ${job.id}`;
    assert.equal(after!.n, 1);
    const [progress] = await h.database.sql`select progress from jobs where id = ${job.id}`;
    assert.equal(progress!.progress, null, 'no progress from the zombie');
  });
});

describe('finishing is fenced: a stale attempt cannot end a job another attempt took over', () => {
  const jobState = async (id: string) => {
    const [row] = await h.database.sql`select state, attempt, result, error, finished_at from jobs where id = ${id}`;
    return { ...row };
  };
  const trail = async (id: string) => {
    const [e] = await h.database.sql`select count(*)::int as n from job_events where job_id = ${id}`;
    const [o] = await h.database.sql`select count(*)::int as n from outbox where payload->>'jobId' = ${id}`;
    return { events: e!.n as number, outbox: o!.n as number };
  };

  test('every finishing move of the stale attempt is refused and leaves no event, no webhook, no result', async () => {
    const job = await newRunningJob();
    assert.ok(await takeOver(job.id));
    const before = { row: await jobState(job.id), trail: await trail(job.id) };
    const stale = [
      { from: ['running', 'canceling'], to: 'succeeded', patch: { result: { by: 'zombie' }, error: null } },
      { from: ['running', 'canceling'], to: 'failed', reason: 'zombie failed', patch: { error: 'zombie failed' } },
      { from: ['running', 'canceling'], to: 'canceled', reason: 'zombie canceled' },
      { from: ['running'], to: 'requeued', reason: 'zombie preempted', patch: { attemptBase: 1 } },
      { from: ['running'], to: 'running', reason: 'zombie restarted', patch: { attempt: 2 } },
    ] as const;
    for (const move of stale) {
      assert.equal(await transitionJob(h.database.db, job.id, { ...move, from: [...move.from], attempt: 1 }), null, `attempt 1 → ${move.to}`);
    }
    assert.deepEqual(await jobState(job.id), before.row, 'the row is as attempt 2 left it');
    assert.deepEqual(await trail(job.id), before.trail, 'no event and no outbox message (webhook) from the stale attempt');

    // A cancel during attempt 2: the stale attempt cannot end the canceling job either.
    assert.ok(await transitionJob(h.database.db, job.id, { from: ['running'], to: 'canceling', reason: 'canceled by user' }));
    for (const to of ['canceled', 'succeeded', 'failed'] as const) {
      assert.equal(await transitionJob(h.database.db, job.id, { from: ['canceling'], to, attempt: 1 }), null, `canceling → ${to} by attempt 1`);
    }
    assert.ok(await transitionJob(h.database.db, job.id, { from: ['canceling'], to: 'canceled', reason: 'canceled on request', attempt: 2 }), 'attempt 2 ends it');
    assert.equal((await jobState(job.id)).state, 'canceled');
  });

  test('both attempts finishing at the same moment: the current one wins, once, with its own result', async () => {
    for (let round = 0; round < 10; round++) {
      const job = await newRunningJob();
      assert.ok(await takeOver(job.id));
      const finishAs = (attempt: number) =>
        transitionJob(h.database.db, job.id, { from: ['running', 'canceling'], to: 'succeeded', patch: { result: { by: `attempt ${attempt}` }, error: null }, attempt });
      const [zombie, live] = await Promise.all([finishAs(1), finishAs(2)]);
      assert.equal(zombie, null, `round ${round}: the stale attempt finished the job`);
      assert.ok(live, `round ${round}: the current attempt could not finish`);
      const row = await jobState(job.id);
      assert.deepEqual([row.state, row.attempt, row.result], ['succeeded', 2, { by: 'attempt 2' }]);
      const succeeded = await h.database.sql`select attempt from job_events where job_id = ${job.id} and to_state = 'succeeded'`;
      assert.deepEqual(succeeded.map((e) => e.attempt), [2], 'one succeeded event, of attempt 2');
      const announced = await h.database.sql`select payload from outbox where payload->>'jobId' = ${job.id} and payload->>'event' = 'job.succeeded'`;
      assert.deepEqual(announced.map((o) => o.payload.data.attempt), [2], 'one job.succeeded webhook message, of attempt 2');
      // Finished: not even a late failure of the stale attempt changes it.
      assert.equal(await transitionJob(h.database.db, job.id, { from: ['running', 'canceling', 'succeeded'], to: 'failed', attempt: 1 }), null);
    }
  });
});

describe("a delivery's early exits are fenced by the attempt it read", () => {
  /**
   * The runner's database, except that its first transaction waits for `between` to run first: an
   * attempt taking over exactly between the delivery's read of the job and its write.
   */
  const dbTakenOverBeforeWrite = (between: () => Promise<unknown>): Db => {
    let pending: (() => Promise<unknown>) | null = between;
    return new Proxy(h.database.db, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (prop !== 'transaction') return typeof value === 'function' ? value.bind(target) : value;
        return async (...args: Parameters<Db['transaction']>) => {
          const run = pending;
          pending = null;
          if (run) await run();
          return target.transaction(...args);
        };
      },
    });
  };
  const deliver = (jobId: string, db: Db) => {
    const services = { config: { ...h.config, RUNNER_MAX_ATTEMPTS: 1 }, db, sql: h.database.sql, storage: h.bucket.storage, log, runnerId: 'test' } as unknown as RunnerServices;
    return processDelivery(services, { data: { jobId } } as never, 'token', {} as never);
  };
  const states = async (id: string) => (await h.database.sql`select to_state, attempt from job_events where job_id = ${id} and kind = 'state' order by id`).map((e) => `${e.to_state}@${e.attempt}`);

  test('canceled before it ran: not when another attempt started since the read (that attempt sees the cancel)', async () => {
    const job = await newRunningJob();
    await h.database.sql`update jobs set cancel_requested = true where id = ${job.id}`;
    const result = await deliver(job.id, dbTakenOverBeforeWrite(() => takeOver(job.id)));
    assert.deepEqual(result, { state: 'skipped', reason: 'state changed' });
    const [row] = await h.database.sql`select state, attempt from jobs where id = ${job.id}`;
    assert.deepEqual({ ...row }, { state: 'running', attempt: 2 }, 'attempt 2 still owns the job');
    assert.deepEqual(await states(job.id), ['queued@0', 'running@1', 'running@2'], 'no canceled event');

    // Without a takeover the same delivery cancels it.
    const quiet = await newRunningJob();
    await h.database.sql`update jobs set cancel_requested = true where id = ${quiet.id}`;
    assert.deepEqual(await deliver(quiet.id, h.database.db), { state: 'canceled', reason: 'canceled before it ran' });
  });

  test('gave up after max attempts: not when another attempt started since the read', async () => {
    // Attempt 1 of at most 1 lost its runner; before the delivery fails the job, a requeue gave it
    // a new attempt budget and attempt 2 started.
    const job = await newRunningJob();
    const requeuedAndStarted = async () => {
      assert.ok(await transitionJob(h.database.db, job.id, { from: ['running'], to: 'requeued', reason: 'preempted', patch: { attemptBase: 1 }, attempt: 1 }));
      assert.ok(await transitionJob(h.database.db, job.id, { from: ['requeued'], to: 'running', reason: 'attempt 2', patch: { attempt: 2 }, attempt: 1 }));
    };
    const result = await deliver(job.id, dbTakenOverBeforeWrite(requeuedAndStarted));
    assert.deepEqual(result, { state: 'skipped', reason: 'state changed' });
    const [row] = await h.database.sql`select state, attempt, error from jobs where id = ${job.id}`;
    assert.deepEqual({ ...row }, { state: 'running', attempt: 2, error: null }, 'attempt 2 still owns the job');
    assert.deepEqual(await states(job.id), ['queued@0', 'running@1', 'requeued@1', 'running@2'], 'no failed event');

    // Without a takeover the same delivery gives up: the job fails, the queue is told not to retry.
    const quiet = await newRunningJob();
    await assert.rejects(deliver(quiet.id, h.database.db), (err: Error) => err.name === 'UnrecoverableError' && /gave up after 1 attempts/.test(err.message));
    assert.equal((await h.database.sql`select state from jobs where id = ${quiet.id}`)[0]!.state, 'failed');
  });
});
