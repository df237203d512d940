/**
 * How a runner process answers signals while it trains (docs/runner.md): a repeated SIGTERM (a
 * preStop hook, then the kubelet) does not cut the checkpoint short; a second SIGINT exits at once
 * (130); a run that cannot checkpoint within RUNNER_GRACE_SECONDS is killed at the grace period.
 * The training process is stopped with SIGSTOP where a test needs a shutdown that cannot finish.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRunnerHarness, eventually, tinyPretrain, type RunnerHarness, type RunnerProcess } from './harness.js';

let h: RunnerHarness;
const stoppedChildren: number[] = [];

before(async () => {
  h = await createRunnerHarness();
  const ingester = h.startRunner();
  await h.uploadSyntheticDataset('shapes-signals');
  ingester.signal('SIGTERM');
  assert.equal((await ingester.exited).code, 0);
});

after(async () => {
  for (const pid of stoppedChildren) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await h?.close();
});

const longRun = () => tinyPretrain('shapes-signals', { epochs: 1000, checkpointEvery: 100_000, resources: { backend: 'wasm' } });

/** Submits a long job and resolves once it trains on `runner`, with its training process's pid. */
async function trainingOn(runner: RunnerProcess): Promise<{ jobId: string; childPid: number }> {
  const job = await h.submit(longRun());
  const childPid = await eventually(async () => {
    const [row] = await h.database.sql`select progress, runtime from jobs where id = ${job.id}`;
    return (row?.progress?.step ?? 0) >= 2 && row?.runtime?.childPid ? (row.runtime.childPid as number) : null;
  }, `training on runner ${runner.proc.pid}`);
  return { jobId: job.id, childPid };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('a repeated SIGTERM does not cut the shutdown short: the job is checkpointed and requeued, exit 0', async () => {
  const runner = h.startRunner();
  const { jobId } = await trainingOn(runner);
  runner.signal('SIGTERM');
  await eventually(async () => runner.logs.some((l) => String(l.msg).startsWith('shutting down')), 'the shutdown to start');
  runner.signal('SIGTERM');
  const exit = await runner.exited;
  assert.equal(exit.code, 0, runner.output().slice(-3000));
  const [row] = await h.database.sql`select state from jobs where id = ${jobId}`;
  assert.equal(row!.state, 'requeued');
  const [checkpoint] = await h.database.sql`select step from checkpoints where job_id = ${jobId}`;
  assert.ok(checkpoint, 'the SIGTERM checkpoint was written despite the second SIGTERM');
  // Leave the queue empty for the next test's runner.
  assert.equal((await h.api('POST', `/v1/jobs/${jobId}/cancel`)).status, 200);
});

test('a second SIGINT exits at once with 130, without waiting for the checkpoint', async () => {
  const runner = h.startRunner();
  const { jobId, childPid } = await trainingOn(runner);
  process.kill(childPid, 'SIGSTOP'); // the checkpoint the first SIGINT asks for can never come
  stoppedChildren.push(childPid);
  runner.signal('SIGINT');
  await eventually(async () => runner.logs.some((l) => String(l.msg).startsWith('shutting down')), 'the shutdown to start');
  runner.signal('SIGINT');
  const exit = await runner.exited;
  assert.equal(exit.code, 130, runner.output().slice(-3000));
  assert.ok(runner.logs.some((l) => l.msg === 'second interrupt: exiting now'));
  const [checkpoint] = await h.database.sql`select step from checkpoints where job_id = ${jobId}`;
  assert.equal(checkpoint, undefined, 'it did not wait for a checkpoint');
  process.kill(childPid, 'SIGKILL');
  await h.database.sql`update jobs set state = 'canceled' where id = ${jobId}`;
});

test('a run that cannot checkpoint within RUNNER_GRACE_SECONDS is killed at the grace period and the runner exits', async () => {
  const runner = h.startRunner({ env: { RUNNER_GRACE_SECONDS: '4' } });
  const { jobId, childPid } = await trainingOn(runner);
  process.kill(childPid, 'SIGSTOP');
  stoppedChildren.push(childPid);
  runner.signal('SIGTERM');
  const exit = await runner.exited;
  assert.ok(runner.logs.some((l) => l.msg === 'grace period nearly over; killing runs that have not stopped'), runner.output().slice(-3000));
  assert.ok(exit.code === 0 || exit.code === 1, `exit ${JSON.stringify(exit)}`);
  // Killed (SIGKILL works on a stopped process); once its runner is gone, init reaps it.
  await eventually(async () => !alive(childPid), 'the stuck training process to be killed');
  await h.database.sql`update jobs set state = 'canceled' where id = ${jobId}`;
});
