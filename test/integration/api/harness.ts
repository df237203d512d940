/**
 * A Momentum app against this test run's own database, bucket and queue prefix, with two tenants and
 * keys of several scopes, plus small helpers to call it and to seed what the runner would write.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createLogger } from '../../../common/logger.js';
import type { Config } from '../../../common/config.js';
import { createApp } from '../../../api/app.js';
import { closeQueues, createQueues, type AppDeps } from '../../../api/deps.js';
import { generateApiKey } from '../../../api/auth/keys.js';
import { ensureTenant, insertApiKey } from '../../../db/apiKeys.js';
import { createTestDatabase, createTestStorage, removeQueueKeys, testConfig, type TestDatabase, type TestStorage } from '../../support/services.js';
import { BULLMQ_CONNECTION_OPTIONS } from '../../../contracts/queues.js';
import { checkpointPrefix } from '../../../contracts/storageKeys.js';

export const SIGNING_KEY = 'test-webhook-signing-root-key';

export interface Harness {
  config: Config;
  deps: AppDeps;
  app: ReturnType<typeof createApp>['app'];
  keyCache: ReturnType<typeof createApp>['keyCache'];
  /** The app's GET /v1/jobs/{id} front (api/fastJobRead.ts), which only a real server (api/httpServer.ts) puts before the app. */
  fastPath: ReturnType<typeof createApp>['fastPath'];
  database: TestDatabase;
  bucket: TestStorage;
  tenantA: string;
  tenantB: string;
  /** Keys of tenant A by scope set; `adminB` is tenant B's admin. */
  keys: { admin: string; readOnly: string; datasetsOnly: string; adminB: string };
  request(method: string, path: string, opts?: { key?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> }): Promise<Response>;
  close(): Promise<void>;
}

export async function createHarness(overrides: Partial<Config> = {}, depOverrides: Partial<AppDeps> = {}): Promise<Harness> {
  const database = await createTestDatabase();
  const bucket = await createTestStorage();
  // Every request of app.request() comes from one address ("unknown"): the auth guard's limits are
  // lifted unless a test sets them (authGuard.test.ts does), so suites that send bad keys on purpose
  // see their 401s.
  const config = testConfig({
    S3_BUCKET: bucket.bucket,
    DATABASE_URL: database.url,
    WEBHOOK_ALLOW_PRIVATE: true,
    LOG_LEVEL: 'silent',
    API_AUTH_FAILURES_PER_MINUTE: 1_000_000,
    API_KEY_LOOKUPS_PER_SECOND: 1_000_000,
    ...overrides,
  });
  const redis = new Redis(config.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
  const queues = createQueues(config, redis);
  const deps: AppDeps = {
    config,
    db: database.db,
    sql: database.sql,
    storage: bucket.storage,
    redis,
    queues,
    logger: createLogger('silent'),
    webhookSigningKey: SIGNING_KEY,
    ssePollMs: 50,
    ...depOverrides,
  };
  const { app, keyCache, fastPath } = createApp(deps);
  const a = await ensureTenant(database.db, 'tenant-a');
  const b = await ensureTenant(database.db, 'tenant-b');
  const mk = async (tenantId: string, scopes: string[]) => {
    const m = generateApiKey();
    await insertApiKey(database.db, { tenantId, name: scopes.join('+'), prefix: m.prefix, secretHash: m.hash, scopes });
    return m.secret;
  };
  const keys = {
    admin: await mk(a.id, ['admin']),
    readOnly: await mk(a.id, ['jobs:read', 'datasets:read', 'checkpoints:read']),
    datasetsOnly: await mk(a.id, ['datasets:read', 'datasets:write']),
    adminB: await mk(b.id, ['admin']),
  };
  const harness: Harness = {
    config,
    deps,
    app,
    keyCache,
    fastPath,
    database,
    bucket,
    tenantA: a.id,
    tenantB: b.id,
    keys,
    request(method, path, opts = {}) {
      const headers: Record<string, string> = { ...(opts.headers ?? {}) };
      const key = opts.key === undefined ? keys.admin : opts.key;
      if (key) headers.authorization = `Bearer ${key}`;
      let body: string | undefined = opts.raw;
      if (opts.body !== undefined) body = JSON.stringify(opts.body);
      if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
      return Promise.resolve(app.request(path, { method, headers, body }));
    },
    async close() {
      await closeQueues(queues);
      await removeQueueKeys(redis, config.QUEUE_PREFIX);
      redis.disconnect();
      await bucket.cleanup();
      await database.cleanup();
    },
  };
  return harness;
}

/** A ready dataset version, as ingestion would leave it. */
export async function seedReadyDataset(h: Harness, tenantId: string, name: string, versions = 1): Promise<{ datasetId: string; versionIds: string[] }> {
  const [d] = await h.database.sql<{ id: string }[]>`insert into datasets (tenant_id, name) values (${tenantId}, ${name}) returning id`;
  const versionIds: string[] = [];
  for (let v = 1; v <= versions; v++) {
    const manifest = { manifestVersion: 1, format: 'idx', height: 28, width: 28, channels: 1, classes: ['a', 'b'], splits: { train: { count: 10, classCounts: [5, 5], shards: [] } } };
    const [row] = await h.database.sql<{ id: string }[]>`
      insert into dataset_versions (dataset_id, version, state, options, upload_key, manifest, ready_at)
      values (${d!.id}, ${v}, 'ready', ${JSON.stringify({ format: 'idx' })}::jsonb, ${`datasets/${tenantId}/${d!.id}/v${v}/upload/archive`}, ${JSON.stringify(manifest)}::jsonb, now())
      returning id`;
    versionIds.push(row!.id);
  }
  return { datasetId: d!.id, versionIds };
}

/** A checkpoint version with its files in S3, registered the way the runner does. */
export async function seedCheckpoint(
  h: Harness,
  tenantId: string,
  jobId: string,
  version: number,
  files: Record<string, Uint8Array>,
): Promise<{ id: string; files: Record<string, { key: string; bytes: number; sha256: string }> }> {
  const prefix = checkpointPrefix(tenantId, jobId, version);
  const recorded: Record<string, { key: string; bytes: number; sha256: string }> = {};
  for (const [name, bytes] of Object.entries(files)) {
    const put = await h.bucket.storage.put(prefix + name, bytes);
    recorded[name] = { key: put.key, bytes: put.bytes, sha256: put.sha256 };
  }
  const total = Object.values(recorded).reduce((s, f) => s + f.bytes, 0);
  const [row] = await h.database.sql<{ id: string }[]>`
    insert into checkpoints (job_id, version, step, epoch, s3_prefix, files, bytes, sha256)
    values (${jobId}, ${version}, ${version * 100}, ${version}, ${prefix}, ${JSON.stringify(recorded)}::jsonb, ${total}, ${recorded['state.safetensors']?.sha256 ?? 'none'})
    returning id`;
  return { id: row!.id, files: recorded };
}

/** Sets a job's state directly (what a runner's transitions would have done). */
export async function forceState(h: Harness, jobId: string, state: string): Promise<void> {
  await h.database.sql`update jobs set state = ${state}, updated_at = now() where id = ${jobId}`;
}

export function pretrain(dataset: string, extra: Record<string, unknown> = {}) {
  return { type: 'pretrain', dataset, model: { arch: 'vit_tiny', patch: 4 }, optim: { lr: 1.5e-4, batch: 64 }, epochs: 2, ...extra };
}

export { randomUUID };
