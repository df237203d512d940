/**
 * Specs that cannot fit a runner, and tenants past their limits, are refused at submission with a
 * 4xx that says why (the estimate, the limit), instead of OOM-ing a runner five times.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, pretrain, randomUUID, seedReadyDataset, type Harness } from './harness.js';
import { estimateFootprint } from '../../../contracts/footprint.js';
import { buildTrainConfig } from '../../../runner/trainConfig.js';
import { pretrainSpec } from '../../../contracts/jobSpec.js';

let h: Harness;
let small: Harness;

before(async () => {
  h = await createHarness({ TENANT_MAX_ACTIVE_JOBS: 3, TENANT_MAX_STORAGE_GB: 1 });
  small = await createHarness({ RUNNER_MEMORY_MB: 4096 });
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  await seedReadyDataset(h, h.tenantB, 'fmnist', 1);
  await seedReadyDataset(small, small.tenantA, 'fmnist', 1);
});
after(async () => {
  await h.close();
  await small.close();
});

async function refused(hh: Harness, body: unknown, status: number, code: string, path: string, message: RegExp) {
  const res = await hh.request('POST', '/v1/jobs', { body });
  const json = (await res.json()) as { error: { code: string; message: string; details: { path: string }[] } };
  assert.equal(res.status, status, JSON.stringify(json));
  assert.equal(json.error.code, code);
  assert.equal(json.error.details[0]!.path, path);
  assert.match(json.error.message, message);
}

describe('specs that cannot fit', () => {
  test('the estimate: parameters of the reference ViT-S and how memory grows', () => {
    const f = estimateFootprint({ model: { arch: 'vit_small', patch: 16 }, moco: { predictor: { enabled: false } }, optim: { batch: 2 } }, 224);
    // ViT-S/16 has 21.7 M parameters (DeiT); the 3-layer projector 384→4096→4096→256 adds 19.4 M.
    assert.ok(Math.abs(f.params - 41.1e6) < 0.2e6, String(f.params));
    const bigger = estimateFootprint({ optim: { batch: 512 } }, 28);
    assert.ok(bigger.peakBytes > estimateFootprint({ optim: { batch: 512, microBatch: 64 } }, 28).peakBytes, 'a smaller micro-batch needs less');
  });

  test('dim 4096 × depth 48, batch 65536, patch 1 on 512 px are refused with the estimate', async () => {
    await refused(h, pretrain('fmnist', { model: { arch: 'vit_small', dim: 4096, depth: 48, heads: 64 } }), 400, 'does_not_fit', 'model', /needs about \d+(\.\d)? GiB \(9\.\d G parameters.*runners declare 16\.0 GiB \(RUNNER_MEMORY_MB\)/);
    await refused(h, pretrain('fmnist', { optim: { batch: 65536 } }), 400, 'does_not_fit', 'optim.batch', /activations of one micro-batch/);
    await refused(h, pretrain('fmnist', { model: { arch: 'vit_small', patch: 1, imageSize: 512 } }), 400, 'does_not_fit', 'optim.batch', /at 512 px/);
  });

  test('heads 16384 wide fit a 16 GiB runner but not a 4 GiB one; the usual specs fit both', async () => {
    const wide = pretrain('fmnist', { moco: { projector: { hiddenDim: 16384 }, predictor: { hiddenDim: 16384 } } });
    assert.equal((await h.request('POST', '/v1/jobs', { body: wide })).status, 201);
    await refused(small, wide, 400, 'does_not_fit', 'model', /289\.\d M parameters at 8 px.*runners declare 4\.0 GiB/);
    assert.equal((await small.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).status, 201);
  });

  test('the runner refuses (not retried) what fits only the lower bound, at the real image size', () => {
    const spec = pretrainSpec.parse({ type: 'pretrain', dataset: 'fmnist', model: { arch: 'vit_small' } });
    const manifest = { manifestVersion: 1, format: 'idx', height: 64, width: 64, channels: 3, classes: ['a', 'b'], splits: { train: { count: 1000, classCounts: [500, 500], shards: [] } } } as never;
    assert.throws(() => buildTrainConfig(spec, manifest, 4096 * 1024 * 1024), (err: Error) => err instanceof RangeError && /at 64 px/.test(err.message));
    assert.ok(buildTrainConfig(spec, manifest), 'without a memory figure nothing is refused');
  });
});

describe('per-tenant limits', () => {
  test('queued + running jobs: the next is refused with 429 until one finishes; other tenants are unaffected', async () => {
    const ids: string[] = [];
    const base = (await h.database.sql`select count(*)::int as n from jobs where tenant_id = ${h.tenantA} and state in ('queued','running')`)[0]!.n as number;
    for (let i = base; i < 3; i++) {
      const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') });
      assert.equal(res.status, 201);
      ids.push(((await res.json()) as { id: string }).id);
    }
    await refused(h, pretrain('fmnist'), 429, 'active_job_limit', 'tenant', /3 jobs queued or running; the limit is 3 \(TENANT_MAX_ACTIVE_JOBS\)/);
    assert.equal((await h.request('POST', '/v1/jobs', { key: h.keys.adminB, body: pretrain('fmnist') })).status, 201, 'tenant B has its own count');
    const [first] = (await h.database.sql`select id from jobs where tenant_id = ${h.tenantA} and state = 'queued' limit 1`) as unknown as { id: string }[];
    assert.equal((await h.request('POST', `/v1/jobs/${first!.id}/cancel`)).status, 200);
    assert.equal((await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).status, 201, 'a place came free');
  });

  test('at the limit, a retry with an Idempotency-Key seen before still gets its job; a new key gets 429', async () => {
    const [first] = (await h.database.sql`select id from jobs where tenant_id = ${h.tenantA} and state = 'queued' limit 1`) as unknown as { id: string }[];
    assert.equal((await h.request('POST', `/v1/jobs/${first!.id}/cancel`)).status, 200);
    const key = `retry-${randomUUID()}`;
    const created = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist'), headers: { 'idempotency-key': key } });
    assert.equal(created.status, 201);
    const replay = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist'), headers: { 'idempotency-key': key } });
    assert.equal(replay.status, 201, await replay.clone().text());
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assert.equal(((await replay.json()) as { id: string }).id, ((await created.json()) as { id: string }).id);
    await refused(h, pretrain('fmnist'), 429, 'active_job_limit', 'tenant', /3 jobs queued or running/);
  });

  test('far below the limit a recent count is reused; near it every submission counts afresh', async () => {
    // quotaCountMs of 10 minutes: the reuse does not depend on how fast this test runs.
    const lax = await createHarness({ TENANT_MAX_ACTIVE_JOBS: 10 }, { quotaCountMs: 600_000 });
    try {
      await seedReadyDataset(lax, lax.tenantA, 'fmnist', 1);
      assert.equal((await lax.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).status, 201, 'counts: 0 active');
      // Another replica's submissions, unseen by this process's estimate (1 active).
      const [job] = (await lax.database.sql`select spec, dataset_version_id from jobs where tenant_id = ${lax.tenantA}`) as unknown as { spec: unknown; dataset_version_id: string }[];
      await lax.database.sql`
        insert into jobs (tenant_id, type, state, spec, dataset_version_id)
        select ${lax.tenantA}, 'pretrain', 'queued', ${JSON.stringify(job!.spec)}::jsonb, ${job!.dataset_version_id} from generate_series(1, 20)`;
      const statuses: number[] = [];
      for (let i = 0; i < 9; i++) statuses.push((await lax.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).status);
      // Estimates 1..8 are below 10 - 1: skipped counts; at 9 the submission counts (29 active) and is refused.
      assert.deepEqual(statuses, [201, 201, 201, 201, 201, 201, 201, 201, 429]);
      await refused(lax, pretrain('fmnist'), 429, 'active_job_limit', 'tenant', /29 jobs queued or running; the limit is 10/);
    } finally {
      await lax.close();
    }
  });

  test('storage: past TENANT_MAX_STORAGE_GB new pretrain jobs and uploads are refused (409)', async () => {
    const [job] = (await h.database.sql`select id from jobs where tenant_id = ${h.tenantB} limit 1`) as unknown as { id: string }[];
    await h.database.sql`
      insert into checkpoints (job_id, version, step, epoch, s3_prefix, files, bytes, sha256)
      values (${job!.id}, 1, 1, 0, 'checkpoints/x/', '{}'::jsonb, ${2 * 1024 ** 3}, 'x')`;
    const res = await h.request('POST', '/v1/jobs', { key: h.keys.adminB, body: pretrain('fmnist') });
    assert.equal(res.status, 409);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /stores 2\.0 GiB; the limit is 1\.0 GiB \(TENANT_MAX_STORAGE_GB\)/);
    const upload = await h.request('POST', '/v1/datasets/fmnist/versions', { key: h.keys.adminB, body: { options: { format: 'idx' }, sizeBytes: 10 } });
    assert.equal(upload.status, 409, await upload.clone().text());
    assert.equal(((await upload.json()) as { error: { code: string } }).error.code, 'storage_limit');
  });
});
