/**
 * What the API benchmarks share (bench/api.ts, bench/api-pair.ts): wrk runs and their parsing, a
 * scratch world (database, bucket, queue prefix, tenant, admin key, a ready `fmnist@1`) removed at
 * the end, and API processes started as they run in production.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import type { Config } from '../common/config.js';
import { Storage, storageConfigFrom } from '../common/storage.js';
import { BULLMQ_CONNECTION_OPTIONS } from '../contracts/queues.js';
import { connectDatabase, type Database } from '../db/client.js';
import { ensureTenant, insertApiKey } from '../db/apiKeys.js';
import { generateApiKey } from '../api/auth/keys.js';
import { freePort } from '../scripts/support/localStack.js';
import { dropDatabase } from '../test/support/services.js';

export { freePort };

export const root = fileURLToPath(new URL('..', import.meta.url));
/**
 * The checkout whose API is measured (default: this one). Another checkout's path gives the
 * before/after of a change in one sitting, with the same bench script and wrk bodies.
 */
export const apiRoot = process.env.BENCH_API_ROOT ? `${process.env.BENCH_API_ROOT.replace(/\/$/, '')}/` : root;

export interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  non2xx: number;
  requests: number;
}

function ms(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

export function parseWrk(text: string): WrkResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  const p50 = /^\s+50%\s+(\S+)/m.exec(text)?.[1] ?? '';
  const p99 = /^\s+99%\s+(\S+)/m.exec(text)?.[1] ?? '';
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const requests = Number(/(\d+) requests in/.exec(text)?.[1] ?? NaN);
  return { rps, p50ms: ms(p50), p99ms: ms(p99), non2xx, requests };
}

/** Two wrk threads, or one when there is a single connection (wrk needs a connection per thread). */
function wrkArgs(durationS: number, args: string[]): string[] {
  const connections = Number(args.map((a) => /^-c(\d+)$/.exec(a)?.[1]).find(Boolean) ?? 10);
  return [`-t${Math.min(2, connections)}`, `-d${durationS}s`, '--latency', ...args];
}

const clockTicks = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** CPU seconds (user + system) a process has used so far, from /proc; NaN where there is no /proc (or no pid). */
export function processCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return NaN;
  }
}

/** The CPU seconds used so far by Postgres's processes (server and backends), from /proc. */
function postgresCpuSeconds(): number {
  let total = 0;
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('postgres')) total += processCpuSeconds(Number(pid));
    } catch {
      /* gone meanwhile */
    }
  }
  return total;
}

/**
 * The CPU per request of a load run, API process and Postgres apart, in µs: steadier than req/s on a
 * shared machine (a slow minute stretches the run, not the work per request), so the figure to
 * compare two versions by. NaN where there is no /proc.
 */
export function cpuPerRequest<T extends WrkResult>(apiPid: number | undefined, run: () => T): T & { apiUs: number; postgresUs: number } {
  const before = { api: processCpuSeconds(apiPid), pg: postgresCpuSeconds() };
  const result = run();
  const apiUs = ((processCpuSeconds(apiPid) - before.api) / result.requests) * 1e6;
  const postgresUs = ((postgresCpuSeconds() - before.pg) / result.requests) * 1e6;
  return { ...result, apiUs, postgresUs };
}

