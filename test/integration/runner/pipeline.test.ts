/**
 * The main flow through the real API, a real runner process, Postgres, Redis and the S3 server:
 * ingest → pretrain (checkpoints, metrics, retention) → probe on `latest` → signed download.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { checkpointPrefix } from '../../../contracts/storageKeys.js';
import { createRunnerHarness, sha256, tinyPretrain, type RunnerHarness, type RunnerProcess } from './harness.js';

let h: RunnerHarness;
let runner: RunnerProcess;

before(async () => {
  h = await createRunnerHarness();
  runner = h.startRunner();
  await h.uploadSyntheticDataset('shapes');
});

after(async () => {
  await h?.close();
});

// One scenario in steps, so that a failure in one step does not hide what the others would show.
// Each later step needs only the pretrain job to have succeeded.
const spec = tinyPretrain('shapes', { maxSteps: 24, checkpointEvery: 6, keepCheckpoints: 2, monitor: { knnEvery: 12, knnBank: 48, knnQueries: 24 }, resources: { backend: 'wasm' } });
let job: { id: string } | undefined;
let done: any;

function finishedJob(): { id: string } {
  if (!job || done?.state !== 'succeeded') throw new Error('needs the pretrain job of the first step to have succeeded');
  return job;
}

test('a pretrain job runs queued → running → succeeded in one attempt', async () => {
  const sql = h.database.sql;
  job = await h.submit(spec);
  done = await h.waitForJob(job.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'finished');
  assert.equal(done.state, 'succeeded', JSON.stringify(done));
  assert.equal(done.attempt, 1);
  assert.equal(done.result.steps, 24);
  assert.equal(done.result.checkpoint.step, 24);

  const states = await sql`select to_state from job_events where job_id = ${job.id} and kind = 'state' order by id`;
  assert.deepEqual(
    states.map((s) => s.to_state),
    ['queued', 'running', 'succeeded'],
    'one attempt, no detours',
  );

  // Where it ran.
  assert.equal(done.runtime.backend, 'wasm');
  assert.ok(done.runtime.hostname && done.runtime.pid && done.runtime.versions?.tfjs, JSON.stringify(done.runtime));

});

test('checkpoints at steps 6, 12, 18, 24: retention kept the newest two, each registered with the stored bytes\' sha256', async () => {
  const sql = h.database.sql;
  const job = finishedJob();
  const versions = await sql`select version, step, files, sha256 from checkpoints where job_id = ${job.id} order by version`;
  assert.deepEqual(versions.map((v) => [v.version, v.step]), [[3, 18], [4, 24]]);
  for (const old of [1, 2]) {
    assert.deepEqual(await h.bucket.storage.list(checkpointPrefix(h.tenantId, job.id, old)), [], `v${old}'s objects are gone`);
  }
  for (const v of versions) {
    assert.deepEqual(Object.keys(v.files).sort(), ['backbone.json', 'backbone.safetensors', 'state.json', 'state.safetensors']);
    assert.equal(v.sha256, v.files['state.safetensors'].sha256);
    const stored = await h.bucket.storage.get(v.files['state.safetensors'].key);
    assert.equal(sha256(stored), v.sha256, 'the registered sha256 is the stored bytes\'');
  }
  const latest = await h.api('GET', `/v1/jobs/${job.id}/checkpoints/latest`);
  assert.equal(latest.body.version, 4);

});

test('one loss per step, steps 1..24; progress says where it ended', async () => {
  const sql = h.database.sql;
  const job = finishedJob();
  const losses = await sql`select step, value from metrics where job_id = ${job.id} and name = 'loss' order by step`;
  assert.deepEqual(losses.map((l) => l.step), Array.from({ length: 24 }, (_, i) => i + 1));
  assert.ok(losses.every((l) => Number.isFinite(l.value)));
  assert.equal(done.progress.step, 24);
  assert.equal(done.progress.total, 24);
  const events = await h.api('GET', `/v1/jobs/${job.id}/events`);
  assert.equal(events.status, 200);

});

test('watching it learn: contrastive top-1 every step, kNN top-1 before the first step and every 12; what ran and why', async () => {
  const sql = h.database.sql;
  const job = finishedJob();
  const top1 = await sql`select step from metrics where job_id = ${job.id} and name = 'contrastiveTop1' order by step`;
  assert.equal(top1.length, 24);
  const knn = await sql`select step, value from metrics where job_id = ${job.id} and name = 'knnTop1' order by step`;
  assert.deepEqual(knn.map((k) => k.step), [0, 12, 24]);
  assert.ok(knn.every((k) => k.value >= 0 && k.value <= 1));
  const events = await h.api('GET', `/v1/jobs/${job.id}/events`);
  const kinds = events.body.events.map((e: { kind: string }) => e.kind);
  const resolved = events.body.events.find((e: { kind: string }) => e.kind === 'config-resolved');
  assert.ok(resolved, `events: ${kinds}`);
  assert.equal(resolved.data.sources['model.patch'], 'user');
  assert.equal(resolved.data.sources['augment.cropMinScale'], 'dataset-size default');
  const fixed = events.body.events.find((e: { kind: string }) => e.kind === 'schedule-fixed');
  assert.deepEqual([fixed?.data.totalSteps, fixed?.data.source], [24, 'maxSteps']);
});

test('a probe on latest evaluates the held-out split, records its accuracy and makes the version best', async () => {
  const sql = h.database.sql;
  const job = finishedJob();
  const probe = await h.submit({ type: 'probe', source: { job: job.id, checkpoint: 'latest' }, epochs: 8, batch: 64, lrCandidates: [0.1, 1], resources: { backend: 'wasm' } });
  const probed = await h.waitForJob(probe.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'probe finished');
  assert.equal(probed.state, 'succeeded', JSON.stringify(probed));
  assert.equal(probed.result.checkpoint.version, 4);
  const [evaluation] = await sql`select kind, top1, top5, details, knn_top1, subjects, protocol, checkpoint_id from evaluations where job_id = ${probe.id}`;
  assert.equal(evaluation.kind, 'linear');
  assert.deepEqual([evaluation.top1, evaluation.top5], [probed.result.top1, probed.result.top5]);
  // It evaluated the held-out split of the pretrain job's own dataset (4 classes, 48 train and 12 val
  // images per class), with the linear layer trained on the train split: a probe reading the wrong
  // split or dataset shows here, whatever its accuracy.
  assert.deepEqual(
    [evaluation.details.numClasses, evaluation.details.trainExamples, evaluation.details.valExamples, evaluation.details.epochs],
    [4, 192, 48, 8],
  );
  assert.equal(evaluation.details.top1, probed.result.top1);
  assert.equal(probed.result.best, true, 'the first evaluation of the job moves best');
  // The first evaluation of the job makes its checkpoint `best`.
  const best = await h.api('GET', `/v1/jobs/${job.id}/checkpoints/best`);
  assert.equal(best.body.version, 4);
  // Announced: the evaluation event is written in the transaction of its outbox message (db/runs.ts;
  // the message itself is test/integration/db/runs.test.ts's, as this harness's dispatcher deletes it once sent).
  const [announced] = await sql`select count(*)::int as n from job_events where job_id = ${probe.id} and kind = 'evaluation'`;
  assert.equal(announced.n, 1);
  // Both baselines beside the result, same protocol, stored and served.
  assert.deepEqual(Object.keys(evaluation.subjects).sort(), ['model', 'random_init', 'raw_pixels']);
  assert.equal(evaluation.subjects.model.linear.top1, evaluation.top1);
  assert.equal(evaluation.knn_top1, evaluation.subjects.model.knn.top1);
  assert.deepEqual([evaluation.protocol.name, evaluation.protocol.standardize, evaluation.protocol.lrCandidates], ['momentum.linear-probe/2', true, [0.1, 1]]);
  const served = await h.api('GET', `/v1/jobs/${job.id}/evaluations`);
  const row = served.body.evaluations.find((e: { probeJobId: string }) => e.probeJobId === probe.id);
  assert.ok(Math.abs(row.gains.random_init.linearTop1 - (evaluation.top1 - evaluation.subjects.random_init.linear.top1)) < 1e-12);
  assert.ok(row.gains.raw_pixels && row.protocol && row.subjects.raw_pixels);
});

test('the backbone export downloads through a signed URL with the registered bytes', async () => {
  const job = finishedJob();
  const [registered] = await h.database.sql`select files from checkpoints where job_id = ${job.id} and version = 4`;
  const link = await h.api('GET', `/v1/jobs/${job.id}/checkpoints/latest/download?file=backbone`);
  assert.equal(link.status, 200, JSON.stringify(link.body));
  const download = await fetch(link.body.url);
  assert.equal(download.status, 200);
  const bytes = new Uint8Array(await download.arrayBuffer());
  assert.equal(sha256(bytes), registered!.files['backbone.safetensors'].sha256);
  assert.equal(link.body.sha256, sha256(bytes));

});

test('retraining from this job\'s weights starts a new job from them with a fresh step count', async () => {
  const sql = h.database.sql;
  const job = finishedJob();
  const retrain = await h.submit({ ...spec, maxSteps: 4, initFrom: { job: job.id, checkpoint: 'latest' } });
  const retrained = await h.waitForJob(retrain.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'retrained');
  assert.equal(retrained.state, 'succeeded', retrained.error ?? '');
  assert.equal(retrained.attempt, 1);
  const [initEvent] = await sql`select count(*)::int as n from job_logs where job_id = ${retrain.id} and message like '%initialis%'`;
  assert.ok(initEvent.n >= 1, 'the run says it started from the source checkpoint');
  const retrainVersions = await h.api('GET', `/v1/jobs/${retrain.id}/checkpoints`);
  assert.equal(retrainVersions.body.checkpoints.at(-1).step, 4, 'steps count from zero, not from the source job');

});

test('the runner that ran every step stops cleanly', async () => {
  runner.signal('SIGTERM');
  assert.equal((await runner.exited).code, 0, runner.output().slice(-3000));
});
