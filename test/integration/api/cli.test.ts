import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { createHarness, forceState, pretrain, seedCheckpoint, seedReadyDataset, type Harness } from './harness.js';

let h: Harness;
let server: ReturnType<typeof serve>;
let baseUrl: string;
let dir: string;

function cli(args: string[], key = h.keys.admin): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/momentum.ts', ...args], {
      env: { ...process.env, MOMENTUM_URL: baseUrl, MOMENTUM_API_KEY: key },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 2);
  server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((r) => server.once('listening', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  dir = await mkdtemp(join(tmpdir(), 'momentum-cli-'));
});
after(async () => {
  await new Promise((r) => server.close(r));
  await h.close();
});

describe('cli', () => {
  test('jobs submit with an idempotency key twice prints the same job; get/list work', async () => {
    const spec = join(dir, 'spec.json');
    await writeFile(spec, JSON.stringify(pretrain('fmnist@1')));
    const a = await cli(['jobs', 'submit', spec, '--idempotency-key', 'ci-run-42']);
    assert.equal(a.code, 0, a.stderr);
    const b = await cli(['jobs', 'submit', spec, '--idempotency-key', 'ci-run-42']);
    assert.equal(JSON.parse(a.stdout).id, JSON.parse(b.stdout).id);
    const got = await cli(['jobs', 'get', JSON.parse(a.stdout).id]);
    assert.equal(got.code, 0);
    assert.equal(JSON.parse(got.stdout).dataset, 'fmnist@1');
    const list = await cli(['jobs', 'list', '--state', 'queued']);
    assert.ok(JSON.parse(list.stdout).jobs.length >= 1);
  });

  test('exit codes: 2 when refused (with the field named), 3 when the awaited job failed, 1 on usage', async () => {
    const spec = join(dir, 'bad.json');
    await writeFile(spec, JSON.stringify(pretrain('fmnist', { optim: { batch: 0 } })));
    const bad = await cli(['jobs', 'submit', spec]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /optim\.batch/);
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as any;
    assert.equal((await cli(['jobs', 'get', job.id], h.keys.adminB)).code, 2, "another tenant's job");
    await forceState(h, job.id, 'failed');
    assert.equal((await cli(['jobs', 'wait', job.id])).code, 3);
    assert.equal((await cli(['frobnicate'])).code, 1);
  });

  test('retrain from the latest checkpoint on a new dataset version', async () => {
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist@1') })).json()) as any;
    await seedCheckpoint(h, h.tenantA, job.id, 1, { 'state.safetensors': randomBytes(100) });
    await forceState(h, job.id, 'succeeded');
    const r = await cli(['retrain', job.id, '--dataset', 'fmnist@2', '--from-checkpoint', 'latest']);
    assert.equal(r.code, 0, r.stderr);
    const child = JSON.parse(r.stdout);
    assert.equal(child.parentJobId, job.id);
    assert.deepEqual(child.spec.initFrom, { job: job.id, checkpoint: 'v1' });
  });

  test('checkpoints download verifies sha256: exact bytes saved, a corrupted object exits 5', async () => {
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as any;
    const bytes = randomBytes(123_456);
    const cp = await seedCheckpoint(h, h.tenantA, job.id, 1, { 'backbone.safetensors': bytes, 'state.safetensors': randomBytes(10) });
    const target = join(dir, 'backbone.safetensors');
    const ok = await cli(['checkpoints', 'download', job.id, 'latest', '--file', 'backbone', '-o', target]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(createHash('sha256').update(await readFile(target)).digest('hex'), createHash('sha256').update(bytes).digest('hex'));
    await h.bucket.storage.put(cp.files['backbone.safetensors']!.key, randomBytes(10)); // bytes no longer match the record
    const corrupt = await cli(['checkpoints', 'download', job.id, 'v1', '-o', join(dir, 'corrupt.safetensors')]);
    assert.equal(corrupt.code, 5, corrupt.stderr);
    assert.match(corrupt.stderr, /sha256 mismatch/);
    assert.equal((await cli(['checkpoints', 'download', job.id, 'v9'])).code, 2);
  });

  test('datasets upload: creates the dataset, uploads the archive, starts ingestion', async () => {
    const archive = join(dir, 'digits.tar');
    const bytes = randomBytes(5000);
    await writeFile(archive, bytes);
    const r = await cli(['datasets', 'upload', 'digits', archive, '--format', 'imagefolder']);
    assert.equal(r.code, 0, r.stderr);
    const started = JSON.parse(r.stdout);
    assert.equal(started.version.state, 'ingesting');
    assert.equal(started.job.type, 'ingest');
    const [row] = await h.database.sql`select upload_key from dataset_versions where id = ${started.version.id}`;
    assert.deepEqual(await h.bucket.storage.get(row!.upload_key), bytes);
    const got = await cli(['datasets', 'get', 'digits']);
    assert.equal(JSON.parse(got.stdout).versions, 1);
  });
  test('sweeps submit/get/cancel/wait: idempotent submit, the table as CSV, cancel ends it (exit 3 when awaited)', async () => {
    const file = join(dir, 'sweep.json');
    await writeFile(file, JSON.stringify({ base: pretrain('fmnist@1'), grid: { 'optim.lr': [1e-3, 2e-3] }, budget: { maxConcurrent: 1 } }));
    const a = await cli(['sweeps', 'submit', file, '--idempotency-key', 'ci-sweep-1']);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stderr, /submitted sweep .* \(2 settings\)/);
    const b = await cli(['sweeps', 'submit', file, '--idempotency-key', 'ci-sweep-1']);
    const id = JSON.parse(a.stdout).id;
    assert.equal(JSON.parse(b.stdout).id, id);
    const csv = await cli(['sweeps', 'get', id, '--csv']);
    assert.equal(csv.code, 0, csv.stderr);
    const lines = csv.stdout.trim().split('\n');
    assert.equal(lines.length, 3);
    assert.match(lines[0]!, /^index,optim\.lr,linearTop1,/);
    const canceled = await cli(['sweeps', 'cancel', id]);
    assert.equal(canceled.code, 0, canceled.stderr);
    assert.equal(JSON.parse(canceled.stdout).state, 'canceled');
    const waited = await cli(['sweeps', 'wait', id, '--timeout', '5']);
    assert.equal(waited.code, 3, waited.stderr);
    assert.match(waited.stderr, /canceled by user/);
  });
});
