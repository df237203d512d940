/**
 * `npm run faults`: the service under faults, one kind per test, with a table of trials per kind,
 * jobs finished and data lost at the end. Services that are stopped, restarted or flushed are
 * PRIVATE instances on ports of their own (test/support/privateServices.ts), never the shared ones.
 *
 * After every trial: every job finishes, checkpoint versions are continuous, every version's bytes
 * match their sha256, no metric is duplicated. Trials per kind come from FAULT_TRIALS (default 2;
 * the runner kinds from FAULT_RUNNER_TRIALS (default 1; `npm test` sets 0 and skips them); the long form is
 * `FAULT_RUNNER_TRIALS=100 npm run faults`).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { createHarness, pretrain, seedReadyDataset } from '../integration/api/harness.js';
import { createRunnerHarness, eventually, tinyPretrain } from '../integration/runner/harness.js';
import { OutboxDispatcher } from '../../api/dispatcher.js';
import { Reconciler } from '../../api/reconciler.js';
import { createApp } from '../../api/app.js';
import { closeQueues, createQueues, type AppDeps } from '../../api/deps.js';
import { generateApiKey } from '../../api/auth/keys.js';
import { ensureTenant, insertApiKey } from '../../db/apiKeys.js';
import { connectDatabase } from '../../db/client.js';
import { runMigrations } from '../../db/migrate.js';
import { transitionJob } from '../../db/jobs.js';
import { listCheckpoints, SupersededError } from '../../db/runs.js';
import { CheckpointStore, ALL_CHECKPOINT_FILES } from '../../runner/supervisor/checkpointStore.js';
import { MetricsWriter } from '../../runner/supervisor/metricsWriter.js';
import { Storage, storageConfigFrom } from '../../common/storage.js';
import { createLogger } from '../../common/logger.js';
import { BULLMQ_CONNECTION_OPTIONS, QUEUES } from '../../contracts/queues.js';
import { baseConfig, createTestDatabase, createTestStorage, removeQueueKeys, testConfig, uniqueName } from '../support/services.js';
import { startPrivatePostgres, startPrivateRedis, startPrivateS3 } from '../support/privateServices.js';

// Errors only: a passing run logs none, and a 500 where a 503 was expected then shows its cause (FAULT_LOG=warn for more).
const log = createLogger(process.env.FAULT_LOG ?? 'error');
const TRIALS = Number(process.env.FAULT_TRIALS ?? 2);
const RUNNER_TRIALS = Number(process.env.FAULT_RUNNER_TRIALS ?? 1);

interface Row {
  kind: string;
  trials: number;
  jobs: number;
  finished: number;
  dataLost: number;
}
const table: Row[] = [];
after(() => {
  console.log('\nfault kind                         trials  jobs  finished  data lost');
  for (const r of table) console.log(`${r.kind.padEnd(34)} ${String(r.trials).padStart(6)} ${String(r.jobs).padStart(5)} ${String(r.finished).padStart(9)} ${String(r.dataLost).padStart(10)}`);
});

/** A stand-in runner for the delivery faults: takes jobs from the queue and finishes them in Postgres. */
function finishingConsumer(redisUrl: string, prefix: string, db: AppDeps['db']) {
  const connection = new Redis(redisUrl, { ...BULLMQ_CONNECTION_OPTIONS });
  const worker = new Worker(
    QUEUES.train,
    async (job) => {
      const id = (job.data as { jobId: string }).jobId;
      await transitionJob(db, id, { from: ['queued', 'requeued'], to: 'running', patch: { attempt: 1 } });
      await transitionJob(db, id, { from: ['running'], to: 'succeeded', patch: { result: { by: 'fault-suite' } } });
    },
    { connection, prefix },
  );
  worker.on('error', () => {});
  return { close: async () => (await worker.close(), connection.disconnect()) };
}

const finishedCount = async (sql: AppDeps['sql'], ids: string[]) => ((await sql`select count(*)::int as n from jobs where id = any(${ids}) and state = 'succeeded'`)[0]!.n as number);

