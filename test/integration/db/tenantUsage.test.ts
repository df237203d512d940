/**
 * The per-tenant stored-bytes figure (`tenant_usage`, migration 0013) that every pretrain submission
 * checks against TENANT_MAX_STORAGE_GB. Triggers keep it equal to the sum of the rows it stands for
 * through every way those rows change (the product's own writes, cascades, a rolled-back
 * transaction), and a submission reads that row rather than summing the tenant's jobs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, pretrain, seedReadyDataset, type Harness } from '../api/harness.js';
import { deleteCheckpointRows, registerCheckpoint } from '../../../db/runs.js';
import { deleteDatasetVersions, getDataset } from '../../../db/datasets.js';
import { markDatasetVersionFailed, markDatasetVersionReady } from '../../../db/datasetVersions.js';
import { recountStoredBytes, storedBytes } from '../../../db/quotas.js';
import { ensureTenant } from '../../../db/apiKeys.js';

let h: Harness;

before(async () => {
  h = await createHarness({ TENANT_MAX_STORAGE_GB: 1 });
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
});
after(async () => h.close());

/** The kept figure, and the same figure summed from scratch: they must always agree. */
async function usage(tenantId: string): Promise<{ kept: number; recount: number }> {
  return { kept: await storedBytes(h.database.sql, tenantId), recount: await recountStoredBytes(h.database.sql, tenantId) };
}

async function runningJob(tenantId = h.tenantA): Promise<string> {
  const key = tenantId === h.tenantA ? h.keys.admin : h.keys.adminB;
  const res = await h.request('POST', '/v1/jobs', { key, body: pretrain('fmnist') });
  assert.equal(res.status, 201, await res.clone().text());
  const id = ((await res.json()) as { id: string }).id;
  await h.database.sql`update jobs set state = 'running', attempt = 1 where id = ${id}`;
  return id;
}

const checkpoint = (jobId: string, version: number, bytes: number) =>
  registerCheckpoint(h.database.db, { jobId, attempt: 1, version, step: version * 10, s3Prefix: `x/${jobId}/v${version}/`, files: {}, bytes, sha256: 'x' });

/** A version with an uploaded archive of `bytes`, ingesting (no manifest yet). */
async function ingestingVersion(datasetId: string, version: number): Promise<string> {
  const [row] = await h.database.sql<{ id: string }[]>`
    insert into dataset_versions (dataset_id, version, state, options, upload_key)
    values (${datasetId}, ${version}, 'ingesting', '{}'::jsonb, ${`up/${datasetId}/${version}`}) returning id`;
  return row!.id;
}

const manifestOf = (bytes: number) => ({ manifestVersion: 1, source: { key: 'k', bytes, sha256: 's' } }) as never;

