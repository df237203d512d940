/**
 * A training process that dies without a result (OOM kill, native abort) is a failed attempt: the
 * job goes back to the queue with the reason kept, is retried after a backoff, and fails for good
 * after RUNNER_MAX_ATTEMPTS with every attempt's reason in its events. The runner itself lives on.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRunnerHarness, eventually, tinyPretrain, type RunnerHarness } from './harness.js';

let h: RunnerHarness;

before(async () => {
  h = await createRunnerHarness();
});

after(async () => {
  await h?.close();
});

test('a crashing training process is retried, then the job fails with the reason, after max attempts', async () => {
  const sql = h.database.sql;
  const runner = h.startRunner({ env: { RUNNER_MAX_ATTEMPTS: '2' } });
  await h.uploadSyntheticDataset('shapes-retry');
  const job = await h.submit(tinyPretrain('shapes-retry', { epochs: 1000, checkpointEvery: 100_000, resources: { backend: 'wasm' } }));

  const killTrainingOf = async (attempt: number) => {
    const pid = await eventually(async () => {
      const [row] = await sql`select runtime from jobs where id = ${job.id}`;
      return row?.runtime?.attempt === attempt ? (row.runtime.childPid as number) : null;
    }, `attempt ${attempt}'s training process`);
    process.kill(pid, 'SIGKILL');
  };

  await killTrainingOf(1);
  // The requeue is read from the job's event log (durable), not polled from its state: the retry
  // may already have started by the time a poll looks.
  const requeue = await eventually(async () => {
    const [e] = await sql`select attempt, reason from job_events where job_id = ${job.id} and kind = 'state' and to_state = 'requeued'`;
    return e ?? null;
  }, 'requeued for a retry');
  assert.equal(requeue.attempt, 1, 'the first attempt is the one that failed');
  assert.match(requeue.reason, /^attempt 1 failed: training process was killed by SIGKILL/);
  await killTrainingOf(2);
  const done = await h.waitForJob(job.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'failed');
  assert.equal(done.state, 'failed', JSON.stringify(done));
  assert.equal(done.attempt, 2);
  assert.match(done.error, /training process was killed by SIGKILL without a result.*\(gave up after 2 attempts\)/);

  const events = await sql`select to_state, attempt, reason from job_events where job_id = ${job.id} and kind = 'state' order by id`;
  assert.deepEqual(events.map((e) => [e.to_state, e.attempt]), [['queued', 0], ['running', 1], ['requeued', 1], ['running', 2], ['failed', 2]]);
  assert.match(events[2].reason, /^attempt 1 failed: training process was killed by SIGKILL without a result.*retrying in 2 s \(attempt 2 of at most 2\)/);

  assert.equal(runner.proc.exitCode, null, 'the runner survived its children');
  runner.signal('SIGTERM');
  assert.equal((await runner.exited).code, 0);
});
