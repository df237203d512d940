/**
 * SIGTERM mid-run (spot preemption, scale-in): the runner stops taking jobs, checkpoints the running
 * one at once, hands it back to the queue (`requeued`) and exits cleanly; a second runner continues
 * from that very checkpoint and finishes the job as its attempt 2.
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

test('SIGTERM checkpoints the running job, requeues it, and another runner finishes it', async () => {
  const sql = h.database.sql;
  const first = h.startRunner();
  await h.uploadSyntheticDataset('shapes-preempt');
  const job = await h.submit(tinyPretrain('shapes-preempt', { epochs: 10, maxSteps: 120, checkpointEvery: 40, resources: { backend: 'wasm' } }));

  // Well into the run, before its first periodic checkpoint: the SIGTERM one is then the only one.
  await eventually(async () => {
    const [row] = await sql`select progress from jobs where id = ${job.id}`;
    return (row?.progress?.step ?? 0) >= 5;
  }, 'training to start');
  first.signal('SIGTERM');
  const exit = await first.exited;
  assert.equal(exit.code, 0, first.output().slice(-3000));

  const [row] = await sql`select state, attempt from jobs where id = ${job.id}`;
  assert.deepEqual({ ...row }, { state: 'requeued', attempt: 1 });
  const [stop] = await sql`select data from job_events where job_id = ${job.id} and kind = 'stop-requested'`;
  const [checkpoint] = await sql`select version, step from checkpoints where job_id = ${job.id} order by version desc limit 1`;
  assert.ok(checkpoint, 'a checkpoint was written on SIGTERM');
  // Order and content, not speed: the SIGTERM checkpoint is not older than the stop request and holds
  // every step that ran before the runner let go.
  assert.ok(checkpoint.step >= stop.data.atStep, `checkpoint at ${checkpoint.step}, stop asked at ${stop.data.atStep}`);
  const [last] = await sql`select max(step)::int as step from metrics where job_id = ${job.id} and name = 'loss'`;
  assert.equal(last.step, checkpoint.step, 'the SIGTERM checkpoint is at the last step trained');
  const [requeued] = await sql`select reason from job_events where job_id = ${job.id} and to_state = 'requeued'`;
  assert.match(requeued.reason, new RegExp(`runner shutting down; last checkpoint v${checkpoint.version} at step ${checkpoint.step}`));

  const second = h.startRunner();
  const done = await h.waitForJob(job.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'finished on the second runner');
  assert.equal(done.state, 'succeeded', JSON.stringify(done));
  assert.equal(done.attempt, 2);
  assert.equal(done.result.steps, 120);
  const resumed = second.logs.find((l) => l.msg === 'resuming from checkpoint') as { step: number; version: number } | undefined;
  assert.deepEqual(resumed && { version: resumed.version, step: resumed.step }, { version: checkpoint.version, step: checkpoint.step });
  const states = await sql`select to_state from job_events where job_id = ${job.id} and kind = 'state' order by id`;
  assert.deepEqual(states.map((s) => s.to_state), ['queued', 'running', 'requeued', 'running', 'succeeded']);

  second.signal('SIGTERM');
  assert.equal((await second.exited).code, 0);
});
