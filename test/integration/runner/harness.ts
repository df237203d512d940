/**
 * The whole service for runner tests: the real API app (in this process, with its outbox
 * dispatcher moving jobs to BullMQ), real runner processes (`runner/main.ts`, which can be
 * SIGTERMed and SIGKILLed), and this test run's own Postgres database, S3 bucket and queue prefix.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { Config } from '../../../common/config.js';
import { createLogger } from '../../../common/logger.js';
import { createApp } from '../../../api/app.js';
import { closeQueues, createQueues, type AppDeps } from '../../../api/deps.js';
import { OutboxDispatcher } from '../../../api/dispatcher.js';
import { generateApiKey } from '../../../api/auth/keys.js';
import { ensureTenant, insertApiKey } from '../../../db/apiKeys.js';
import { BULLMQ_CONNECTION_OPTIONS } from '../../../contracts/queues.js';
import { generateSyntheticDataset, writeIdxArchive } from '../../../runner/datasets/index.js';
import { configEnv } from '../../../runner/supervisor/context.js';
import { createTestDatabase, createTestStorage, removeQueueKeys, testConfig, uniqueName, type TestDatabase, type TestStorage } from '../../support/services.js';

const REPO = join(import.meta.dirname, '..', '..', '..');

export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export interface RunnerProcess {
  proc: ChildProcess;
  /** Every JSON log line the runner wrote so far. */
  logs: Record<string, unknown>[];
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  signal(sig: NodeJS.Signals): void;
}

export interface RunnerHarness {
  config: Config;
  database: TestDatabase;
  bucket: TestStorage;
  tenantId: string;
  /** The API app itself, e.g. to serve it over HTTP for the CLI. */
  app: ReturnType<typeof createApp>['app'];
  /** An admin key of the tenant. */
  apiKey: string;
  /** The app's dependencies (to start a background service such as the sweep driver in a test). */
  deps: AppDeps;
  api<T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse<T>>;
  startRunner(opts?: { env?: Record<string, string>; args?: string[] }): RunnerProcess;
  /** Uploads labeled synthetic 16×16 grayscale images as an IDX archive through the API (a new version when the dataset exists); resolves when ingested. */
  uploadSyntheticDataset(name: string, opts?: { perClass?: number; numClasses?: number; size?: number; timeoutMs?: number }): Promise<void>;
  submit(spec: Record<string, unknown>): Promise<{ id: string }>;
  waitForJob(id: string, until: (job: any) => boolean, what: string, timeoutMs?: number): Promise<any>;
  close(): Promise<void>;
}

/**
 * Runner processes of this test file still alive. When the test runner stops the file (its time
 * limit, Ctrl-C) they would be left behind training forever: they go with it. Their training
 * processes exit on their own when the IPC channel to the runner closes.
 */
const liveRunners = new Set<ChildProcess>();
process.once('exit', () => {
  for (const proc of liveRunners) proc.kill('SIGKILL');
});
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => process.exit(signal === 'SIGTERM' ? 143 : 130));
}

/**
 * `opts.dispatcher: false` leaves the outbox to API processes the test starts itself (replicas):
 * the in-process app then only writes it.
 */
