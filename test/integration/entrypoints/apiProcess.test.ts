/**
 * The API as a real process (`npm run api`, minus npm), the way an orchestrator runs it:
 * - SIGTERM drains (docs/api.md "Running it"): a request in flight when the signal comes still gets
 *   its answer, new connections are refused, an open event stream does not hold the exit, and the
 *   process exits 0 before its 20 s deadline (past it, it would exit 1).
 * - `--roles` starts what it names: an `http`-only replica serves but does not dispatch; a
 *   `dispatcher`-only replica opens no port and moves the jobs the other one accepted to the queue.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { generateApiKey } from '../../../api/auth/keys.js';
import { ensureTenant, insertApiKey } from '../../../db/apiKeys.js';
import { BULLMQ_CONNECTION_OPTIONS, QUEUES } from '../../../contracts/queues.js';
import { configEnv } from '../../../runner/supervisor/context.js';
import type { Config } from '../../../common/config.js';
import { createTestDatabase, createTestStorage, removeQueueKeys, testConfig, type TestDatabase, type TestStorage } from '../../support/services.js';
import { freePort } from '../../support/privateServices.js';

const REPO = join(import.meta.dirname, '..', '..', '..');

let database: TestDatabase;
let bucket: TestStorage;
let apiKey: string;
let queuePrefix: string;
const live = new Set<ChildProcess>();

interface ApiProcess {
  port: number;
  proc: ChildProcess;
  logs: Record<string, unknown>[];
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log line that matches. */
  logLine(match: (l: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>>;
}

before(async () => {
  database = await createTestDatabase();
  bucket = await createTestStorage();
  queuePrefix = testConfig({}).QUEUE_PREFIX;
  const tenant = await ensureTenant(database.db, 'api-process');
  const key = generateApiKey();
  await insertApiKey(database.db, { tenantId: tenant.id, name: 'admin', prefix: key.prefix, secretHash: key.hash, scopes: ['admin'] });
  apiKey = key.secret;
  // A ready dataset (what an ingestion would leave), so that jobs can be submitted without a runner.
  const [d] = await database.sql`insert into datasets (tenant_id, name) values (${tenant.id}, 'fmnist') returning id`;
  const manifest = { manifestVersion: 1, format: 'idx', height: 28, width: 28, channels: 1, classes: ['a', 'b'], splits: { train: { count: 10, classCounts: [5, 5], shards: [] } } };
  await database.sql`
    insert into dataset_versions (dataset_id, version, state, options, upload_key, manifest, ready_at)
    values (${d!.id}, 1, 'ready', '{"format":"idx"}'::jsonb, 'x', ${JSON.stringify(manifest)}::jsonb, now())`;
});

after(async () => {
  for (const p of live) p.kill('SIGKILL');
  const redis = new Redis(testConfig({}).REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
  await removeQueueKeys(redis, queuePrefix);
  redis.disconnect();
  await bucket?.cleanup();
  await database?.cleanup();
});

async function startApi(roles: string, extra: Partial<Config> = {}): Promise<ApiProcess> {
  const port = await freePort();
  const config = testConfig({ DATABASE_URL: database.url, S3_BUCKET: bucket.bucket, QUEUE_PREFIX: queuePrefix, API_PORT: port, API_ROLES: roles, LOG_LEVEL: 'info', ...extra });
  const proc = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts'], { cwd: REPO, env: { ...process.env, ...configEnv(config) }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const logs: Record<string, unknown>[] = [];
  const waiters: { match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let text = '';
  let pending = '';
  const take = (chunk: Buffer) => {
    text += chunk;
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      const entry = JSON.parse(line) as Record<string, unknown>;
      logs.push(entry);
      for (const w of [...waiters]) {
        if (!w.match(entry)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(entry);
      }
    }
  };
  proc.stdout!.on('data', take);
  proc.stderr!.on('data', take);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    }),
  );
  const logLine = (match: (l: Record<string, unknown>) => boolean, what: string) => {
    const seen = logs.find(match);
    if (seen) return Promise.resolve(seen);
    return Promise.race([
      new Promise<Record<string, unknown>>((resolve) => waiters.push({ match, resolve })),
      exited.then(({ code, signal }) => {
        throw new Error(`the API exited (${code ?? signal}) before logging ${what}:\n${text}`);
      }),
    ]);
  };
  const api: ApiProcess = { port, proc, logs, output: () => text, exited, logLine };
  await logLine((l) => /^listening on|^running without HTTP/.test(String(l.msg)), 'that it started');
  return api;
}

const msg = (m: string | RegExp) => (l: Record<string, unknown>) => (typeof m === 'string' ? l.msg === m : m.test(String(l.msg)));

/** A new TCP connection (never a pooled one): 'refused' once nothing listens on the port any more. */
/**
 * `reset`: the connection reached the listener's accept queue just as the listener closed (the
 * kernel then resets what it queued), i.e. the port is closing but was not yet refusing.
 */
function tryConnect(port: number): Promise<'accepted' | 'refused' | 'reset'> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve('accepted')));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') resolve('refused');
      else if (err.code === 'ECONNRESET') resolve('reset');
      else reject(err);
    });
  });
}

/**
 * A POST whose body is sent in two halves. `Expect: 100-continue` makes the server say when it has
 * taken the request (its handler is running and waiting for the body): only then is it in flight.
 */
