/**
 * More than one of each: two API processes (`api/server.ts`, every role: HTTP, outbox dispatcher,
 * reconciler, webhook worker) and two runner processes against one Postgres, Redis and S3. Jobs
 * submitted through both APIs each run exactly once, to completion, on one of the runners; the same
 * Idempotency-Key sent to both APIs at once makes one job; a cancel sent to the API that did not
 * take the job reaches the runner holding it. The throughput of such a pair is bench/api-pair.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { configEnv } from '../../../runner/supervisor/context.js';
import { freePort } from '../../support/privateServices.js';
import { createRunnerHarness, eventually, tinyPretrain, type RunnerHarness, type RunnerProcess } from './harness.js';

const REPO = join(import.meta.dirname, '..', '..', '..');
const DATASET = 'shapes-replicas';
const TERMINAL = ['succeeded', 'failed', 'canceled'];

interface ApiProcess {
  proc: ChildProcess;
  url: string;
  output: () => string;
}

let h: RunnerHarness;
const apis: ApiProcess[] = [];
const runners: RunnerProcess[] = [];

async function startApi(): Promise<ApiProcess> {
  const port = await freePort();
  const proc = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts'], {
    cwd: REPO,
    env: { ...process.env, ...configEnv(h.config), API_PORT: String(port), API_ROLES: 'http,dispatcher,reconciler,webhooks', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  proc.stdout!.on('data', (d) => (text += d));
  proc.stderr!.on('data', (d) => (text += d));
  const api = { proc, url: `http://127.0.0.1:${port}`, output: () => text };
  await eventually(async () => {
    if (proc.exitCode !== null) throw new Error(`API exited with ${proc.exitCode}:\n${text.slice(-3000)}`);
    return fetch(`${api.url}/healthz`).then((r) => r.ok, () => false);
  }, `the API on port ${port}`);
  return api;
}

async function call(api: ApiProcess, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${h.apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any, headers: res.headers };
}

/** Log lines of one runner about one job with this message. */
const lines = (r: RunnerProcess, jobId: string, msg: string) => r.logs.filter((l) => l.jobId === jobId && l.msg === msg);

before(async () => {
  // No dispatcher in the test process: only the two API processes move the outbox.
  h = await createRunnerHarness({}, { dispatcher: false });
  apis.push(await startApi(), await startApi());
  runners.push(h.startRunner(), h.startRunner());
  await h.uploadSyntheticDataset(DATASET);
});

after(async () => {
  for (const api of apis) if (api.proc.exitCode === null) api.proc.kill('SIGTERM');
  await Promise.all(apis.map((api) => (api.proc.exitCode === null ? new Promise((r) => api.proc.once('exit', r)) : undefined)));
  await h?.close();
});

test('jobs submitted through both APIs each run exactly once, to completion, on one of the two runners', async () => {
  const spec = tinyPretrain(DATASET, { optim: { batch: 8 }, maxSteps: 4, checkpointEvery: 2, resources: { backend: 'cpu' } });
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const res = await call(apis[i % 2]!, 'POST', '/v1/jobs', spec);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    ids.push(res.body.id);
  }
  // The same Idempotency-Key through both APIs at once: one job.
  const key = `both-apis-${Date.now()}`;
  const pair = await Promise.all(apis.map((api) => call(api, 'POST', '/v1/jobs', spec, { 'idempotency-key': key })));
  assert.deepEqual(pair.map((r) => r.status), [201, 201], JSON.stringify(pair.map((r) => r.body)));
  assert.equal(pair[0]!.body.id, pair[1]!.body.id, 'one job for one key');
  ids.push(pair[0]!.body.id);

  for (const id of ids) {
    const job = await h.waitForJob(id, (j) => TERMINAL.includes(j.state), 'finished');
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    assert.equal(job.attempt, 1, `job ${id} ran once`);
  }
  const sql = h.database.sql;
  const running = await sql`select job_id, count(*)::int as n from job_events where job_id = any(${ids}) and to_state = 'running' group by job_id`;
  assert.deepEqual(running.map((r) => r.n), ids.map(() => 1), 'one start per job');
  // The runners' last transitions wrote outbox rows too; the dispatchers poll for those.
  await eventually(async () => {
    const [{ n }] = (await sql`select count(*)::int as n from outbox`) as unknown as [{ n: number }];
    return n === 0;
  }, 'the two dispatchers to leave no outbox row behind');
  // That each row is handed on by exactly one dispatcher is test/integration/api/dispatch.test.ts's
  // (three dispatchers on one outbox, every enqueue and delivery counted where it is made).
  for (const id of ids) {
    const starts = runners.map((r) => lines(r, id, 'attempt started').length);
    assert.equal(starts[0]! + starts[1]!, 1, `job ${id} started on exactly one runner (per runner: ${starts.join(', ')})`);
  }
});

test('a cancel sent to the other API reaches the runner holding the job', async () => {
  const longRun = tinyPretrain(DATASET, { epochs: 1000, checkpointEvery: 100_000, resources: { backend: 'cpu' } });
  const submitted = await call(apis[0]!, 'POST', '/v1/jobs', longRun);
  assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
  const id = submitted.body.id as string;
  await eventually(async () => {
    const [row] = await h.database.sql`select progress from jobs where id = ${id}`;
    return (row?.progress?.step ?? 0) >= 2;
  }, 'training to start');
  const holder = runners.find((r) => lines(r, id, 'attempt started').length > 0);
  assert.ok(holder, 'one runner holds the job');
  const canceling = await call(apis[1]!, 'POST', `/v1/jobs/${id}/cancel`);
  assert.equal(canceling.status, 200, JSON.stringify(canceling.body));
  const done = await h.waitForJob(id, (j) => TERMINAL.includes(j.state), 'canceled');
  assert.equal(done.state, 'canceled', JSON.stringify(done));
  assert.ok(lines(holder, id, 'cancel requested').length >= 1, 'the holder was told');
  const other = runners.find((r) => r !== holder)!;
  assert.equal(lines(other, id, 'attempt started').length, 0, 'the other runner never ran it');
});
