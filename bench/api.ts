/**
 * `npm run bench:api`: job submission and job read through the whole API (auth, rate limit,
 * validation, idempotency, outbox) with wrk, side by side with the bare Hono + postgres.js ceiling
 * (../shared/baselines/api_ceiling: its server, with its run.sh's wrk arguments) in the same sitting,
 * and the dispatch latency from POST to a BullMQ worker picking the job up. Prints a table, the
 * ratios of throughput, p99 and CPU per request (API + Postgres processes, from /proc); asserts nothing.
 *
 * Env: CONC="8 32" DUR=8 (seconds per wrk run), BENCH_ROUNDS=3 (each API run beside its ceiling run;
 * the ratio is the median of the rounds'), DISPATCH_N=200, SKIP_CEILING=1, CEILING_DIR=<cache>,
 * BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (flags for the API process, e.g. to profile it),
 * BENCH_SKIP_READ=1 (submissions only: a profile of the write path alone), BENCH_SKIP_SUBMIT=1 (reads
 * only), BENCH_API_ROOT=<another checkout> (measure that checkout's API with this script: a
 * before/after in one sitting).
 * Uses a scratch database, bucket and queue prefix of its own, removed at the end. Two API processes
 * side by side: bench/api-pair.ts (`npm run bench:api-pair`).
 */
import { randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain, UserFacingError } from '../common/errors.js';
import { BULLMQ_CONNECTION_OPTIONS, QUEUES } from '../contracts/queues.js';
import { apiRoot, cpuPerRequest, createScratch, fmt, root, startApi, wrk as wrkFor } from './apiSupport.js';

const CONC = (process.env.CONC ?? '8 32').split(/\s+/).filter(Boolean).map(Number);
const DUR = Number(process.env.DUR ?? 8);
const DISPATCH_N = Number(process.env.DISPATCH_N ?? 200);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const PORT = Number(process.env.BENCH_PORT ?? 18788);
const CEILING_PORT = 18787;

const wrk = (args: string[], env: Record<string, string> = {}) => wrkFor(DUR, args, env);

/**
 * The bare ceiling (../shared/baselines/api_ceiling): its `server.mjs` started as its `run.sh` starts
 * it, on this run's database, and wrk with `run.sh`'s arguments. Kept up for the whole run (run.sh
 * starts it anew per concurrency), so that each of its runs can sit right beside the API's run it is
 * compared with: on this shared machine the speed of both moves by tens of percent within a minute.
 */
async function startCeiling(databaseUrl: string) {
  const source = `${root}../shared/baselines/api_ceiling`;
  if (!existsSync(`${source}/server.mjs`)) throw new UserFacingError(`ceiling server not found at ${source}/server.mjs`);
  const dir = process.env.CEILING_DIR ?? join(tmpdir(), 'momentum-api-ceiling');
  // The ceiling runs on this project's hono, @hono/node-server and postgres (no install, no network):
  // the comparison is then between the two programs, not between library versions.
  mkdirSync(dir, { recursive: true });
  if (!existsSync(join(dir, 'node_modules'))) symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  for (const file of ['server.mjs', 'post.lua']) copyFileSync(`${source}/${file}`, join(dir, file));
  const child = spawn(process.execPath, ['server.mjs'], { cwd: dir, env: { ...process.env, DATABASE_URL: databaseUrl, PORT: String(CEILING_PORT) }, stdio: ['ignore', 'pipe', 'inherit'] });
  const seed = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /seed (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`ceiling server exited (${code}): ${out}`)));
  });
  const url = `http://127.0.0.1:${CEILING_PORT}`;
  // Warmed up as the API is (JIT, pool, prepared statements) before anything is measured.
  wrkFor(2, ['-c8', '-s', join(dir, 'post.lua'), `${url}/jobs`]);
  wrkFor(2, ['-c8', `${url}/jobs/${seed}`]);
  return {
    insert: (c: number) => cpuPerRequest(child.pid, () => wrk([`-c${c}`, '-s', join(dir, 'post.lua'), `${url}/jobs`])),
    select: (c: number) => cpuPerRequest(child.pid, () => wrk([`-c${c}`, `${url}/jobs/${seed}`])),
    stop: () => void child.kill(),
  };
}

/** Runs the ceiling's and the API's run one right after the other, in the order given: [ceiling's, API's]. */
function inTurn<C, A>(ceilingRun: () => C, apiRun: () => A, ceilingFirst: boolean): [C, A] {
  if (ceilingFirst) {
    const ceilingResult = ceilingRun();
    return [ceilingResult, apiRun()];
  }
  const apiResult = apiRun();
  return [ceilingRun(), apiResult];
}

/**
 * Dispatch latency: POST → a BullMQ worker holding the job, one POST at a time (so it measures
 * latency, not queueing), after ten unmeasured ones that warm the path up.
 */