async function startSlowPost(port: number, path: string, body: unknown): Promise<{ req: ClientRequest; rest: () => void; response: Promise<{ status: number; text: string }> }> {
  const payload = Buffer.from(JSON.stringify(body));
  const req = httpRequest({
    host: '127.0.0.1',
    port,
    path,
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', 'content-length': payload.length, expect: '100-continue' },
  });
  const response = new Promise<{ status: number; text: string }>((resolve, reject) => {
    req.on('response', (res: IncomingMessage) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  response.catch(() => {}); // awaited by the test; a failure before that must not go unhandled
  const half = Math.floor(payload.length / 2);
  await new Promise<void>((resolve, reject) => {
    req.once('continue', () => req.write(payload.subarray(0, half), (err) => (err ? reject(err) : resolve())));
    req.once('error', reject);
    req.flushHeaders();
  });
  return { req, rest: () => req.end(payload.subarray(half)), response };
}

test('SIGTERM: the request in flight is answered, new connections are refused, an open event stream ends, exit 0', async () => {
  const api = await startApi('http,dispatcher,reconciler,webhooks,sweeps');
  const base = `http://127.0.0.1:${api.port}`;
  const auth = { authorization: `Bearer ${apiKey}` };
  // Ready first (each dependency check has a short timeout: on a loaded machine one may miss it once).
  while ((await fetch(`${base}/readyz`)).status !== 200) await new Promise((r) => setTimeout(r, 200));

  // A job nobody runs: its event stream stays open until the job finishes, i.e. forever here.
  const submitted = await fetch(`${base}/v1/jobs`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'pretrain', dataset: 'fmnist', model: { arch: 'vit_tiny', patch: 4 }, optim: { batch: 16 }, epochs: 1 }),
  });
  assert.equal(submitted.status, 201, await submitted.clone().text());
  const job = (await submitted.json()) as { id: string };
  const stream = await fetch(`${base}/v1/jobs/${job.id}/events`, { headers: { ...auth, accept: 'text/event-stream' } });
  assert.equal(stream.status, 200);
  const reader = stream.body!.getReader();
  let streamed = '';
  const streamEnded = (async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return 'ended';
      streamed += Buffer.from(value).toString();
    }
  })().catch((err: Error) => `torn: ${err.message}`);
  await (async () => {
    while (!streamed.includes('event: state')) await new Promise((r) => setTimeout(r, 50));
  })();

  const inFlight = await startSlowPost(api.port, '/v1/datasets', { name: 'sent-during-shutdown', description: 'x'.repeat(2000) });
  api.proc.kill('SIGTERM');
  await api.logLine(msg('shutting down'), 'that it is shutting down');
  // The listener is closed first: an orchestrator's next probe or a new client is refused.
  await (async () => {
    while ((await tryConnect(api.port)) !== 'refused') await new Promise((r) => setTimeout(r, 50));
  })();

  inFlight.rest();
  const answer = await inFlight.response;
  assert.equal(answer.status, 201, `the request in flight was answered: ${answer.text}`);
  const [row] = await database.sql`select name from datasets where name = 'sent-during-shutdown'`;
  assert.ok(row, 'and what it asked for was done');

  // The server ended the stream (the client reconnects elsewhere with Last-Event-ID) rather than
  // holding the shutdown until the deadline tore it down.
  assert.equal(await streamEnded, 'ended');
  assert.doesNotMatch(streamed, /event: end/, 'not the end of the job: the job is still queued');
  const { code, signal } = await api.exited;
  assert.equal(signal, null, api.output());
  assert.equal(code, 0, `exit 0 (1 means the 20 s drain deadline was hit):\n${api.output().slice(-3000)}`);
  assert.ok(api.logs.some(msg('stopped')), 'it logged that it stopped');
  assert.ok(!api.logs.some(msg(/shutdown took over/)), 'it did not hit its drain deadline');
});

test('--roles: an http-only replica serves without dispatching; a dispatcher-only one opens no port and dispatches', async () => {
  const web = await startApi('http');
  const worker = await startApi('dispatcher');
  try {
    assert.deepEqual(web.logs.find(msg(/^listening on/))?.roles, ['http']);
    assert.deepEqual(worker.logs.find(msg('running without HTTP'))?.roles, ['dispatcher']);
    assert.equal(await tryConnect(worker.port), 'refused', 'the dispatcher-only replica listens nowhere');

    const res = await fetch(`http://127.0.0.1:${web.port}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'pretrain', dataset: 'fmnist', model: { arch: 'vit_tiny', patch: 4 }, optim: { batch: 16 }, epochs: 1 }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const { id } = (await res.json()) as { id: string };
    // The other replica's dispatcher moves the accepted job to the queue (the outbox row is done).
    const redis = new Redis(testConfig({}).REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
    const queue = new Queue(QUEUES.train, { connection: redis, prefix: queuePrefix });
    try {
      for (;;) {
        const pending = await database.sql`select id from outbox where payload->>'jobId' = ${id} and topic = 'job.enqueue'`;
        if (pending.length === 0 && (await queue.getJob(id))) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await queue.close();
      redis.disconnect();
    }
    for (const p of [web, worker]) p.proc.kill('SIGTERM');
    for (const p of [web, worker]) assert.equal((await p.exited).code, 0, p.output().slice(-2000));
  } finally {
    for (const p of [web, worker]) p.proc.kill('SIGKILL');
  }
});

test('--roles naming something that does not exist is one line and exit 1', async () => {
  const port = await freePort();
  const config = testConfig({ DATABASE_URL: database.url, S3_BUCKET: bucket.bucket, QUEUE_PREFIX: queuePrefix, API_PORT: port });
  const proc = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts', '--roles', 'http,mailer'], { cwd: REPO, env: { ...process.env, ...configEnv(config) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => proc.on('exit', resolve));
  assert.equal(code, 1);
  assert.equal(stderr.trim().split('\n').length, 1, stderr);
  assert.match(stderr, /--roles must be a comma-separated subset of http,dispatcher/);
  assert.match(stderr, /mailer/);
});