describe('delivery faults', () => {
  test('Redis restarted (no persistence) or flushed mid-run: the reconciler re-enqueues, every job finishes', async () => {
    const redis = await startPrivateRedis();
    const h = await createHarness({ REDIS_URL: redis.url });
    const row: Row = { kind: 'redis restarted / flushed', trials: 0, jobs: 0, finished: 0, dataLost: 0 };
    try {
      await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
      const dispatcher = new OutboxDispatcher({ sql: h.database.sql, queues: h.deps.queues, logger: log, rowBackoffBaseMs: 50, rowBackoffCapMs: 200 });
      const reconciler = new Reconciler({ sql: h.database.sql, db: h.database.db, queues: h.deps.queues, logger: log, graceMs: 0, staleOutboxMs: 500 });
      for (let t = 0; t < TRIALS; t++) {
        const ids: string[] = [];
        for (let i = 0; i < 5; i++) ids.push(((await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as { id: string }).id);
        while ((await dispatcher.dispatchOnce()) > 0);
        if (t % 2 === 0) {
          await redis.stop();
          await redis.start(); // started empty: the queue lost everything
        } else await redis.flush();
        await eventually(async () => h.deps.redis.ping().then(() => true, () => false), 'redis back', 10_000);
        const consumer = finishingConsumer(redis.url, h.config.QUEUE_PREFIX, h.database.db);
        try {
          await eventually(async () => {
            await reconciler.reconcileOnce().catch(() => undefined);
            return (await finishedCount(h.database.sql, ids)) === ids.length;
          }, 'every job to finish after the Redis loss', 30_000);
        } finally {
          await consumer.close();
        }
        row.trials++;
        row.jobs += ids.length;
        row.finished += await finishedCount(h.database.sql, ids);
      }
      row.dataLost = row.jobs - row.finished;
      assert.equal(row.dataLost, 0);
    } finally {
      table.push(row);
      await h.close().catch(() => {});
      await redis.remove();
    }
  });

  test('Postgres restarted mid-run: the API answers 503 and recovers; a metrics flush retries its writes', async () => {
    const pg = await startPrivatePostgres();
    const row: Row = { kind: 'postgres restarted', trials: 0, jobs: 0, finished: 0, dataLost: 0 };
    const bucket = await createTestStorage();
    const config = testConfig({ DATABASE_URL: pg.url, S3_BUCKET: bucket.bucket, LOG_LEVEL: 'silent' });
    await runMigrations(pg.url);
    const database = connectDatabase(pg.url, { max: 4 });
    const redis = new Redis(config.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
    const queues = createQueues(config, redis);
    const deps: AppDeps = { config, db: database.db, sql: database.sql, storage: bucket.storage, redis, queues, logger: log, webhookSigningKey: 'k'.repeat(20) };
    const { app } = createApp(deps);
    // Closed in `finally` too: a failed assertion must not leave its retry timer holding the file open (CI waited 600 s).
    let openWriter: MetricsWriter | undefined;
    try {
      const tenant = await ensureTenant(database.db, 'faults');
      const key = generateApiKey();
      await insertApiKey(database.db, { tenantId: tenant.id, name: 'admin', prefix: key.prefix, secretHash: key.hash, scopes: ['admin'] });
      await database.sql`insert into datasets (tenant_id, name) values (${tenant.id}, 'fmnist')`;
      await database.sql`
        insert into dataset_versions (dataset_id, version, state, options, upload_key, manifest, ready_at)
        select id, 1, 'ready', '{"format":"idx"}'::jsonb, 'x', '{"height":28,"width":28,"channels":1}'::jsonb, now() from datasets where tenant_id = ${tenant.id}`;
      const submit = () => app.request('/v1/jobs', { method: 'POST', headers: { authorization: `Bearer ${key.secret}`, 'content-type': 'application/json' }, body: JSON.stringify(pretrain('fmnist')) });
      const ids: string[] = [];
      for (let t = 0; t < TRIALS; t++) {
        const before = await submit();
        assert.equal(before.status, 201);
        ids.push(((await before.json()) as { id: string }).id);
        const [job] = await database.sql`select id from jobs where id = ${ids.at(-1)!}`;
        assert.ok(await transitionJob(database.db, job!.id, { from: ['queued'], to: 'running', patch: { attempt: 1 } }));
        const writer = new MetricsWriter({ db: database.db, jobId: job!.id, attempt: 1, log, flushIntervalMs: 60_000 });
        openWriter = writer;
        for (let s = 0; s < 10; s++) writer.add({ step: s, loss: 1 / (s + 1) } as never);

        await pg.stop();
        const during = await submit();
        assert.equal(during.status, 503, await during.clone().text());
        const body = (await during.json()) as { error: { code: string } };
        assert.equal(body.error.code, 'unavailable');
        await writer.flush(); // fails: the points are kept for the next flush
        await pg.start();

        const recovered = await eventually(async () => {
          const res = await submit();
          return res.status === 201 ? res : undefined;
        }, 'the API to answer 201 again', 30_000);
        ids.push(((await recovered.json()) as { id: string }).id);
        for (let s = 10; s < 20; s++) writer.add({ step: s, loss: 1 / (s + 1) } as never);
        // The writer retries its failed flush; the points of the outage are written once it succeeds.
        await eventually(async () => {
          await writer.flush();
          return ((await database.sql`select count(*)::int as n from metrics where job_id = ${job!.id}`)[0]!.n as number) >= 20;
        }, 'the metrics of the outage to be written', 30_000);
        await writer.close();
        const [m] = await database.sql`select count(*)::int as n, count(distinct step)::int as steps from metrics where job_id = ${job!.id} and name = 'loss'`;
        assert.deepEqual({ n: m!.n, steps: m!.steps }, { n: 20, steps: 20 }, 'every point written once');
        await transitionJob(database.db, job!.id, { from: ['running'], to: 'succeeded' });
        row.trials++;
      }
      row.jobs = ids.length;
      row.finished = ((await database.sql`select count(*)::int as n from jobs where id = any(${ids})`)[0]!.n as number);
      row.dataLost = row.jobs - row.finished;
      assert.equal(row.dataLost, 0, 'every job answered 201 exists');
    } finally {
      table.push(row);
      await openWriter?.close().catch(() => {});
      await closeQueues(queues);
      await removeQueueKeys(redis, config.QUEUE_PREFIX);
      redis.disconnect();
      await database.close().catch(() => {});
      await bucket.cleanup();
      await pg.remove();
    }
  });
});

async function checkpointFiles(dir: string, name: string, bytes: number): Promise<string> {
  const d = join(dir, name);
  await mkdir(d, { recursive: true });
  for (const f of ALL_CHECKPOINT_FILES) await writeFile(join(d, f), f === 'state.safetensors' ? randomBytes(bytes) : randomBytes(256));
  return d;
}

/** Versions 1..n with no gap, and every file of every version matching its recorded sha256. */
async function assertIntact(store: CheckpointStore, db: AppDeps['db'], jobId: string, dir: string): Promise<number> {
  const versions = (await listCheckpoints(db, jobId)).reverse();
  assert.deepEqual(versions.map((v) => v.version), versions.map((_, i) => i + 1), 'versions are continuous');
  let bad = 0;
  for (const v of versions) await store.download(v, join(dir, `verify-${v.version}`)).catch(() => bad++);
  return bad;
}

describe('storage and lock faults', () => {
  test('the S3 server stopped during a checkpoint upload: the upload fails, the next one registers, no version lacks bytes', async () => {
    const s3 = await startPrivateS3();
    const database = await createTestDatabase();
    const storage = new Storage({ ...storageConfigFrom(baseConfig), endpoint: s3.url, bucket: 'faults' });
    await storage.ensureBucket();
    const dir = await mkdtemp(join(tmpdir(), 'faults-s3-'));
    const row: Row = { kind: 'S3 stopped during an upload', trials: 0, jobs: 0, finished: 0, dataLost: 0 };
    try {
      const [t] = await database.sql`insert into tenants (name) values (${uniqueName('t')}) returning id`;
      const store = new CheckpointStore(database.db, storage, log);
      for (let trial = 0; trial < TRIALS; trial++) {
        const [job] = await database.sql`insert into jobs (tenant_id, type, state, spec, attempt) values (${t!.id}, 'pretrain', 'running', '{}'::jsonb, 1) returning id`;
        const run = { jobId: job!.id as string, tenantId: t!.id as string, attempt: 1 };
        await store.publish(run, { step: 1, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointFiles(dir, `a${trial}`, 1024), reason: 'periodic' } as never);
        // The outcome is taken at once: on a loaded machine the upload can fail while S3 is being
        // stopped, and a rejection nobody handles yet fails the test on its own.
        const bigFailed = store
          .publish(run, { step: 2, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointFiles(dir, `b${trial}`, 24 * 1024 * 1024), reason: 'periodic' } as never)
          .then(() => false, () => true);
        await new Promise((r) => setTimeout(r, 150 + Math.random() * 300));
        await s3.stop();
        const failed = await bigFailed;
        await s3.start();
        await eventually(async () => storage.ensureBucket().then(() => true, () => false), 's3 back', 15_000);
        // The runner carries on; its next checkpoint registers (the version the failed one would have had).
        await eventually(
          async () => store.publish(run, { step: 3, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointFiles(dir, `c${trial}`, 1024 * 1024), reason: 'periodic' } as never).then(() => true, () => false),
          'a checkpoint after the restart',
          30_000,
        );
        const bad = await assertIntact(store, database.db, run.jobId, dir);
        row.trials++;
        row.jobs++;
        row.finished += bad === 0 ? 1 : 0;
        row.dataLost += bad;
        assert.ok(failed || (await listCheckpoints(database.db, run.jobId)).length >= 2, 'the stopped upload failed, or finished before the stop');
      }
      assert.equal(row.dataLost, 0);
    } finally {
      table.push(row);
      storage.destroy();
      await database.cleanup();
      await rm(dir, { recursive: true, force: true });
      await s3.remove();
    }
  });

  test('a runner whose lock lapsed keeps running: its writes are refused, the new attempt checkpoints intact', async () => {
    const h = await createHarness();
    const dir = await mkdtemp(join(tmpdir(), 'faults-zombie-'));
    const row: Row = { kind: 'lock lapsed, zombie keeps running', trials: 0, jobs: 0, finished: 0, dataLost: 0 };
    try {
      await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
      const store = new CheckpointStore(h.database.db, h.bucket.storage, log);
      for (let trial = 0; trial < TRIALS; trial++) {
        const { id } = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as { id: string };
        await transitionJob(h.database.db, id, { from: ['queued'], to: 'running', patch: { attempt: 1 } });
        const run1 = { jobId: id, tenantId: h.tenantA, attempt: 1 };
        await store.publish(run1, { step: 4, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointFiles(dir, `z${trial}-1`, 4096), reason: 'periodic' } as never);
        // The lock lapses; attempt 2 takes over while attempt 1 goes on writing.
        await transitionJob(h.database.db, id, { from: ['running'], to: 'running', patch: { attempt: 2 }, attempt: 1 });
        const zombie = new MetricsWriter({ db: h.database.db, jobId: id, attempt: 1, log });
        const live = new MetricsWriter({ db: h.database.db, jobId: id, attempt: 2, log });
        for (let s = 4; s < 12; s++) {
          zombie.add({ step: s, loss: 99 } as never);
          live.add({ step: s, loss: 1 } as never);
        }
        const writes = [
          zombie.close(),
          live.close(),
          store.publish(run1, { step: 8, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointFiles(dir, `z${trial}-z`, 4096), reason: 'periodic' } as never).then(() => assert.fail('the zombie registered'), (e: unknown) => assert.ok(e instanceof SupersededError)),
          store.publish({ ...run1, attempt: 2 }, { step: 8, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointFiles(dir, `z${trial}-2`, 4096), reason: 'periodic' } as never),
        ];
        await Promise.all(writes);
        assert.ok(await transitionJob(h.database.db, id, { from: ['running'], to: 'succeeded', attempt: 2 }));
        const bad = await assertIntact(store, h.database.db, id, dir);
        const [m] = await h.database.sql`select count(*)::int as n, count(distinct step)::int as steps, max(value) as top from metrics where job_id = ${id} and name = 'loss'`;
        assert.deepEqual({ n: m!.n, steps: m!.steps, top: m!.top }, { n: 8, steps: 8, top: 1 }, 'no duplicated metric, none from the zombie');
        row.trials++;
        row.jobs++;
        row.finished += (await h.database.sql`select state from jobs where id = ${id}`)[0]!.state === 'succeeded' ? 1 : 0;
        row.dataLost += bad;
      }
      assert.equal(row.dataLost, 0);
    } finally {
      table.push(row);
      await rm(dir, { recursive: true, force: true });
      await h.close();
    }
  });
});

// npm test sets FAULT_RUNNER_TRIALS=0: crash.test.ts and preempt.test.ts already kill and preempt
// real runners there, and these trials cost two minutes of a CI run; `npm run faults` runs them.
const runnerFaultsSkipped = RUNNER_TRIALS === 0 && 'FAULT_RUNNER_TRIALS=0 (npm test): the runner kinds run in `npm run faults`';
describe('runner faults (real runner processes)', { skip: runnerFaultsSkipped }, () => {
  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    test(`${signal} at random steps: the job resumes from its checkpoint and finishes intact`, { timeout: 20 * 60_000 }, async () => {
      const h = await createRunnerHarness();
      const row: Row = { kind: `runner ${signal} at a random step`, trials: 0, jobs: 1, finished: 0, dataLost: 0 };
      try {
        const sql = h.database.sql;
        let runner = h.startRunner(); // it ingests the dataset too
        await h.uploadSyntheticDataset(`shapes-${signal.toLowerCase()}`);
        const steps = 8 * (RUNNER_TRIALS + 2);
        const job = await h.submit(tinyPretrain(`shapes-${signal.toLowerCase()}`, { optim: { batch: 8 }, maxSteps: steps, checkpointEvery: 4, keepCheckpoints: 1000, epochs: 40, resources: { backend: 'cpu' } }));
        for (let t = 0; t < RUNNER_TRIALS; t++) {
          const [{ step: at } = { step: 0 }] = await sql`select coalesce((progress->>'step')::int, 0) as step from jobs where id = ${job.id}`;
          const target = Math.min(steps - 2, at + 1 + Math.floor(Math.random() * 4));
          const reached = await eventually(async () => {
            const [r] = await sql`select state, coalesce((progress->>'step')::int, 0) as step from jobs where id = ${job.id}`;
            return r!.state === 'succeeded' || r!.step >= target ? r : undefined;
          }, `step ${target}`, 600_000);
          if (reached.state === 'succeeded') break;
          runner.signal(signal);
          await runner.exited;
          row.trials++;
          runner = h.startRunner();
        }
        const done = await h.waitForJob(job.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'the job to finish', 900_000);
        assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
        row.finished = 1;
        const store = new CheckpointStore(h.database.db, h.bucket.storage, log);
        const dir = await mkdtemp(join(tmpdir(), 'faults-runner-'));
        row.dataLost += await assertIntact(store, h.database.db, job.id, dir);
        await rm(dir, { recursive: true, force: true });
        const [m] = await sql`select count(*)::int as n, count(distinct step)::int as steps from metrics where job_id = ${job.id} and name = 'loss'`;
        assert.deepEqual({ n: m!.n, steps: m!.steps }, { n: steps, steps }, 'one loss per step: none lost, none duplicated');
        assert.equal(row.dataLost, 0);
      } finally {
        table.push(row);
        await h.close();
      }
    });
  }
});
