/**
 * Dataset versions that are not ready say so: `versions/latest` while the only version ingests or
 * failed names it and what it is doing; a job on an ingesting or failed version says that, with
 * the failure's reason. And checkpoint listings give every file its own size and sha256.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createHarness, pretrain, seedCheckpoint, type Harness } from './harness.js';

let h: Harness;
before(async () => (h = await createHarness()));
after(async () => h.close());

async function datasetWith(name: string, versions: { state: string; error?: string }[]) {
  const [d] = await h.database.sql<{ id: string }[]>`insert into datasets (tenant_id, name) values (${h.tenantA}, ${name}) returning id`;
  for (const [i, v] of versions.entries()) {
    await h.database.sql`
      insert into dataset_versions (dataset_id, version, state, options, upload_key, error)
      values (${d!.id}, ${i + 1}, ${v.state}, ${JSON.stringify({ format: 'idx' })}::jsonb, ${`datasets/${h.tenantA}/${d!.id}/v${i + 1}/upload/archive`}, ${v.error ?? null})`;
  }
}

const errorOf = async (res: Response) => ((await res.json()) as { error: { code: string; message: string; details: { path: string }[] } }).error;

test('versions/latest while the only version ingests: 409 naming it, not 404', async () => {
  await datasetWith('busy', [{ state: 'ingesting' }]);
  const res = await h.request('GET', '/v1/datasets/busy/versions/latest');
  assert.equal(res.status, 409);
  const error = await errorOf(res);
  assert.equal(error.code, 'dataset_not_ready');
  assert.match(error.message, /busy@1 is still ingesting/);
  assert.equal(error.details[0]!.path, 'version');
  assert.equal((await h.request('GET', '/v1/datasets/busy/versions/1')).status, 200, 'the version itself is there');
});

test('versions/latest when the newest failed and none is ready: says it failed, and why', async () => {
  await datasetWith('broken', [{ state: 'failed', error: 'image is 32x32 but imageSize is 16' }]);
  const error = await errorOf(await h.request('GET', '/v1/datasets/broken/versions/latest'));
  assert.equal(error.code, 'dataset_not_ready');
  assert.match(error.message, /broken@1 failed ingestion: image is 32x32 but imageSize is 16/);
  await datasetWith('empty', []);
  assert.equal((await h.request('GET', '/v1/datasets/empty/versions/latest')).status, 404, 'no versions at all stays 404');
});

test('a job on a failed or ingesting version says which and why; a missing one stays dataset_not_found', async () => {
  await datasetWith('mixed', [{ state: 'failed', error: 'corrupt archive: unexpected end of data' }, { state: 'ingesting' }]);
  const failed = await h.request('POST', '/v1/jobs', { body: pretrain('mixed@1') });
  assert.equal(failed.status, 422);
  const f = await errorOf(failed);
  assert.equal(f.code, 'dataset_not_ready');
  assert.match(f.message, /^dataset: mixed@1 failed ingestion: corrupt archive: unexpected end of data/);
  const ingesting = await errorOf(await h.request('POST', '/v1/jobs', { body: pretrain('mixed') }));
  assert.match(ingesting.message, /mixed has no ready version yet: mixed@2 is still ingesting/);
  const missing = await errorOf(await h.request('POST', '/v1/jobs', { body: pretrain('mixed@7') }));
  assert.equal(missing.code, 'dataset_not_found');
  assert.match(missing.message, /mixed has no version 7/);
});

test('checkpoint listings: every file with its own bytes and sha256; bytes is their total', async () => {
  const [job] = await h.database.sql<{ id: string }[]>`insert into jobs (tenant_id, type, state, spec) values (${h.tenantA}, 'pretrain', 'running', '{}'::jsonb) returning id`;
  const cp = await seedCheckpoint(h, h.tenantA, job!.id, 1, { 'state.safetensors': randomBytes(300), 'backbone.safetensors': randomBytes(120) });
  const body = (await (await h.request('GET', `/v1/jobs/${job!.id}/checkpoints`)).json()) as { checkpoints: { bytes: number; files: Record<string, { bytes: number; sha256: string }> }[] };
  const listed = body.checkpoints[0]!;
  assert.deepEqual(listed.files, { 'state.safetensors': { bytes: 300, sha256: cp.files['state.safetensors']!.sha256 }, 'backbone.safetensors': { bytes: 120, sha256: cp.files['backbone.safetensors']!.sha256 } });
  assert.equal(listed.bytes, 420);
});
