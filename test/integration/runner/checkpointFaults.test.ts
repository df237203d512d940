/**
 * Checkpoints under faults, with real runner processes on an S3 server of this file's own
 * (test/support/privateServices.ts: it is stopped here, never the shared one) — docs/runner.md
 * "Checkpoints" and "Resume":
 * - S3 goes away for a moment mid-run: the checkpoint upload fails, is logged, and training goes on
 *   in the same attempt; the next checkpoint registers; no registered version lacks a byte.
 * - The newest checkpoint's bytes are damaged: the next attempt skips it (and says so), resumes
 *   from the version before it, and the job ends with one loss per step.
 * - S3 unreachable while an attempt looks for its checkpoint is not "every version damaged": the
 *   attempt fails (and is retried) instead of starting the job again from step 0.
 */
import { after, before, test } from 'node:test';
// First: the harness loads the API, whose zod-openapi extension must precede any contracts schema.
import { createRunnerHarness, eventually, tinyPretrain, type RunnerHarness } from './harness.js';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listCheckpoints, type CheckpointFiles } from '../../../db/runs.js';
import { ALL_CHECKPOINT_FILES, CheckpointStore } from '../../../runner/supervisor/checkpointStore.js';
import { Storage } from '../../../common/storage.js';
import { createLogger } from '../../../common/logger.js';
import { startPrivateS3, type PrivateService } from '../../support/privateServices.js';

let s3: PrivateService;
let h: RunnerHarness;
let dir: string;
const DATASET = 'shapes-ckfaults';
/** Few, cheap steps: a checkpoint every 2, no kNN monitor (it costs more than a step here). */
const SMALL = { optim: { batch: 8 }, checkpointEvery: 2, keepCheckpoints: 1000, monitor: { knn: false }, resources: { backend: 'cpu' } };

before(async () => {
  s3 = await startPrivateS3();
  h = await createRunnerHarness({ S3_ENDPOINT: s3.url });
  dir = await mkdtemp(join(tmpdir(), 'ckfaults-'));
});

