/**
 * The README's "Using it" section, walked with the CLI only on a database that does not exist yet:
 * `npm run api` (creates and migrates it), `npm run runner`, `npm run create-key`, then
 * `momentum datasets upload` of an archive whose 28 px images need resizing to 16 px
 * (`--image-size 16 --resize stretch`), `momentum jobs submit … --wait`, `momentum checkpoints download`.
 * Each step's exit code and output shape is asserted. Tiny data and a few training steps.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { configEnv } from '../../runner/supervisor/context.js';
import { generateSyntheticDataset, writeIdxArchive } from '../../runner/datasets/index.js';
import { freePort } from '../support/privateServices.js';
import { baseConfig, createTestStorage, dropDatabase, removeQueueKeys, testConfig, uniqueName, type TestStorage } from '../support/services.js';

const REPO = join(import.meta.dirname, '..', '..');
const dbName = uniqueName('momentum_readme').replaceAll('-', '_');
let bucket: TestStorage;
let dir: string;
let env: Record<string, string>;
const services: ChildProcess[] = [];
let queuePrefix: string;

/** `npm run <script> -- args`, as the README writes it (package.json maps each to a tsx file). */
function run(file: string, args: string[], extra: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], { cwd: REPO, env: { ...env, ...extra } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function startService(file: string, ready: RegExp, timeoutMs = 180_000): Promise<void> {
  return new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error(`${file} did not print ${ready} within ${timeoutMs / 1000} s`)), timeoutMs).unref();
    const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: REPO, env });
    services.push(child);
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      if (ready.test(out)) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => reject(new Error(`${file} exited ${code}: ${out.slice(-2000)}`)));
  });
}

before(async () => {
  bucket = await createTestStorage();
  dir = await mkdtemp(join(tmpdir(), 'momentum-readme-'));
  const url = new URL(baseConfig.DATABASE_URL);
  url.pathname = `/${dbName}`;
  const port = await freePort();
  const c = testConfig({ DATABASE_URL: url.toString(), S3_BUCKET: bucket.bucket, DATA_DIR: join(dir, 'var'), API_PORT: port, LOG_LEVEL: 'info' });
  queuePrefix = c.QUEUE_PREFIX;
  env = { ...(process.env as Record<string, string>), ...configEnv(c), MOMENTUM_URL: `http://127.0.0.1:${port}` };
});

after(async () => {
  for (const s of services) s.kill('SIGTERM');
  await Promise.all(services.map((s) => (s.exitCode === null ? new Promise((r) => s.once('exit', r)) : undefined)));
  const redis = new Redis(baseConfig.REDIS_URL);
  await removeQueueKeys(redis, queuePrefix);
  redis.disconnect();
  await bucket.cleanup();
  await dropDatabase(dbName);
  await rm(dir, { recursive: true, force: true });
});

test("the README's Using it section, with the CLI only, on a fresh database", { timeout: 600_000 }, async () => {
  // npm run api & / npm run runner &: the API creates and migrates the database that does not exist yet.
  await startService('api/server.ts', /listening on/);
  await startService('runner/main.ts', /runner waiting for jobs/);

  // npm run create-key -- --tenant acme: the key on stdout, alone.
  const key = await run('scripts/create-api-key.ts', ['--tenant', 'acme']);
  assert.equal(key.code, 0, key.stderr);
  assert.match(key.stdout, /^mom_\S+\n$/);
  env.MOMENTUM_API_KEY = key.stdout.trim();
  const cli = (args: string[]) => run('cli/momentum.ts', args);

  // An upload that needs resizing: 28 px images stored at 16 px.
  const make = (n: number, seed: number) => generateSyntheticDataset({ numClasses: 4, perClass: n / 4, size: 28, channels: 1, seed });
  const archive = join(dir, 'shapes.tar.gz');
  await writeFile(archive, await writeIdxArchive({ train: make(64, 1), val: make(16, 2) }));
  const upload = await cli(['datasets', 'upload', 'shapes', archive, '--format', 'idx', '--image-size', '16', '--resize', 'stretch', '--wait', '--timeout', '300']);
  assert.equal(upload.code, 0, upload.stderr);
  const version = JSON.parse(upload.stdout);
  assert.equal(version.ref, 'shapes@1');
  assert.equal(version.state, 'ready');
  assert.equal(version.manifest.height, 16);
  assert.equal(version.options.resize, 'stretch');

  // jobs submit … --wait: the finished job on stdout.
  const spec = join(dir, 'pretrain.json');
  await writeFile(
    spec,
    JSON.stringify({
      type: 'pretrain',
      dataset: 'shapes@latest',
      model: { arch: 'vit_tiny', imageSize: 16, patch: 8, dim: 16, depth: 1, heads: 2 },
      moco: { projector: { hiddenDim: 32, outDim: 16 }, predictor: { hiddenDim: 32 } },
      optim: { batch: 16, lr: 1.5e-3 },
      epochs: 1,
      maxSteps: 2,
      checkpointEvery: 2,
    }),
  );
  const submitted = await cli(['jobs', 'submit', spec, '--wait', '--timeout', '300']);
  assert.equal(submitted.code, 0, submitted.stderr);
  const job = JSON.parse(submitted.stdout);
  assert.equal(job.state, 'succeeded');
  assert.equal(job.dataset, 'shapes@1');

  // checkpoints download <job-id> latest --file backbone -o backbone.safetensors: sha256-verified.
  const target = join(dir, 'backbone.safetensors');
  const download = await cli(['checkpoints', 'download', job.id, 'latest', '--file', 'backbone', '-o', target]);
  assert.equal(download.code, 0, download.stderr);
  const saved = JSON.parse(download.stdout);
  assert.deepEqual(Object.keys(saved).sort(), ['bytes', 'path', 'sha256', 'version']);
  assert.equal(saved.sha256, createHash('sha256').update(await readFile(target)).digest('hex'));

  // Each event as a JSON line.
  const events = await cli(['jobs', 'events', job.id]);
  assert.equal(events.code, 0, events.stderr);
  const kinds = events.stdout.trim().split('\n').map((l) => JSON.parse(l).kind as string);
  assert.ok(kinds.includes('checkpoint') && kinds.at(-1) === 'state', kinds.join(','));
});