export function wrk(durationS: number, args: string[], env: Record<string, string> = {}): WrkResult {
  const r = spawnSync('wrk', wrkArgs(durationS, args), { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.error || r.status !== 0) throw new Error(`wrk failed (is it installed? apt-get install wrk): ${r.error?.message ?? r.stderr}`);
  return parseWrk(r.stdout);
}

/** Several wrk runs at once (one per API), each to completion. */
export async function wrkTogether(durationS: number, runs: { args: string[]; env?: Record<string, string> }[]): Promise<WrkResult[]> {
  return Promise.all(
    runs.map(
      ({ args, env }) =>
        new Promise<WrkResult>((resolve, reject) => {
          const child = spawn('wrk', wrkArgs(durationS, args), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          child.stdout.on('data', (d) => (out += d));
          child.stderr.on('data', (d) => (err += d));
          child.on('error', reject);
          child.on('exit', (code) => (code === 0 ? resolve(parseWrk(out)) : reject(new Error(`wrk failed: ${err}`))));
        }),
    ),
  );
}

export const fmt = (r: WrkResult & { apiUs?: number; postgresUs?: number }) =>
  `${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50ms.toFixed(2).padStart(6)} ms  p99 ${r.p99ms.toFixed(2).padStart(7)} ms` +
  (r.apiUs === undefined ? '' : `  CPU/req: API ${r.apiUs.toFixed(0).padStart(4)} µs, Postgres ${r.postgresUs!.toFixed(0).padStart(4)} µs`) +
  (r.non2xx ? `  (${r.non2xx} non-2xx!)` : '');

export async function waitForHttp(url: string, child: ChildProcess, timeoutMs = 240_000): Promise<void> {
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

/** A scratch database, bucket and queue prefix with one tenant, its admin key and a ready `fmnist@1`. */
export interface Scratch {
  tag: string;
  databaseUrl: string;
  bucket: string;
  prefix: string;
  database: Database;
  redis: Redis;
  key: string;
  tenantId: string;
  /** The environment of an API process on this scratch world (add API_PORT, API_ROLES). */
  apiEnv: Record<string, string>;
  close(): Promise<void>;
}

/**
 * Deletes the keys matching `pattern`, a thousand at a time: a long run leaves hundreds of
 * thousands of BullMQ keys, too many to spread into one call's arguments.
 */
async function deleteKeys(redis: Redis, pattern: string): Promise<void> {
  const keys = await redis.keys(pattern);
  for (let i = 0; i < keys.length; i += 1000) await redis.del(...keys.slice(i, i + 1000));
}

export async function createScratch(base: Config): Promise<Scratch> {
  const tag = `bench_${Date.now().toString(36)}`;
  const dbUrl = new URL(base.DATABASE_URL);
  dbUrl.pathname = `/momentum_${tag}`;
  const databaseUrl = dbUrl.toString();
  const bucket = `bench-${tag.replaceAll('_', '-')}`;
  const prefix = `mbench:${tag}`;
  // The measured checkout's own migrations: a before/after compares the schemas too (indexes cost writes).
  const { runMigrations } = (await import(pathToFileURL(`${apiRoot}db/migrate.ts`).href)) as typeof import('../db/migrate.js');
  await runMigrations(databaseUrl);
  const database = connectDatabase(databaseUrl, { max: 2 });
  const storage = new Storage({ ...storageConfigFrom(base), bucket });
  await storage.ensureBucket();
  const redis = new Redis(base.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
  const tenant = await ensureTenant(database.db, 'bench');
  const key = generateApiKey();
  await insertApiKey(database.db, { tenantId: tenant.id, name: 'bench', prefix: key.prefix, secretHash: key.hash, scopes: ['admin'] });
  const [d] = await database.sql<{ id: string }[]>`insert into datasets (tenant_id, name) values (${tenant.id}, 'fmnist') returning id`;
  await database.sql`insert into dataset_versions (dataset_id, version, state, options, upload_key, ready_at) values (${d!.id}, 1, 'ready', '{}'::jsonb, 'x', now())`;
  const apiEnv: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    S3_BUCKET: bucket,
    QUEUE_PREFIX: prefix,
    API_RATE_LIMIT_PER_MINUTE: String(1_000_000_000),
    // No runner takes the benchmark's jobs: every job it submits stays queued, so the tenant would
    // reach the default limit (500) in half a second. The limit is still checked (api/quotas.ts).
    TENANT_MAX_ACTIVE_JOBS: String(1_000_000_000),
    LOG_LEVEL: 'error',
  };
  return {
    tag,
    databaseUrl,
    bucket,
    prefix,
    database,
    redis,
    key: key.secret,
    tenantId: tenant.id,
    apiEnv,
    async close() {
      await deleteKeys(redis, `${prefix}:*`);
      redis.disconnect();
      await storage.deletePrefix('').catch(() => 0);
      storage.destroy();
      await database.close();
      await dropDatabase(`momentum_${tag}`, base.DATABASE_URL);
    },
  };
}

/** `api/server.ts` of {@link apiRoot} as its own process, up and answering /healthz. */
export async function startApi(env: Record<string, string>, port: number, roles: string): Promise<{ child: ChildProcess; url: string; stop(): Promise<void> }> {
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'api/server.ts'], {
    cwd: apiRoot,
    env: { ...process.env, ...env, API_PORT: String(port), API_ROLES: roles },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null) return;
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  };
  try {
    await waitForHttp(`${url}/healthz`, child);
  } catch (err) {
    await stop();
    throw err;
  }
  return { child, url, stop };
}
