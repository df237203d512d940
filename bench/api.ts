/**
 * `npm run bench:api`: job submission and job read through the whole API (auth, rate limit,
 * validation, idempotency, outbox) with wrk, side by side with the bare Hono + postgres.js ceiling
 * (../shared/baselines/api_ceiling/run.sh) in the same sitting, and the dispatch latency from POST
 * to a BullMQ worker picking the job up. Prints a table and ratios; asserts nothing.
 *
 * Env: CONC="8 32" DUR=8 (seconds per wrk run), DISPATCH_N=200, SKIP_CEILING=1, CEILING_DIR=<cache>,
 * BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (flags for the API process, e.g. to profile it),
 * BENCH_SKIP_READ=1 (submissions only: a profile of the write path alone).
 * Uses a scratch database, bucket and queue prefix of its own, removed at the end.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'bullmq';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { loadConfig } from '../common/config.js';
import { runMain, UserFacingError } from '../common/errors.js';
import { Storage, storageConfigFrom } from '../common/storage.js';
import { BULLMQ_CONNECTION_OPTIONS, QUEUES } from '../contracts/queues.js';
import { connectDatabase } from '../db/client.js';
import { ensureTenant, insertApiKey } from '../db/apiKeys.js';
import { runMigrations } from '../db/migrate.js';
import { generateApiKey } from '../api/auth/keys.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const CONC = (process.env.CONC ?? '8 32').split(/\s+/).filter(Boolean).map(Number);
const DUR = Number(process.env.DUR ?? 8);
const DISPATCH_N = Number(process.env.DISPATCH_N ?? 200);
const PORT = Number(process.env.BENCH_PORT ?? 18788);
const CEILING_PORT = 18787;

interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  non2xx: number;
}

function ms(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

function parseWrk(text: string): WrkResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  const p50 = /^\s+50%\s+(\S+)/m.exec(text)?.[1] ?? '';
  const p99 = /^\s+99%\s+(\S+)/m.exec(text)?.[1] ?? '';
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  return { rps, p50ms: ms(p50), p99ms: ms(p99), non2xx };
}

function wrk(args: string[], env: Record<string, string> = {}): WrkResult {
  const r = spawnSync('wrk', ['-t2', `-d${DUR}s`, '--latency', ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  return parseWrk(r.stdout);
}

/** Runs the bare ceiling script and parses its sections. */
function ceiling(databaseUrl: string): Map<string, WrkResult> {
  const script = `${root}../shared/baselines/api_ceiling/run.sh`;
  if (!existsSync(script)) throw new UserFacingError(`ceiling script not found at ${script}`);
  const r = spawnSync('bash', [script], {
    encoding: 'utf8',
    env: { ...process.env, DATABASE_URL: databaseUrl, CONC: CONC.join(' '), DUR: String(DUR), PORT: String(CEILING_PORT), CEILING_DIR: process.env.CEILING_DIR ?? '/tmp/momentum-api-ceiling' },
    timeout: 15 * 60_000,
  });
  if (r.status !== 0) throw new Error(`ceiling run failed (${r.status}): ${r.stderr}\n${r.stdout}`);
  const out = new Map<string, WrkResult>();
  for (const section of r.stdout.split(/^== /m).filter(Boolean)) {
    const title = section.split('\n')[0]!.trim(); // "POST /jobs c=8"
    out.set(title, parseWrk(section));
  }
  return out;
}

