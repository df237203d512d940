/**
 * `npm run bench:statements`: what the submission statement and a dispatcher pass cost Postgres and
 * the client, without HTTP: one connection, statements one after another, CPU read from /proc for
 * the connection's backend and for this process. Prints CPU per job of the submission statement
 * carrying k jobs (db/jobQueries.ts insertJobs; k=1 is what a lone submission runs), of the bare ceiling's one-row
 * insert, and CPU per row of dispatcher passes of R rows (api/dispatcher.ts, BullMQ on the real
 * Redis). The fixed cost of a statement or a pass is the difference between sizes. Asserts nothing.
 *
 * Env: N=3000 (jobs per size), K="1 2 4 8 16" (jobs per statement), R="50 10 50 10" (rows per pass;
 * the first sizes warm up), P=40 (passes per size). Uses a scratch database, bucket and queue prefix.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { loadConfig } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { connectDatabase } from '../db/client.js';
import { insertJobs, type NewJob } from '../db/jobQueries.js';
import { OutboxDispatcher } from '../api/dispatcher.js';
import { closeQueues, createQueues } from '../api/deps.js';
import { BULLMQ_CONNECTION_OPTIONS } from '../contracts/queues.js';
import { createScratch, processCpuSeconds } from './apiSupport.js';

const N = Number(process.env.N ?? 3000);
const sizes = (name: string, fallback: string) => (process.env[name] ?? fallback).split(/\s+/).filter(Boolean).map(Number);

/** Runs `work`, which handles `units` jobs or rows, and prints backend, client and wall time per unit. */
async function measure(label: string, backendPid: number, work: () => Promise<number>): Promise<void> {
  const backend = processCpuSeconds(backendPid);
  const client = processCpuSeconds(process.pid);
  const started = performance.now();
  const units = await work();
  const per = (seconds: number) => `${((seconds / units) * 1e6).toFixed(0).padStart(4)} µs`;
  console.log(`${label.padEnd(38)} backend ${per(processCpuSeconds(backendPid) - backend)}, client ${per(processCpuSeconds(process.pid) - client)}, wall ${per((performance.now() - started) / 1000)}  (${units})`);
}

runMain(async () => {
  parseCommandLine('npm run bench:statements   (no options; env N, K, R, P: see the file header)', {});
  const base = loadConfig();
  const scratch = await createScratch(base);
  const database = connectDatabase(scratch.databaseUrl, { max: 1 });
  const { sql } = database;
  const redis = new Redis(base.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
  const queues = createQueues({ ...base, QUEUE_PREFIX: scratch.prefix }, redis);
  try {
    const [{ pid }] = (await sql`select pg_backend_pid() as pid`) as unknown as [{ pid: number }];
    // The benchmark's body (bench/api-submit.lua), a fresh Idempotency-Key per job, limits checked as the API checks them.
    const spec = '{"type":"pretrain","dataset":"fmnist@1","model":{"arch":"vit_tiny","patch":4},"optim":{"lr":1.5e-4,"batch":256},"epochs":10}';
    const job = (): NewJob => ({
      id: randomUUID(),
      tenantId: scratch.tenantId,
      type: 'pretrain',
      specJson: spec,
      dataset: { kind: 'ref', name: 'fmnist', version: 1 },
      idempotencyKey: randomUUID(),
      requestHash: 'h',
      parentJobId: null,
      announceQueued: false,
      maxActiveJobs: null,
      maxStoredBytes: 1e15,
    });
    const submit = (k: number) => insertJobs(sql, Array.from({ length: k }, job));
    console.log(`## statements (${new Date().toISOString()}, one connection, sequential)`);
    for (const k of sizes('K', '1 2 4 8 16')) {
      for (let i = 0; i < 50; i++) await submit(k); // warm: plan cached, JIT
      await measure(`submission statement, ${k} per statement`, pid, async () => {
        for (let i = 0; i < Math.ceil(N / k); i++) await submit(k);
        return Math.ceil(N / k) * k;
      });
    }
    await sql`create table ceiling_jobs (id uuid primary key, spec jsonb not null, state text not null, created_at timestamptz not null default now())`;
    await measure("the ceiling's one-row insert", pid, async () => {
      for (let i = 0; i < N; i++) await sql`INSERT INTO ceiling_jobs (id, spec, state) VALUES (${randomUUID()}, ${spec}::jsonb, 'queued') RETURNING id, state, created_at`;
      return N;
    });
    // The outbox now holds one enqueue row per job submitted above: drain it in passes of R rows.
    for (const rows of sizes('R', '50 10 50 10')) {
      const dispatcher = new OutboxDispatcher({ sql, queues, logger: createLogger('error'), batchSize: rows });
      await measure(`dispatcher pass of ${rows} rows`, pid, async () => {
        let moved = 0;
        for (let i = 0; i < Number(process.env.P ?? 40); i++) moved += await dispatcher.dispatchOnce();
        return moved;
      });
    }
  } finally {
    await closeQueues(queues);
    redis.disconnect();
    await database.close();
    await scratch.close();
  }
});
