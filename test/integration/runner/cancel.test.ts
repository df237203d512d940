/**
 * Stopping a running job from outside: a user's cancel (flag + NOTIFY through the real API) ends it
 * `canceled` with a final checkpoint of its last step; exceeding spec.maxRuntimeSeconds ends it
 * `failed` with that reason, also after a final checkpoint. The runner carries on with the next job.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRunnerHarness, eventually, tinyPretrain, type RunnerHarness, type RunnerProcess } from './harness.js';

let h: RunnerHarness;
let runner: RunnerProcess;

before(async () => {
  h = await createRunnerHarness();
  runner = h.startRunner();
  await h.uploadSyntheticDataset('shapes-cancel');
});

after(async () => {
  await h?.close();
});

/** A run far longer than the test: it only ends because it is stopped. */
const longRun = () => tinyPretrain('shapes-cancel', { epochs: 1000, checkpointEvery: 100_000, resources: { backend: 'wasm' } });

test('a canceled running job ends canceled, with a final checkpoint of the last step it trained', async () => {
  const sql = h.database.sql;
  const job = await h.submit(longRun());
  await eventually(async () => {
    const [row] = await sql`select progress from jobs where id = ${job.id}`;
    return (row?.progress?.step ?? 0) >= 3;
  }, 'training to start');
  const canceling = await h.api('POST', `/v1/jobs/${job.id}/cancel`);
  assert.equal(canceling.status, 200, JSON.stringify(canceling.body));

  const done = await h.waitForJob(job.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'canceled');
  assert.equal(done.state, 'canceled', JSON.stringify(done));
  const [stop] = await sql`select reason, data from job_events where job_id = ${job.id} and kind = 'stop-requested'`;
  assert.equal(stop.reason, 'cancel');
  const [checkpoint] = await sql`select version, step from checkpoints where job_id = ${job.id} order by version desc limit 1`;
  assert.ok(checkpoint, 'a final checkpoint was registered');
  // Order and content, not speed: the final checkpoint comes after the cancel reached the run, and
  // it holds every step that ran (no step trained after it, none lost).
  assert.ok(checkpoint.step >= stop.data.atStep, `the final checkpoint (step ${checkpoint.step}) is not older than the cancel (step ${stop.data.atStep})`);
  const [last] = await sql`select max(step)::int as step from metrics where job_id = ${job.id} and name = 'loss'`;
  assert.equal(last.step, checkpoint.step, 'the final checkpoint is at the last step trained');
  const states = await sql`select to_state, reason from job_events where job_id = ${job.id} and kind = 'state' order by id`;
  assert.deepEqual(states.map((s) => s.to_state), ['queued', 'running', 'canceling', 'canceled']);
  assert.match(states[3].reason, new RegExp(`canceled on request; last checkpoint v${checkpoint.version} at step ${checkpoint.step}`));
});

test('a job over its maxRuntimeSeconds ends failed with that reason, after a final checkpoint', async () => {
  const sql = h.database.sql;
  const job = await h.submit({ ...longRun(), maxRuntimeSeconds: 10 });
  const done = await h.waitForJob(job.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'failed');
  assert.equal(done.state, 'failed', JSON.stringify(done));
  assert.match(done.error, /exceeded maxRuntimeSeconds=10; last checkpoint v1 at step \d+/);
  const [checkpoint] = await sql`select step from checkpoints where job_id = ${job.id}`;
  assert.ok(checkpoint.step > 0);
  assert.equal(done.attempt, 1, 'not retried: another attempt would have no time left');

  // The same runner ran both jobs, and still stops cleanly.
  runner.signal('SIGTERM');
  assert.equal((await runner.exited).code, 0, runner.output().slice(-3000));
});
