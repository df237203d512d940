/**
 * `npm run bench:api-pair`: job submission through one API process, then through two API processes
 * side by side (same Postgres, Redis and S3, each with every role: HTTP, outbox dispatcher,
 * reconciler, webhook worker, as two replicas run), with the same total client concurrency split
 * between them. Prints both rates and their ratio, and checks that every job created reached the
 * queue once. Asserts nothing else. The correctness of a pair (each job runs exactly once, cancels
 * reach the runner holding the job) is test/integration/runner/replicas.test.ts.
 *
 * Env: CONC="8 32" (total connections; the pair gets half each), DUR=8, BENCH_API_ROOT (see bench/api.ts).
 * The first API listens on 18788 (BENCH_PORT), the second on a free port.
 */
import { Queue } from 'bullmq';
import { loadConfig } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain } from '../common/errors.js';
import { BULLMQ_CONNECTION_OPTIONS, QUEUES } from '../contracts/queues.js';
import { Redis } from 'ioredis';
import { apiRoot, createScratch, fmt, freePort, root, startApi, wrk, wrkTogether, type WrkResult } from './apiSupport.js';

const CONC = (process.env.CONC ?? '8 32').split(/\s+/).filter(Boolean).map(Number);
const DUR = Number(process.env.DUR ?? 8);
const PORT = Number(process.env.BENCH_PORT ?? 18788);
const ROLES = 'http,dispatcher,reconciler,webhooks';

const sum = (rs: WrkResult[]): WrkResult => ({
  rps: rs.reduce((a, r) => a + r.rps, 0),
  p50ms: Math.max(...rs.map((r) => r.p50ms)),
  p99ms: Math.max(...rs.map((r) => r.p99ms)),
  non2xx: rs.reduce((a, r) => a + r.non2xx, 0),
  requests: rs.reduce((a, r) => a + r.requests, 0),
});

runMain(async () => {
  parseCommandLine('npm run bench:api-pair   (no options; env CONC, DUR, BENCH_API_ROOT: see BENCHMARKS.md)', {});
  const base = loadConfig();
  const scratch = await createScratch(base);
  const { key, tag } = scratch;
  const apis: Awaited<ReturnType<typeof startApi>>[] = [];
  try {
    apis.push(await startApi(scratch.apiEnv, PORT, ROLES));
    apis.push(await startApi(scratch.apiEnv, await freePort(), ROLES));
    const submitLua = `${root}bench/api-submit.lua`;
    for (const [i, api] of apis.entries()) wrk(2, ['-c4', '-s', submitLua, api.url], { MOMENTUM_API_KEY: key, BENCH_RUN: `${tag}-warm${i}` });

    const rows: string[] = [];
    for (const c of CONC) {
      const one = wrk(DUR, [`-c${c}`, '-s', submitLua, apis[0]!.url], { MOMENTUM_API_KEY: key, BENCH_RUN: `${tag}-one-${c}` });
      const half = Math.max(1, Math.round(c / 2));
      const both = await wrkTogether(
        DUR,
        apis.map((api, i) => ({ args: [`-c${half}`, '-s', submitLua, api.url], env: { MOMENTUM_API_KEY: key, BENCH_RUN: `${tag}-pair${i}-${c}` } })),
      );
      const pair = sum(both);
      rows.push(`c=${String(c).padEnd(3)} one API   ${fmt(one)}`);
      rows.push(`c=${String(c).padEnd(3)} two APIs  ${fmt(pair)}   (${both.map((r) => r.rps.toFixed(0)).join(' + ')}; p50/p99 the worse of the two)`);
      rows.push(`ratio c=${c}: two/one ${(pair.rps / one.rps).toFixed(2)}x`);
    }

    // Every job the load created reaches its queue once: the two dispatchers shared the outbox
    // (FOR UPDATE SKIP LOCKED) without dropping or doubling a row.
    // Requests still in flight when wrk stopped finish afterwards: wait until everything settled.
    const sql = scratch.database.sql;
    const connection = new Redis(base.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
    const queue = new Queue(QUEUES.train, { connection, prefix: scratch.prefix });
    const deadline = Date.now() + 60_000;
    let counts: { jobs: number; pending: number; queued: number };
    for (;;) {
      const [row] = (await sql`
        select (select count(*)::int from jobs) as jobs, (select count(*)::int from outbox) as pending`) as unknown as [{ jobs: number; pending: number }];
      counts = { ...row, queued: await queue.count() };
      if ((counts.pending === 0 && counts.queued === counts.jobs) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    await queue.close();
    connection.disconnect();

    console.log(`\n## API pair benchmark (${new Date().toISOString()}, ${DUR} s per wrk run, wrk -t2 per API, DATABASE_POOL_MAX=${base.DATABASE_POOL_MAX} per API, roles ${ROLES}${apiRoot !== root ? `, API from ${apiRoot}` : ''})`);
    for (const r of rows) console.log(r);
    const { jobs, queued, pending } = counts;
    // BullMQ keeps one queue job per id: as many as there are jobs, with nothing pending, is each job queued once.
    console.log(`jobs ${jobs}; BullMQ ${QUEUES.train} jobs waiting ${queued}; outbox rows pending ${pending}${jobs === queued && !pending ? ' (each job queued once)' : ' (MISMATCH)'}`);
  } finally {
    for (const api of apis) await api.stop();
    await scratch.close();
  }
});
