/**
 * Starting a runner: bad configuration or an unreachable service is one clear line and exit 1;
 * in one-job mode (`--once`) it takes a single job, runs it and exits 0 (scale-to-zero).
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRunnerHarness, type RunnerHarness } from './harness.js';

let h: RunnerHarness;

before(async () => {
  h = await createRunnerHarness();
});

after(async () => {
  await h?.close();
});

test('a bad setting is one line naming it, before anything starts', async () => {
  const runner = h.startRunner({ env: { RUNNER_CONCURRENCY: '0' } });
  assert.equal((await runner.exited).code, 1);
  assert.match(runner.output().trim(), /^momentum: invalid configuration: RUNNER_CONCURRENCY="0": [^\n]+$/);
});

test('an unreachable Redis is one line naming REDIS_URL', async () => {
  const runner = h.startRunner({ env: { REDIS_URL: 'redis://127.0.0.1:1' } });
  assert.equal((await runner.exited).code, 1);
  assert.match(runner.output().trim(), /^momentum: cannot reach Redis at REDIS_URL=redis:\/\/127\.0\.0\.1:1[^\n]*$/);
});

// Unused ports (never the shared services stopped): nothing listens on 127.0.0.1:1.
test('an unreachable Postgres is one line naming DATABASE_URL, without its password', async () => {
  const runner = h.startRunner({ env: { DATABASE_URL: 'postgres://momentum:secret-pw@127.0.0.1:1/momentum' } });
  assert.equal((await runner.exited).code, 1);
  const out = runner.output().trim();
  assert.match(out, /^momentum: cannot reach Postgres at DATABASE_URL=postgres:\/\/momentum(:\*+)?@127\.0\.0\.1:1\/momentum[^\n]*$/);
  assert.doesNotMatch(out, /secret-pw/);
});

test('an unreachable S3 is one line naming S3_ENDPOINT', async () => {
  const runner = h.startRunner({ env: { S3_ENDPOINT: 'http://127.0.0.1:1' } });
  assert.equal((await runner.exited).code, 1);
  assert.match(runner.output().trim(), /^momentum: cannot reach S3 at S3_ENDPOINT=http:\/\/127\.0\.0\.1:1[^\n]*$/);
});

test('--once takes one job, runs it, and exits 0', async () => {
  const runner = h.startRunner({ args: ['--once'] });
  // Finalizing the upload queues an ingest job: the one job this runner takes.
  await h.uploadSyntheticDataset('shapes-once');
  const exit = await runner.exited;
  assert.equal(exit.code, 0, runner.output().slice(-3000));
  const jobs = await h.database.sql`select type, state, attempt from jobs`;
  assert.deepEqual(jobs.map((j) => [j.type, j.state, j.attempt]), [['ingest', 'succeeded', 1]]);
  assert.ok(runner.logs.some((l) => l.msg === 'runner stopped'));
});