async function dispatchLatency(url: string, key: string, redisUrl: string, prefix: string): Promise<{ latencies: number[]; postLatencies: number[] }> {
  const pickedAt = new Map<string, number>();
  const waiters = new Map<string, () => void>();
  const connection = new Redis(redisUrl, { ...BULLMQ_CONNECTION_OPTIONS });
  const worker = new Worker(
    QUEUES.train,
    async (job) => {
      pickedAt.set(job.id!, performance.now());
      waiters.get(job.id!)?.();
    },
    { connection, prefix, concurrency: 4 },
  );
  try {
    await worker.waitUntilReady();
    const latencies: number[] = [];
    const postLatencies: number[] = [];
    for (let i = -10; i < DISPATCH_N; i++) {
      const started = performance.now();
      const res = await fetch(`${url}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'idempotency-key': randomUUID() },
        body: '{"type":"pretrain","dataset":"fmnist@1"}',
      });
      const { id } = (await res.json()) as { id: string };
      const posted = performance.now() - started;
      if (!pickedAt.has(id)) await new Promise<void>((resolve) => waiters.set(id, resolve));
      if (i < 0) continue;
      postLatencies.push(posted);
      latencies.push(pickedAt.get(id)! - started);
    }
    return { latencies, postLatencies };
  } finally {
    await worker.close();
    connection.disconnect();
  }
}

const median = (values: number[]) => pct(values, 50);

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

runMain(async () => {
  parseCommandLine('npm run bench:api   (no options; env CONC, DUR, BENCH_ROUNDS, DISPATCH_N, SKIP_CEILING, CEILING_DIR, BENCH_ROLES, BENCH_SKIP_READ, BENCH_SKIP_SUBMIT, BENCH_NODE_ARGS, BENCH_API_ROOT: see BENCHMARKS.md)', {});
  const base = loadConfig();
  const scratch = await createScratch(base);
  const { tag, key, prefix, database } = scratch;
  let api: Awaited<ReturnType<typeof startApi>> | undefined;
  let stopCeiling: (() => void) | undefined;
  try {
    // The API as it runs in production: its own process, dispatcher, reconciler and webhook worker in it.
    // BENCH_ROLES=http measures the HTTP path alone (dispatcher elsewhere); the default is how a single replica runs.
    const roles = process.env.BENCH_ROLES ?? 'http,dispatcher,reconciler,webhooks';
    api = await startApi(scratch.apiEnv, PORT, roles);
    const { url } = api;

    // Dispatch latency first, on a database with no backlog: after the load, the queue holds every
    // job the runs submitted, and dropping it set the reconciler re-enqueueing them all while the
    // latency was measured (p99 108–335 ms, BENCHMARKS.md, eighth round).
    const dispatch = roles.includes('dispatcher') && DISPATCH_N > 0 ? await dispatchLatency(url, key, base.REDIS_URL, prefix) : undefined;

    // Warm up (JIT, pools, prepared statements), then measure.
    const warm = await fetch(`${url}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{"type":"pretrain","dataset":"fmnist@1"}' });
    const seedJob = ((await warm.json()) as { id: string }).id;
    wrkFor(2, ['-c8', '-s', `${root}bench/api-submit.lua`, `${url}`], { MOMENTUM_API_KEY: key, BENCH_RUN: `${tag}-warm` });
    wrkFor(2, ['-c8', '-s', `${root}bench/api-read.lua`, `${url}/v1/jobs/${seedJob}`], { MOMENTUM_API_KEY: key });

    // Each API run sits right beside the ceiling's run it is compared with, the order turning round
    // by round (ceiling first, then API first): a slow minute of this shared machine then falls on
    // both sides of a pair, and the median of the rounds' ratios is the figure.
    const ceiling = process.env.SKIP_CEILING ? undefined : await startCeiling(scratch.databaseUrl);
    stopCeiling = ceiling?.stop;
    const rows: string[] = [];
    const samples = new Map(CONC.map((c) => [c, { submit: [] as number[], submitP99: [] as number[], submitCpu: [] as number[], read: [] as number[], readP99: [] as number[], readCpu: [] as number[] }]));
    const skipped = { rps: NaN, p50ms: NaN, p99ms: NaN, non2xx: 0, requests: 0, apiUs: NaN, postgresUs: NaN };
    const pid = api.child.pid;
    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of CONC) {
        const apiSubmit = () =>
          process.env.BENCH_SKIP_SUBMIT
            ? skipped
            : cpuPerRequest(pid, () => wrk([`-c${c}`, '-s', `${root}bench/api-submit.lua`, url], { MOMENTUM_API_KEY: key, BENCH_RUN: `${tag}-${round}-${c}` }));
        const apiRead = () =>
          process.env.BENCH_SKIP_READ ? skipped : cpuPerRequest(pid, () => wrk([`-c${c}`, '-s', `${root}bench/api-read.lua`, `${url}/v1/jobs/${seedJob}`], { MOMENTUM_API_KEY: key }));
        const ceilingFirst = round % 2 === 1;
        const [cPost, submit] = ceiling ? inTurn(() => ceiling.insert(c), apiSubmit, ceilingFirst) : [undefined, apiSubmit()];
        const [cGet, read] = ceiling ? inTurn(() => ceiling.select(c), apiRead, !ceilingFirst) : [undefined, apiRead()];
        const tagged = `round ${round} c=${String(c).padEnd(3)}`;
        if (!process.env.BENCH_SKIP_SUBMIT) rows.push(`${tagged} submit  ${fmt(submit)}   | ceiling insert ${cPost ? fmt(cPost) : 'n/a'}`);
        if (!process.env.BENCH_SKIP_READ) rows.push(`${tagged} read    ${fmt(read)}   | ceiling select ${cGet ? fmt(cGet) : 'n/a'}`);
        if (cPost && cGet) {
          const s = samples.get(c)!;
          s.submit.push(submit.rps / cPost.rps);
          s.submitP99.push(submit.p99ms / cPost.p99ms);
          s.submitCpu.push((submit.apiUs + submit.postgresUs) / (cPost.apiUs + cPost.postgresUs));
          s.read.push(read.rps / cGet.rps);
          s.readP99.push(read.p99ms / cGet.p99ms);
          s.readCpu.push((read.apiUs + read.postgresUs) / (cGet.apiUs + cGet.postgresUs));
        }
      }
    }
    const span = (v: number[], digits: number) => `${median(v).toFixed(digits)}x` + (v.length > 1 ? ` [${Math.min(...v).toFixed(digits)}–${Math.max(...v).toFixed(digits)}]` : '');
    const ratios = [...samples]
      .filter(([, s]) => s.submit.length > 0)
      .map(
        ([c, s]) =>
          `c=${c} (median of ${s.submit.length} [range]):` +
          (process.env.BENCH_SKIP_SUBMIT ? '' : ` submit/insert ${span(s.submit, 2)} (p99 ${span(s.submitP99, 1)}, CPU/req ${span(s.submitCpu, 1)})`) +
          (process.env.BENCH_SKIP_READ ? '' : `   read/select ${span(s.read, 2)} (p99 ${span(s.readP99, 1)}, CPU/req ${span(s.readCpu, 1)})`),
      );
    // Submissions per statement of the group commit (db/jobInsertBatch.ts): the rows one transaction
    // inserted share its xmin. The keys of the measured runs are `<tag>-<round>-<c>-<thread>-<n>`.
    const perStatement = await database.sql<{ c: string; jobs: number; statements: number }[]>`
      select split_part(idempotency_key, '-', 3) as c, count(*)::int as jobs, count(distinct xmin::text)::int as statements
      from jobs where idempotency_key like ${`${tag}-%`} and split_part(idempotency_key, '-', 2) <> 'warm'
      group by 1`;
    perStatement.sort((a, b) => Number(a.c) - Number(b.c));
    if (perStatement.length) ratios.push(`submissions per statement (jobs per transaction): ${perStatement.map((r) => `c=${r.c} ${(r.jobs / r.statements).toFixed(1)}`).join(', ')}`);
    const [{ n: created }] = (await database.sql`select count(*)::int as n from jobs`) as unknown as [{ n: number }];
    const [{ n: pendingOutbox }] = (await database.sql`select count(*)::int as n from outbox`) as unknown as [{ n: number }];
    const title = `${new Date().toISOString()}, ${ROUNDS} rounds, ${DUR} s per wrk run, wrk -t2, DATABASE_POOL_MAX=${base.DATABASE_POOL_MAX}, API roles ${roles}${apiRoot !== root ? `, API from ${apiRoot}` : ''}`;

    if (!dispatch) {
      console.log(`\n## API benchmark (${title}; ${DISPATCH_N === 0 ? 'DISPATCH_N=0' : 'no dispatcher'}, so no dispatch latency)`);
      for (const r of rows) console.log(r);
      for (const r of ratios) console.log(r.startsWith('c=') ? `ratio ${r}` : r);
      console.log(`jobs created during the run: ${created}; outbox rows still pending at the end of the load: ${pendingOutbox}`);
      return;
    }
    const { latencies, postLatencies } = dispatch;
    console.log(`\n## API benchmark (${title})`);
    for (const r of rows) console.log(r);
    for (const r of ratios) console.log(r.startsWith('c=') ? `ratio ${r}` : r);
    console.log(`jobs created during the run: ${created}; outbox rows still pending at the end of the load: ${pendingOutbox}`);
    console.log(
      `dispatch latency (POST sent → BullMQ worker has the job, before the load), n=${DISPATCH_N}, sequential: p50 ${pct(latencies, 50).toFixed(1)} ms, p99 ${pct(latencies, 99).toFixed(1)} ms` +
        ` (of which the POST itself: p50 ${pct(postLatencies, 50).toFixed(1)} ms)`,
    );
  } finally {
    stopCeiling?.();
    await api?.stop();
    await scratch.close();
  }
});
