/**
 * `scripts/quickstart.ts --small` against this test's own database, bucket and queue prefix: it
 * starts the API and a runner, ingests, pre-trains, probes, and prints the accuracy and a signed URL.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { configEnv } from '../../../runner/supervisor/context.js';
import { Redis } from 'ioredis';
import { baseConfig, createTestDatabase, createTestStorage, removeQueueKeys, testConfig, uniqueName, type TestDatabase, type TestStorage } from '../../support/services.js';

const REPO = join(import.meta.dirname, '..', '..', '..');
let database: TestDatabase;
let bucket: TestStorage;
let queuePrefix: string | undefined;

before(async () => {
  database = await createTestDatabase();
  bucket = await createTestStorage();
});

after(async () => {
  // The quickstart's API and runner used this run's queue prefix: leave nothing of it in Redis.
  if (queuePrefix) {
    const redis = new Redis(baseConfig.REDIS_URL);
    await removeQueueKeys(redis, queuePrefix);
    redis.disconnect();
  }
  await bucket?.cleanup();
  await database?.cleanup();
});

test('the quickstart runs the whole flow and exits 0', async () => {
  const dataDir = join(REPO, 'var', 'tmp', uniqueName('quickstart-test'));
  const c = testConfig({ DATABASE_URL: database.url, S3_BUCKET: bucket.bucket, DATA_DIR: dataDir, LOG_LEVEL: 'info' });
  queuePrefix = c.QUEUE_PREFIX;
  const run = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', 'scripts/quickstart.ts', '--small'], {
      cwd: REPO,
      env: { ...process.env, ...configEnv(c) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (out += d));
    proc.on('exit', (code) => resolve({ code, out }));
  });
  await rm(dataDir, { recursive: true, force: true });
  assert.equal(run.code, 0, run.out);
  assert.match(run.out, /ingested in .*: 1000 train \+ 300 val images, 10 classes, 28×28×1/);
  assert.match(run.out, /step 24\/24 {2}loss \d+\.\d{4}/);
  assert.match(run.out, /top-1 accuracy \d+\.\d %, top-5 \d+\.\d %/);
  // The probe beside both baselines, same protocol, and the gains.
  assert.match(run.out, /MoCo v3 \(this run\) +\d+\.\d % +\d+\.\d %\n {2}same ViT, random init +\d+\.\d % +\d+\.\d %\n {2}raw pixels +\d+\.\d % +\d+\.\d %/);
  assert.match(run.out, /gain: [+-]\d+\.\d points linear \/ [+-]\d+\.\d kNN over random init; [+-]\d+\.\d \/ [+-]\d+\.\d over raw pixels/);
  assert.match(run.out, new RegExp(`verified\\), valid until .*:\\n {2}http://127\\.0\\.0\\.1:\\d+/${bucket.bucket}/checkpoints/\\S+backbone\\.safetensors\\?\\S*X-Amz-Signature=`));

  const [probe] = await database.sql`select e.top1, j.state from evaluations e join jobs j on j.id = e.job_id`;
  assert.equal(probe.state, 'succeeded');
  assert.match(run.out, new RegExp(`top-1 accuracy ${(probe.top1 * 100).toFixed(1)} %`), 'the printed accuracy is the recorded one');
  const jobs = await database.sql`select type, state from jobs order by created_at`;
  assert.deepEqual(jobs.map((j) => [j.type, j.state]), [['ingest', 'succeeded'], ['pretrain', 'succeeded'], ['probe', 'succeeded']]);
});
