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
import { transitionJob } from '../../../db/jobs.js';

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

  test('evaluations list shows the model beside both baselines and its gain over each, in points', async () => {
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as any;
    const cp = await seedCheckpoint(h, h.tenantA, job.id, 1, { 'state.safetensors': randomBytes(10) });
    const subjects = {
      model: { linear: { top1: 0.885 }, knn: { top1: 0.861 } },
      random_init: { linear: { top1: 0.701 }, knn: { top1: 0.702 } },
      raw_pixels: { linear: { top1: 0.84 }, knn: { top1: 0.855 } },
    };
    const gains = { random_init: { linearTop1: 0.184, knnTop1: 0.159 }, raw_pixels: { linearTop1: 0.045, knnTop1: 0.006 } };
    await h.database.sql`insert into evaluations (job_id, checkpoint_id, kind, top1, knn_top1, subjects, details)
      values (${job.id}, ${cp.id}, 'linear', 0.885, 0.861, ${JSON.stringify(subjects)}::jsonb, ${JSON.stringify({ gains })}::jsonb)`;
    const r = await cli(['evaluations', 'list', job.id]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).evaluations.length, 1, 'stdout keeps the JSON');
    const [header, row] = r.stderr.trim().split('\n').map((l) => l.split(/\s{2,}/));
    assert.deepEqual(header, ['version', 'model linear / kNN', 'random init', 'raw pixels', 'gain vs random init', 'gain vs raw pixels']);
    assert.deepEqual(row, ['v1', '88.5% / 86.1%', '70.1% / 70.2%', '84.0% / 85.5%', '+18.4 / +15.9', '+4.5 / +0.6']);
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

describe('cli: waiting and following', () => {
  test('exit code 4: --timeout passes while the job is still queued', async () => {
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as any;
    const r = await cli(['jobs', 'wait', job.id, '--timeout', '1']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, new RegExp(`job ${job.id} still queued after 1 s`));
  });

  test('exit code 6: the API unreachable (an unused port) is one line, no stack trace', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/momentum.ts', 'jobs', 'list'], {
      env: { ...process.env, MOMENTUM_URL: 'http://127.0.0.1:1', MOMENTUM_API_KEY: h.keys.admin },
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise((resolve) => child.on('close', resolve));
    assert.equal(code, 6, stderr);
    assert.match(stderr, /127\.0\.0\.1:1/);
    assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
  });

  test('jobs submit --wait returns the finished job (exit 0) once it succeeds', async () => {
    const spec = join(dir, 'wait.json');
    await writeFile(spec, JSON.stringify(pretrain('fmnist')));
    const key = `wait-${randomBytes(4).toString('hex')}`;
    const waiting = cli(['jobs', 'submit', spec, '--wait', '--timeout', '300', '--idempotency-key', key]);
    // The job the CLI submitted, found by its idempotency key, finishes the way a runner would end it.
    let jobId: string | undefined;
    while (!jobId) {
      const [row] = await h.database.sql`select id from jobs where idempotency_key = ${key}`;
      jobId = row?.id;
      if (!jobId) await new Promise((r) => setTimeout(r, 100));
    }
    await forceState(h, jobId, 'running');
    await forceState(h, jobId, 'succeeded');
    const r = await waiting;
    assert.equal(r.code, 0, r.stderr);
    const printed = JSON.parse(r.stdout);
    assert.deepEqual([printed.id, printed.state], [jobId, 'succeeded']);
  });

  test('jobs events --follow prints each event as it happens and ends with the job', async () => {
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as any;
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/momentum.ts', 'jobs', 'events', job.id, '--follow'], {
      env: { ...process.env, MOMENTUM_URL: baseUrl, MOMENTUM_API_KEY: h.keys.admin },
    });
    const lines: any[] = [];
    let buffer = '';
    let stderr = '';
    let sawLine: () => void = () => {};
    child.stdout.on('data', (d) => {
      buffer += d;
      let i;
      while ((i = buffer.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buffer.slice(0, i)));
        buffer = buffer.slice(i + 1);
        sawLine();
      }
    });
    child.stderr.on('data', (d) => (stderr += d));
    const closed = new Promise((resolve) => child.on('close', resolve));
    const lineCount = (n: number) => new Promise<void>((resolve) => {
      sawLine = () => lines.length >= n && resolve();
      sawLine();
    });
    await lineCount(1); // the queued event, already there when it connected
    await transitionJob(h.database.db, job.id, { from: ['queued'], to: 'running' });
    await lineCount(2);
    await transitionJob(h.database.db, job.id, { from: ['running'], to: 'succeeded', reason: 'done' });
    assert.equal(await closed, 0, stderr);
    const states = lines.map((l) => l.toState);
    assert.deepEqual(states.slice(0, 3), ['queued', 'running', 'succeeded'], JSON.stringify(lines));
  });
});