describe('tenant_usage follows what the tenant stores', () => {
  test('checkpoints registered, and deleted by retention', async () => {
    const before = await usage(h.tenantA);
    const jobId = await runningJob();
    const first = await checkpoint(jobId, 1, 1000);
    await checkpoint(jobId, 2, 2500);
    assert.deepEqual(await usage(h.tenantA), { kept: before.kept + 3500, recount: before.recount + 3500 });
    assert.deepEqual(await deleteCheckpointRows(h.database.db, [first.id]), [first.id]);
    assert.deepEqual(await usage(h.tenantA), { kept: before.kept + 2500, recount: before.recount + 2500 });
    assert.deepEqual(await usage(h.tenantB), { kept: 0, recount: 0 }, 'the other tenant stores nothing');
  });

  test('a rolled-back checkpoint counts for no one', async () => {
    const before = await usage(h.tenantA);
    const jobId = await runningJob();
    await h.database.sql
      .begin(async (tx) => {
        await tx`insert into checkpoints (job_id, version, step, s3_prefix, files, bytes, sha256) values (${jobId}, 1, 1, 'p/', '{}'::jsonb, 7777, 'x')`;
        throw new Error('rollback');
      })
      .catch((err: Error) => assert.equal(err.message, 'rollback'));
    assert.deepEqual(await usage(h.tenantA), before);
  });

  test('dataset versions: ready with a manifest, failed, deleted through the API path and by cascade', async () => {
    const before = await usage(h.tenantA);
    const [d] = await h.database.sql<{ id: string }[]>`insert into datasets (tenant_id, name) values (${h.tenantA}, 'usage-ds') returning id`;
    const v1 = await ingestingVersion(d!.id, 1);
    const v2 = await ingestingVersion(d!.id, 2);
    assert.deepEqual(await usage(h.tenantA), before, 'an upload still ingesting is not counted yet');
    assert.equal(await markDatasetVersionReady(h.database.db, v1, manifestOf(40_000), 'm1'), true);
    assert.equal(await markDatasetVersionReady(h.database.db, v2, manifestOf(5_000), 'm2'), true);
    assert.deepEqual(await usage(h.tenantA), { kept: before.kept + 45_000, recount: before.recount + 45_000 });
    // A version that failed after all loses its manifest, and its bytes.
    await h.database.sql`update dataset_versions set state = 'ingesting' where id = ${v2}`;
    assert.equal(await markDatasetVersionFailed(h.database.db, v2, 'bad archive'), true);
    assert.deepEqual(await usage(h.tenantA), { kept: before.kept + 40_000, recount: before.recount + 40_000 });
    const dataset = (await getDataset(h.database.db, h.tenantA, 'usage-ds'))!;
    assert.equal((await deleteDatasetVersions(h.database.db, dataset, [v1])).outcome, 'deleted');
    assert.deepEqual(await usage(h.tenantA), before);

    // The dataset row deleted directly: its versions go by cascade, where their dataset is no longer visible.
    const v3 = await ingestingVersion(d!.id, 3);
    await markDatasetVersionReady(h.database.db, v3, manifestOf(9_000), 'm3');
    assert.equal((await usage(h.tenantA)).kept, before.kept + 9_000);
    await h.database.sql`delete from datasets where id = ${d!.id}`;
    assert.deepEqual(await usage(h.tenantA), before);
  });

  test('a job deleted with its checkpoints takes their bytes off', async () => {
    const before = await usage(h.tenantA);
    const jobId = await runningJob();
    await checkpoint(jobId, 1, 123_456);
    assert.equal((await usage(h.tenantA)).kept, before.kept + 123_456);
    await h.database.sql`delete from jobs where id = ${jobId}`;
    assert.deepEqual(await usage(h.tenantA), before);
  });

  test('a tenant with checkpoints and datasets can still be deleted (its usage row goes with it)', async () => {
    const gone = await ensureTenant(h.database.db, 'usage-gone');
    const [d] = await h.database.sql<{ id: string }[]>`insert into datasets (tenant_id, name) values (${gone.id}, 'g') returning id`;
    const v = await ingestingVersion(d!.id, 1);
    await markDatasetVersionReady(h.database.db, v, manifestOf(500), 'm');
    const [job] = await h.database.sql<{ id: string }[]>`
      insert into jobs (tenant_id, type, state, spec, attempt) values (${gone.id}, 'pretrain', 'running', '{}'::jsonb, 1) returning id`;
    await checkpoint(job!.id, 1, 600);
    assert.deepEqual(await usage(gone.id), { kept: 1100, recount: 1100 });
    await h.database.sql`delete from tenants where id = ${gone.id}`;
    const rows = await h.database.sql`select 1 from tenant_usage where tenant_id = ${gone.id}`;
    assert.equal(rows.length, 0);
  });
});

describe('the submission checks the kept figure', () => {
  test('past the limit by the usage row alone, a pretrain submission is refused (409) and one below it is accepted', async () => {
    const [t] = await h.database.sql<{ stored_bytes: string }[]>`select stored_bytes::text from tenant_usage where tenant_id = ${h.tenantB}`.catch(() => []);
    const original = Number(t?.stored_bytes ?? 0);
    // No checkpoint or manifest behind these bytes: only a submission that reads the row sees them.
    await h.database.sql`
      insert into tenant_usage (tenant_id, stored_bytes) values (${h.tenantB}, ${1024 ** 3})
      on conflict (tenant_id) do update set stored_bytes = excluded.stored_bytes`;
    try {
      await seedReadyDataset(h, h.tenantB, 'fmnist', 1);
      const refused = await h.request('POST', '/v1/jobs', { key: h.keys.adminB, body: pretrain('fmnist') });
      assert.equal(refused.status, 409, await refused.clone().text());
      assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'storage_limit');
      await h.database.sql`update tenant_usage set stored_bytes = ${1024 ** 3 - 1} where tenant_id = ${h.tenantB}`;
      assert.equal((await h.request('POST', '/v1/jobs', { key: h.keys.adminB, body: pretrain('fmnist') })).status, 201);
    } finally {
      await h.database.sql`update tenant_usage set stored_bytes = ${original} where tenant_id = ${h.tenantB}`;
    }
  });
});