async function waitForHttp(url: string, child: ChildProcess, timeoutMs = 240_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`API exited with ${child.exitCode}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`API did not come up at ${url}`);
}

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const fmt = (r: WrkResult) => `${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50ms.toFixed(2).padStart(6)} ms  p99 ${r.p99ms.toFixed(2).padStart(7)} ms${r.non2xx ? `  (${r.non2xx} non-2xx!)` : ''}`;

runMain(async () => {
  const base = loadConfig();
  const tag = `bench_${Date.now().toString(36)}`;
  const dbUrl = new URL(base.DATABASE_URL);
  dbUrl.pathname = `/momentum_${tag}`;
  const databaseUrl = dbUrl.toString();
  const bucket = `bench-${tag.replaceAll('_', '-')}`;
  const prefix = `mbench:${tag}`;
  await runMigrations(databaseUrl);
  const database = connectDatabase(databaseUrl, { max: 2 });
  const storage = new Storage({ ...storageConfigFrom(base), bucket });
  await storage.ensureBucket();
  const redis = new Redis(base.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
  let api: ChildProcess | undefined;
  try {
    // Seed: a tenant, an admin key, a ready dataset version `fmnist@1` (what the bodies name).
    const tenant = await ensureTenant(database.db, 'bench');
    const key = generateApiKey();
    await insertApiKey(database.db, { tenantId: tenant.id, name: 'bench', prefix: key.prefix, secretHash: key.hash, scopes: ['admin'] });
    const [d] = await database.sql<{ id: string }[]>`insert into datasets (tenant_id, name) values (${tenant.id}, 'fmnist') returning id`;
    await database.sql`insert into dataset_versions (dataset_id, version, state, options, upload_key, ready_at) values (${d!.id}, 1, 'ready', '{}'::jsonb, 'x', now())`;

    // The ceiling first, in this sitting, on the same Postgres.
    const ceil = process.env.SKIP_CEILING ? new Map<string, WrkResult>() : ceiling(databaseUrl);

    // The API as it runs in production: its own process, dispatcher, reconciler and webhook worker in it.
    const env = {
      ...process.env,
      DATABASE_URL: databaseUrl,
      S3_BUCKET: bucket,
      QUEUE_PREFIX: prefix,
      API_PORT: String(PORT),
      API_RATE_LIMIT_PER_MINUTE: String(1_000_000_000),
      LOG_LEVEL: 'error',
      // BENCH_ROLES=http measures the HTTP path alone (dispatcher elsewhere); the default is how a single replica runs.
      API_ROLES: process.env.BENCH_ROLES ?? 'http,dispatcher,reconciler,webhooks',
    };
    const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    api = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'api/server.ts'], { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] });
    const url = `http://127.0.0.1:${PORT}`;
    await waitForHttp(`${url}/healthz`, api);

    // Warm up (JIT, pools, prepared statements), then measure.
    const warm = await fetch(`${url}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${key.secret}`, 'content-type': 'application/json' }, body: '{"type":"pretrain","dataset":"fmnist@1"}' });
    const seedJob = ((await warm.json()) as { id: string }).id;
    wrk(['-c8', '-d2s', '-s', `${root}bench/api-submit.lua`, `${url}`], { MOMENTUM_API_KEY: key.secret, BENCH_RUN: `${tag}-warm` });

    const rows: string[] = [];
    const ratios: string[] = [];
    for (const c of CONC) {
      const submit = wrk([`-c${c}`, '-s', `${root}bench/api-submit.lua`, url], { MOMENTUM_API_KEY: key.secret, BENCH_RUN: `${tag}-${c}` });
      const read = process.env.BENCH_SKIP_READ
        ? { rps: NaN, p50ms: NaN, p99ms: NaN, non2xx: 0 }
        : wrk([`-c${c}`, '-s', `${root}bench/api-read.lua`, `${url}/v1/jobs/${seedJob}`], { MOMENTUM_API_KEY: key.secret });
      const cPost = ceil.get(`POST /jobs c=${c}`);
      const cGet = ceil.get(`GET /jobs/:id c=${c}`);
      rows.push(`c=${String(c).padEnd(3)} submit  ${fmt(submit)}   | ceiling insert ${cPost ? fmt(cPost) : 'n/a'}`);
      rows.push(`c=${String(c).padEnd(3)} read    ${fmt(read)}   | ceiling select ${cGet ? fmt(cGet) : 'n/a'}`);
      if (cPost && cGet) {
        ratios.push(`c=${c}: submit/insert ${(submit.rps / cPost.rps).toFixed(2)}x   read/select ${(read.rps / cGet.rps).toFixed(2)}x`);
      }
    }
    const [{ n: created }] = (await database.sql`select count(*)::int as n from jobs`) as unknown as [{ n: number }];
    const [{ n: pendingOutbox }] = (await database.sql`select count(*)::int as n from outbox where dispatched_at is null`) as unknown as [{ n: number }];

    // Dispatch latency: POST → a BullMQ worker holding the job. One at a time, so it measures latency, not queueing.
    if (!env.API_ROLES.includes('dispatcher')) {
      console.log(`\n## API benchmark (${DUR} s per wrk run, API roles ${env.API_ROLES}; no dispatcher, so no dispatch latency)`);
      for (const r of rows) console.log(r);
      for (const r of ratios) console.log(`ratio ${r}`);
      return;
    }
    const pickedAt = new Map<string, number>();
    const waiters = new Map<string, () => void>();
    const connection = new Redis(base.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
    await redis.del(...(await redis.keys(`${prefix}:${QUEUES.train}:*`))).catch(() => 0); // drop the wrk backlog
    const worker = new Worker(
      QUEUES.train,
      async (job) => {
        pickedAt.set(job.id!, performance.now());
        waiters.get(job.id!)?.();
      },
      { connection, prefix, concurrency: 4 },
    );
    await worker.waitUntilReady();
    const latencies: number[] = [];
    const postLatencies: number[] = [];
    for (let i = 0; i < DISPATCH_N; i++) {
      const started = performance.now();
      const res = await fetch(`${url}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.secret}`, 'content-type': 'application/json', 'idempotency-key': randomUUID() },
        body: '{"type":"pretrain","dataset":"fmnist@1"}',
      });
      const { id } = (await res.json()) as { id: string };
      postLatencies.push(performance.now() - started);
      if (!pickedAt.has(id)) await new Promise<void>((resolve) => waiters.set(id, resolve));
      latencies.push(pickedAt.get(id)! - started);
    }
    await worker.close();
    connection.disconnect();

    console.log(`\n## API benchmark (${new Date().toISOString()}, ${DUR} s per wrk run, wrk -t2, DATABASE_POOL_MAX=${base.DATABASE_POOL_MAX}, API roles ${env.API_ROLES})`);
    for (const r of rows) console.log(r);
    for (const r of ratios) console.log(`ratio ${r}`);
    console.log(`jobs created during the run: ${created}; outbox rows still pending at the end of the load: ${pendingOutbox}`);
    console.log(
      `dispatch latency (POST sent → BullMQ worker has the job), n=${DISPATCH_N}, sequential: p50 ${pct(latencies, 50).toFixed(1)} ms, p99 ${pct(latencies, 99).toFixed(1)} ms` +
        ` (of which the POST itself: p50 ${pct(postLatencies, 50).toFixed(1)} ms)`,
    );
  } finally {
    if (api && api.exitCode === null) {
      api.kill('SIGTERM');
      await new Promise((r) => api!.once('exit', r));
    }
    await redis.keys(`${prefix}:*`).then((keys) => (keys.length ? redis.del(...keys) : 0));
    redis.disconnect();
    await storage.deletePrefix('').catch(() => 0);
    storage.destroy();
    await database.close();
    const admin = new URL(base.DATABASE_URL);
    admin.pathname = '/postgres';
    const sql = postgres(admin.toString(), { max: 1, onnotice: () => {} });
    await sql.unsafe(`drop database if exists "momentum_${tag}" with (force)`);
    await sql.end();
  }
});