export async function createRunnerHarness(overrides: Partial<Config> = {}, opts: { dispatcher?: boolean } = {}): Promise<RunnerHarness> {
  const database = await createTestDatabase();
  const bucket = await createTestStorage(overrides.S3_ENDPOINT);
  const dataDir = join(REPO, 'var', 'tmp', uniqueName('runner-test'));
  const config = testConfig({
    S3_BUCKET: bucket.bucket,
    DATABASE_URL: database.url,
    DATA_DIR: dataDir,
    LOG_LEVEL: 'info',
    // Short locks so a killed runner's job comes back within seconds, not a minute.
    RUNNER_LOCK_MS: 3000,
    RUNNER_GRACE_SECONDS: 40,
    RUNNER_MAX_ATTEMPTS: 4,
    TFJS_BACKEND: 'cpu',
    ...overrides,
  });
  const redis = new Redis(config.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
  const queues = createQueues(config, redis);
  const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
  const deps: AppDeps = { config, db: database.db, sql: database.sql, storage: bucket.storage, redis, queues, logger };
  const dispatcher = opts.dispatcher === false ? undefined : new OutboxDispatcher({ sql: database.sql, queues, logger, pollMs: 100 });
  if (dispatcher) {
    deps.onOutboxWritten = () => dispatcher.wake();
    dispatcher.start();
  }
  const { app } = createApp(deps);
  const tenant = await ensureTenant(database.db, 'runner-tests');
  const material = generateApiKey();
  await insertApiKey(database.db, { tenantId: tenant.id, name: 'admin', prefix: material.prefix, secretHash: material.hash, scopes: ['admin'] });
  const runners: RunnerProcess[] = [];

  const api = async <T = any>(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<ApiResponse<T>> => {
    const headers: Record<string, string> = { authorization: `Bearer ${material.secret}`, ...extraHeaders };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await app.request(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    const json = (res.headers.get('content-type') ?? '').includes('json');
    return { status: res.status, body: text ? (json ? JSON.parse(text) : text) : null, headers: res.headers };
  };

  const waitForJob = async (id: string, until: (job: any) => boolean, what: string, timeoutMs = 300_000) => {
    const deadline = Date.now() + timeoutMs;
    let job: any;
    while (Date.now() < deadline) {
      job = (await api('GET', `/v1/jobs/${id}`)).body;
      if (until(job)) return job;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`job ${id} never reached "${what}" within ${timeoutMs} ms; last seen: ${JSON.stringify(job)}\nrunner output:\n${runners.map((r) => r.output()).join('\n---\n').slice(-6000)}`);
  };

  return {
    config,
    database,
    bucket,
    tenantId: tenant.id,
    app,
    apiKey: material.secret,
    deps,
    api,
    startRunner(opts = {}) {
      const proc = spawn(process.execPath, ['--import', 'tsx', 'runner/main.ts', ...(opts.args ?? [])], {
        cwd: REPO,
        env: { ...process.env, ...configEnv(config), ...(opts.env ?? {}) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const logs: Record<string, unknown>[] = [];
      let text = '';
      const take = (chunk: Buffer) => {
        text += chunk.toString();
        for (const line of chunk.toString().split('\n')) {
          if (!line.startsWith('{')) continue;
          try {
            logs.push(JSON.parse(line));
          } catch {
            // a line split across chunks; the text keeps it
          }
        }
      };
      proc.stdout!.on('data', take);
      proc.stderr!.on('data', take);
      liveRunners.add(proc);
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        proc.on('exit', (code, signal) => {
          liveRunners.delete(proc);
          resolve({ code, signal });
        }),
      );
      const runner: RunnerProcess = { proc, logs, output: () => text, exited, signal: (sig) => proc.kill(sig) };
      runners.push(runner);
      return runner;
    },
    async uploadSyntheticDataset(name, opts = {}) {
      const make = (seed: number, perClass: number) =>
        generateSyntheticDataset({ numClasses: opts.numClasses ?? 4, perClass, size: opts.size ?? 16, channels: 1, seed });
      const archive = await writeIdxArchive({ train: make(1, opts.perClass ?? 48), val: make(2, Math.max(8, Math.floor((opts.perClass ?? 48) / 4))) });
      const created = await api('POST', '/v1/datasets', { name });
      if (created.status !== 201 && created.body?.error?.code !== 'dataset_exists') throw new Error(`create dataset: ${created.status} ${JSON.stringify(created.body)}`);
      const version = await api('POST', `/v1/datasets/${name}/versions`, { options: { format: 'idx' }, fileName: 'data.tar.gz', sizeBytes: archive.byteLength });
      if (version.status !== 201) throw new Error(`create version: ${version.status} ${JSON.stringify(version.body)}`);
      const put = await fetch(version.body.upload.url, { method: 'PUT', body: new Uint8Array(archive) });
      if (!put.ok) throw new Error(`upload: ${put.status} ${await put.text()}`);
      const finalized = await api('POST', `/v1/datasets/${name}/versions/${version.body.version}/finalize`);
      if (finalized.status >= 300) throw new Error(`finalize: ${finalized.status} ${JSON.stringify(finalized.body)}`);
      const jobId = finalized.body.job?.id as string | undefined;
      if (jobId) await waitForJob(jobId, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'ingested', opts.timeoutMs);
      const ready = await api('GET', `/v1/datasets/${name}/versions/${version.body.version}`);
      if (ready.body.state !== 'ready') throw new Error(`dataset ${name} not ready: ${JSON.stringify(ready.body)}`);
    },
    async submit(spec) {
      const res = await api('POST', '/v1/jobs', spec);
      if (res.status !== 201) throw new Error(`submit: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    },
    waitForJob,
    async close() {
      for (const r of runners) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill('SIGKILL');
      await Promise.all(runners.map((r) => r.exited));
      await dispatcher?.stop();
      await closeQueues(queues);
      await removeQueueKeys(redis, config.QUEUE_PREFIX);
      redis.disconnect();
      await bucket.cleanup();
      await database.cleanup();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A pretrain spec small enough for a shared 2-core machine: a 2-block ViT of width 32 on 16×16 images.
 * No kNN monitor unless a test asks for one (`monitor`): here one evaluation costs more than several
 * steps, and a short run would evaluate at every step.
 */
export function tinyPretrain(dataset: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'pretrain',
    dataset,
    model: { arch: 'vit_tiny', imageSize: 16, patch: 4, dim: 32, depth: 2, heads: 2 },
    moco: { projector: { hiddenDim: 64, outDim: 32 }, predictor: { hiddenDim: 64 } },
    optim: { batch: 16 },
    epochs: 4,
    checkpointEvery: 8,
    keepCheckpoints: 3,
    monitor: { knn: false },
    ...extra,
  };
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Polls `probe` until it returns something truthy; fails naming `what` after `timeoutMs` (generous: a loaded
 * 2-core machine is slow, and the test runner's per-file limit bounds a real hang anyway). */
export async function eventually<T>(probe: () => Promise<T | undefined | null | false>, what: string, timeoutMs = 300_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