/** Lines of a stream; each must be one JSON object. */
const jsonLines = (text: string) => text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('cli: one consistent output, each error once', () => {
  test('an unknown command or option is one line pointing at --help, exit 1', async () => {
    for (const args of [['frobnicate'], ['jobs', 'frobnicate'], ['jobs', 'list', '--frob'], []]) {
      const r = await cli(args);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line for ${args.join(' ')}:\n${r.stderr}`);
      assert.match(r.stderr, /--help/);
      assert.equal(r.stdout, '');
    }
  });

  test('jobs submit names the file it could not read or parse, or whose spec was refused; the refusal is printed once', async () => {
    const missing = await cli(['jobs', 'submit', join(dir, 'absent.json')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr.trim(), /^momentum: \S*absent\.json: cannot read it \(ENOENT\)$/);
    const broken = join(dir, 'broken.json');
    await writeFile(broken, '{"type": "pretrain",');
    const notJson = await cli(['jobs', 'submit', broken]);
    assert.equal(notJson.code, 1);
    assert.match(notJson.stderr.trim(), /^momentum: \S*broken\.json: not valid JSON: [^\n]+$/);
    const refused = join(dir, 'refused.json');
    await writeFile(refused, JSON.stringify(pretrain('fmnist', { optim: { batch: 0 } })));
    const r = await cli(['jobs', 'submit', refused]);
    assert.equal(r.code, 2);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /refused\.json: optim\.batch/);
    assert.equal(lines[0]!.split('optim.batch').length, 2, `the field is named once: ${lines[0]}`);
  });

  test('--json: every answer on one line, every error as one JSON line with its exit code', async () => {
    const spec = join(dir, 'ok.json');
    await writeFile(spec, JSON.stringify(pretrain('fmnist@1')));
    const submitted = await cli(['jobs', 'submit', spec, '--json']);
    assert.equal(submitted.code, 0, submitted.stderr);
    assert.equal(submitted.stdout.trim().split('\n').length, 1);
    assert.equal(submitted.stderr, '', 'no progress chatter with --json');
    const job = JSON.parse(submitted.stdout);
    for (const args of [['jobs', 'get', job.id], ['jobs', 'list'], ['datasets', 'list'], ['datasets', 'get', 'fmnist'], ['checkpoints', 'list', job.id], ['evaluations', 'list', job.id]]) {
      const r = await cli([...args, '--json']);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout.trim().split('\n').length, 1, args.join(' '));
      assert.equal(typeof JSON.parse(r.stdout), 'object');
    }
    const refused = await cli(['jobs', 'get', randomUUIDv4(), '--json']);
    assert.equal(refused.code, 2);
    const err = JSON.parse(refused.stderr);
    assert.equal(err.exitCode, 2);
    assert.equal(err.error.code, 'not_found');
    assert.ok(Array.isArray(err.error.details));
    const usage = await cli(['nothing', '--json']);
    assert.equal(JSON.parse(usage.stderr).exitCode, 1);
  });

  test('jobs events and jobs logs print JSON lines, with and without --follow', async () => {
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as any;
    for (let i = 1; i <= 3; i++) await h.database.sql`insert into job_logs (job_id, attempt, level, message) values (${job.id}, 1, 'info', ${`line ${i}`})`;
    await h.request('POST', `/v1/jobs/${job.id}/cancel`); // terminal: --follow ends
    for (const follow of [[], ['--follow']]) {
      const events = await cli(['jobs', 'events', job.id, ...follow]);
      assert.equal(events.code, 0, events.stderr);
      const rows = jsonLines(events.stdout);
      assert.deepEqual(rows.map((e) => e.toState), ['queued', 'canceled'], `events ${follow.join(' ')}`);
      const logs = await cli(['jobs', 'logs', job.id, ...follow]);
      assert.equal(logs.code, 0, logs.stderr);
      assert.deepEqual(jsonLines(logs.stdout).map((l) => l.message), ['line 1', 'line 2', 'line 3'], `logs ${follow.join(' ')}`);
    }
  });

  test('datasets upload sends every option the API takes (--resize, --channels, --val-fraction, --seed, --image-size)', async () => {
    const archive = join(dir, 'resize.tar');
    await writeFile(archive, randomBytes(2000));
    const r = await cli(['datasets', 'upload', 'resized', archive, '--format', 'imagefolder', '--image-size', '16', '--resize', 'center-crop', '--channels', '1', '--val-fraction', '0.2', '--seed', '7', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const started = JSON.parse(r.stdout);
    const [row] = await h.database.sql`select options from dataset_versions where id = ${started.version.id}`;
    assert.deepEqual(row!.options, { format: 'imagefolder', imageSize: 16, channels: 1, resize: 'center-crop', valFraction: 0.2, seed: 7 });
    const bad = await cli(['datasets', 'upload', 'resized', archive, '--format', 'imagefolder', '--resize', 'squash']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr.trim(), /^momentum: --resize must be one of none, stretch, center-crop, got "squash"$/);
  });
});

function randomUUIDv4(): string {
  return '00000000-0000-4000-8000-000000000000';
}