after(async () => {
  await h?.close();
  await s3?.remove();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const finished = (j: { state: string }) => ['succeeded', 'failed', 'canceled'].includes(j.state);

/** Every registered version has every byte its row vouches for (sha256 and size), versions 1..n. */
async function assertEveryVersionIntact(jobId: string): Promise<void> {
  const store = new CheckpointStore(h.database.db, h.bucket.storage, createLogger('silent'));
  const versions = (await listCheckpoints(h.database.db, jobId)).reverse();
  assert.ok(versions.length > 0);
  assert.deepEqual(versions.map((v) => v.version), versions.map((_, i) => i + 1), 'versions are continuous');
  for (const v of versions) await store.download(v, join(dir, `${jobId}-v${v.version}`)); // throws on any mismatch
}

async function assertOneLossPerStep(jobId: string, steps: number): Promise<void> {
  const [m] = await h.database.sql`select count(*)::int as n, count(distinct step)::int as steps, min(step)::int as lo, max(step)::int as hi from metrics where job_id = ${jobId} and name = 'loss'`;
  assert.deepEqual({ ...m }, { n: steps, steps, lo: 1, hi: steps }, 'one loss per step: none lost, none twice');
}

test('S3 down for a moment mid-run: the upload fails, training goes on in the same attempt, the next checkpoint registers intact', async () => {
  const sql = h.database.sql;
  const runner = h.startRunner();
  await h.uploadSyntheticDataset(DATASET);
  const STEPS = 400; // far more than the test waits for: it cancels the job once it has seen enough
  const job = await h.submit(tinyPretrain(DATASET, { ...SMALL, maxSteps: STEPS, epochs: 200 }));
  await eventually(async () => ((await sql`select count(*)::int as n from checkpoints where job_id = ${job.id}`)[0]!.n as number) >= 1, 'a first checkpoint');

  await s3.stop();
  const failure = await eventually(async () => runner.logs.find((l) => l.msg === 'checkpoint upload failed') as { step: number } | undefined, 'a checkpoint upload to fail');
  await s3.start();
  // The same attempt trains on and registers a later checkpoint once S3 is back.
  const later = await eventually(async () => {
    const [row] = await sql`select version, step, s3_prefix from checkpoints where job_id = ${job.id} and step > ${failure.step} order by version limit 1`;
    return row;
  }, 'a checkpoint after the failed one');
  assert.match(later.s3_prefix, /\/a1\/$/, 'registered by the attempt whose upload failed: it was not restarted');
  const [state] = await sql`select state, attempt from jobs where id = ${job.id}`;
  assert.deepEqual({ ...state }, { state: 'running', attempt: 1 });
  const failedStep = await sql`select 1 from checkpoints where job_id = ${job.id} and step = ${failure.step}`;
  assert.equal(failedStep.length, 0, 'the checkpoint that failed to upload was not registered');

  assert.equal((await h.api('POST', `/v1/jobs/${job.id}/cancel`)).status, 200);
  const done = await h.waitForJob(job.id, finished, 'canceled');
  assert.equal(done.state, 'canceled', JSON.stringify(done));
  assert.equal(done.attempt, 1);
  await assertEveryVersionIntact(job.id);
  const [{ hi }] = await sql`select max(step)::int as hi from metrics where job_id = ${job.id} and name = 'loss'`;
  await assertOneLossPerStep(job.id, hi as number);
  runner.signal('SIGTERM');
  assert.equal((await runner.exited).code, 0);
});

test("the newest checkpoint's bytes are damaged: the next attempt resumes from the version before it and finishes", async () => {
  const sql = h.database.sql;
  const first = h.startRunner();
  // Enough steps that the poll below sees the run between two checkpoints long before its end (with
  // 8 a fast machine could finish between two polls, and the wait never ended).
  const STEPS = 40;
  const job = await h.submit(tinyPretrain(DATASET, { ...SMALL, maxSteps: STEPS, epochs: 40 }));
  // Two versions registered and training past the newest: then the runner dies without a word.
  await eventually(async () => {
    const [ck] = await sql`select count(*)::int as n, max(step)::int as step from checkpoints where job_id = ${job.id}`;
    const [row] = await sql`select state, progress from jobs where id = ${job.id}`;
    assert.ok(!finished(row as { state: string }), `the job ended (${row!.state}) before the runner could be killed between checkpoints`);
    return ck!.n >= 2 && (row?.progress?.step ?? 0) > ck!.step;
  }, 'two checkpoints and a step past them');
  first.signal('SIGKILL');
  await first.exited;

  // One flipped byte in the newest version's training state: same size, another sha256.
  const [newest, previous] = await listCheckpoints(h.database.db, job.id);
  const key = (newest!.files as CheckpointFiles)['state.safetensors']!.key;
  const bytes = await h.bucket.storage.get(key);
  bytes[bytes.length >> 1]! ^= 0xff;
  await h.bucket.storage.put(key, bytes);

  const second = h.startRunner();
  const done = await h.waitForJob(job.id, finished, 'finished on the second runner');
  assert.equal(done.state, 'succeeded', JSON.stringify(done));
  assert.equal(done.attempt, 2);
  assert.equal(done.result.steps, STEPS);
  const skipped = second.logs.find((l) => l.msg === 'checkpoint unusable; trying the previous version') as { version: number; err: string } | undefined;
  assert.equal(skipped?.version, newest!.version, 'the damaged version was skipped, and said so');
  assert.match(skipped!.err, /state\.safetensors: sha256 .* does not match/);
  const resumed = second.logs.find((l) => l.msg === 'resuming from checkpoint') as { version: number; step: number } | undefined;
  assert.deepEqual({ version: resumed?.version, step: resumed?.step }, { version: previous!.version, step: previous!.step }, 'resumed from the version before the damaged one');
  await assertOneLossPerStep(job.id, STEPS);
  // The damaged version stays registered (it is history) but is never `latest` again.
  const [latest] = await sql`select c.version, c.step from checkpoints c join checkpoint_aliases a on a.checkpoint_id = c.id where a.job_id = ${job.id} and a.alias = 'latest'`;
  assert.ok(latest!.version > newest!.version && latest!.step === STEPS, JSON.stringify(latest));
  second.signal('SIGTERM');
  assert.equal((await second.exited).code, 0);
});

test('S3 unreachable when an attempt looks for its checkpoint: the attempt fails rather than start again from step 0', async () => {
  // A job with one registered, intact version (published the way the runner does).
  const [job] = await h.database.sql`insert into jobs (tenant_id, type, state, spec, attempt) values (${h.tenantId}, 'pretrain', 'running', '{}'::jsonb, 1) returning id`;
  const files = join(dir, 'published');
  await mkdir(files, { recursive: true });
  for (const f of ALL_CHECKPOINT_FILES) await writeFile(join(files, f), `${f}\n`.repeat(100));
  const reachable = new CheckpointStore(h.database.db, h.bucket.storage, createLogger('silent'));
  await reachable.publish({ jobId: job!.id, tenantId: h.tenantId, attempt: 1 }, { step: 2, files: [...ALL_CHECKPOINT_FILES], dir: files, reason: 'periodic' } as never);

  const unreachable = new Storage({ ...h.bucket.storage.cfg, endpoint: 'http://127.0.0.1:1' });
  const store = new CheckpointStore(h.database.db, unreachable, createLogger('silent'));
  try {
    await assert.rejects(store.downloadNewestValid(job!.id, join(dir, 'unreachable')), (err: Error) => !/sha256/.test(err.message));
  } finally {
    unreachable.destroy();
  }
  // With S3 there, the same call finds the version.
  assert.equal((await reachable.downloadNewestValid(job!.id, join(dir, 'reachable')))?.version, 1);
});
