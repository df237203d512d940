/**
 * SIGKILL mid-run: the runner dies without a word, its queue lock lapses, a second runner takes the
 * job, resumes from the newest registered checkpoint, and ends exactly where an uninterrupted run
 * ends: same step count, and on the cpu backend the same parameters, bit for bit. The steps trained
 * twice (after the checkpoint) are not duplicated in the metrics. The uninterrupted run trains in
 * this process while the runners train theirs (the cpu backend uses one core), not after them.
 */
import { test, after, before } from 'node:test';
// First: the harness loads the API, whose zod-openapi extension must precede any contracts schema.
import { createRunnerHarness, eventually, sha256, tinyPretrain, type RunnerHarness } from './harness.js';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { pretrainSpec } from '../../../contracts/jobSpec.js';
import type { DatasetManifest } from '../../../contracts/datasetSpec.js';
import { openDatasetSplit } from '../../../runner/datasets/index.js';
import { train } from '../../../runner/moco/train.js';
import { buildTrainConfig } from '../../../runner/trainConfig.js';

let h: RunnerHarness;

before(async () => {
  h = await createRunnerHarness({ TFJS_BACKEND: 'cpu' });
});

after(async () => {
  await h?.close();
});

test('after a SIGKILL another runner resumes from the newest checkpoint and matches an uninterrupted run', async () => {
  const sql = h.database.sql;
  const first = h.startRunner();
  await h.uploadSyntheticDataset('shapes-crash');
  // Long enough that a progress flush (once a second) lands between checkpoints whatever the
  // machine's speed: with 12 steps a fast machine finished before the test could kill it. No kNN
  // monitor (tinyPretrain's default): it does not touch the parameters, and it cost most of the time.
  const STEPS = 48;
  const spec = tinyPretrain('shapes-crash', { optim: { batch: 8 }, maxSteps: STEPS, checkpointEvery: 8, resources: { backend: 'cpu' } });
  const job = await h.submit(spec);

  // The same run without interruption, in this process, on the same data and config, meanwhile.
  const [version] = await sql`select dv.manifest from jobs j join dataset_versions dv on dv.id = j.dataset_version_id where j.id = ${job.id}`;
  const manifest = version.manifest as DatasetManifest;
  await tf.setBackend('cpu');
  const config = buildTrainConfig(pretrainSpec.parse(spec), manifest);
  let finalFiles: Record<string, Uint8Array> | undefined;
  const data = openDatasetSplit(h.bucket.storage, manifest, 'train', { cacheDir: join(h.config.DATA_DIR, 'reference-cache') });
  const uninterrupted = train(config, { train: data }, { onCheckpoint: (c) => void (c.reason === 'final' && (finalFiles = c.files)) });
  uninterrupted.catch(() => {}); // awaited below; a failure must not go unhandled meanwhile

  // Kill it once a checkpoint is registered and it has trained past it (steps to be redone).
  const killedAfter = await eventually(async () => {
    const [ck] = await sql`select max(step)::int as step from checkpoints where job_id = ${job.id}`;
    const [row] = await sql`select progress from jobs where id = ${job.id}`;
    const progressed = row?.progress?.step ?? 0;
    return ck?.step && progressed > ck.step ? { checkpoint: ck.step as number, progressed: progressed as number } : null;
  }, 'a checkpoint and a step past it');
  first.signal('SIGKILL');
  await first.exited;
  const [stranded] = await sql`select state, attempt from jobs where id = ${job.id}`;
  assert.deepEqual({ ...stranded }, { state: 'running', attempt: 1 }, 'the dead runner could not say goodbye');

  const second = h.startRunner();
  const done = await h.waitForJob(job.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'finished on the second runner');
  assert.equal(done.state, 'succeeded', JSON.stringify(done));
  assert.equal(done.attempt, 2);
  assert.equal(done.result.steps, STEPS);

  // The second attempt started from the newest checkpoint, and says why it had to.
  const events = await sql`select to_state, attempt, reason from job_events where job_id = ${job.id} and kind = 'state' order by id`;
  assert.deepEqual(events.map((e) => [e.to_state, e.attempt]), [['queued', 0], ['running', 1], ['running', 2], ['succeeded', 2]]);
  assert.match(events[2].reason, /attempt 1 lost its runner/);
  const resumed = second.logs.find((l) => l.msg === 'resuming from checkpoint') as { step: number } | undefined;
  assert.ok(resumed, 'the second runner logged its resume');
  assert.ok(resumed.step >= killedAfter.checkpoint, `resumed at ${resumed.step}, newest checkpoint was at ${killedAfter.checkpoint} or later`);

  // Steps trained twice overwrote their metrics.
  const [metrics] = await sql`select count(*)::int as n, count(distinct step)::int as steps, min(step)::int as lo, max(step)::int as hi from metrics where job_id = ${job.id} and name = 'loss'`;
  assert.deepEqual({ ...metrics }, { n: STEPS, steps: STEPS, lo: 1, hi: STEPS });

  const reference = await uninterrupted;
  assert.equal(reference.steps, STEPS);
  const [latest] = await sql`select c.step, c.files from checkpoints c join checkpoint_aliases a on a.checkpoint_id = c.id where a.job_id = ${job.id} and a.alias = 'latest'`;
  assert.equal(latest.step, STEPS);
  assert.equal(latest.files['backbone.safetensors'].sha256, sha256(finalFiles!['backbone.safetensors']), 'backbone bit-identical to the uninterrupted run');
  assert.equal(latest.files['state.safetensors'].sha256, sha256(finalFiles!['state.safetensors']), 'full state (optimizer too) bit-identical');

  second.signal('SIGTERM');
  assert.equal((await second.exited).code, 0);
});
