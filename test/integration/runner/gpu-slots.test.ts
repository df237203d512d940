/**
 * One GPU per run, without a GPU: a runner told it has two GPUs (RUNNER_GPUS=2) and running two
 * jobs at once (RUNNER_CONCURRENCY=2) starts each job's child process with its own
 * CUDA_VISIBLE_DEVICES, memory growth on and half the cores; the child reports the environment it
 * saw, and the job records it with its device slot. Both runs are then canceled.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRunnerHarness, eventually, tinyPretrain, type RunnerHarness } from './harness.js';

let h: RunnerHarness;

before(async () => {
  h = await createRunnerHarness();
  h.startRunner({ env: { RUNNER_CONCURRENCY: '2', RUNNER_GPUS: '2' } });
  await h.uploadSyntheticDataset('shapes-gpus', { perClass: 8 });
});

after(async () => {
  await h?.close();
});

test('two concurrent runs on a runner with two GPU slots see different CUDA_VISIBLE_DEVICES', async () => {
  const sql = h.database.sql;
  // Far longer than the test: they end because they are canceled.
  const spec = () => tinyPretrain('shapes-gpus', { epochs: 1000, checkpointEvery: 100_000, resources: { backend: 'wasm', gpus: 1 } });
  const jobs = [await h.submit(spec()), await h.submit(spec())];
  const runtimes = await eventually(async () => {
    const rows = await sql`select id, state, runtime from jobs where id in ${sql(jobs.map((j) => j.id))}`;
    const ready = rows.filter((r) => r.state === 'running' && r.runtime?.env);
    return ready.length === 2 ? ready.map((r) => r.runtime) : null;
  }, 'both runs to start at once');
  const seen = runtimes.map((r) => r.env.CUDA_VISIBLE_DEVICES).sort();
  assert.deepEqual(seen, ['0', '1'], JSON.stringify(runtimes));
  for (const r of runtimes) {
    assert.equal(r.env.TF_FORCE_GPU_ALLOW_GROWTH, 'true');
    assert.equal(r.deviceSlot.cudaVisibleDevices, r.env.CUDA_VISIBLE_DEVICES, 'the job records the device its child saw');
    assert.equal(r.deviceSlot.gpu, Number(r.env.CUDA_VISIBLE_DEVICES));
    assert.equal(Number(r.env.MOCO_CORES), r.deviceSlot.cores);
    assert.ok('blas' in r && 'kernels' in r, 'the runtime says which compute path ran');
  }
  for (const j of jobs) assert.equal((await h.api('POST', `/v1/jobs/${j.id}/cancel`)).status, 200);
  for (const j of jobs) await h.waitForJob(j.id, (x) => ['succeeded', 'failed', 'canceled'].includes(x.state), 'canceled');
});
