import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createHarness, forceState, pretrain, type Harness } from './harness.js';

let h: Harness;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

before(async () => {
  h = await createHarness();
});
after(async () => h.close());

async function json(res: Response) {
  return { status: res.status, body: (await res.json()) as any };
}

describe('datasets', () => {
  test('create, list, get; duplicate names 409; bad names 400; other tenants see nothing', async () => {
    let r = await json(await h.request('POST', '/v1/datasets', { body: { name: 'cifar-small', description: 'ten classes' } }));
    assert.equal(r.status, 201);
    assert.equal(r.body.name, 'cifar-small');
    r = await json(await h.request('POST', '/v1/datasets', { body: { name: 'cifar-small' } }));
    assert.equal(r.status, 409);
    assert.equal(r.body.error.code, 'dataset_exists');
    r = await json(await h.request('POST', '/v1/datasets', { body: { name: 'Bad Name!' } }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error.details[0].path, 'name');
    r = await json(await h.request('POST', '/v1/datasets', { body: { name: 'x2', owner: 'me' } }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error.details[0].path, 'owner');
    r = await json(await h.request('GET', '/v1/datasets'));
    assert.ok(r.body.datasets.some((d: any) => d.name === 'cifar-small'));
    r = await json(await h.request('GET', '/v1/datasets', { key: h.keys.adminB }));
    assert.ok(!r.body.datasets.some((d: any) => d.name === 'cifar-small'));
    r = await json(await h.request('GET', '/v1/datasets/cifar-small', { key: h.keys.adminB }));
    assert.equal(r.status, 404);
    r = await json(await h.request('POST', '/v1/datasets', { key: h.keys.readOnly, body: { name: 'nope' } }));
    assert.equal(r.status, 403);
  });

  test('version: presigned PUT upload, finalize starts one ingest job with its outbox row', async () => {
    await h.request('POST', '/v1/datasets', { body: { name: 'digits' } });
    let r = await json(await h.request('POST', '/v1/datasets/digits/versions', { body: { options: { format: 'idx', valFraction: 0.2 }, fileName: 'digits.tar.gz', sizeBytes: 4096 } }));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.version, 1);
    assert.equal(r.body.state, 'awaiting_upload');
    assert.equal(r.body.options.resize, 'none', 'option defaults are applied');
    assert.equal(r.body.upload.method, 'PUT');

    // Finalizing before the upload: refused, nothing started.
    let f = await json(await h.request('POST', '/v1/datasets/digits/versions/1/finalize'));
    assert.equal(f.status, 409);
    assert.equal(f.body.error.code, 'upload_missing');

    const archive = randomBytes(4096);
    const put = await fetch(r.body.upload.url, { method: 'PUT', body: archive });
    assert.equal(put.status, 200);
    f = await json(await h.request('POST', '/v1/datasets/digits/versions/1/finalize'));
    assert.equal(f.status, 202, JSON.stringify(f.body));
    assert.equal(f.body.version.state, 'ingesting');
    assert.equal(f.body.job.type, 'ingest');
    assert.equal(f.body.job.spec.datasetVersionId, f.body.version.id);
    const [row] = await h.database.sql`select upload_key from dataset_versions where id = ${f.body.version.id}`;
    assert.equal(sha(await h.bucket.storage.get(row!.upload_key)), sha(archive), 'the archive is stored byte for byte');
    const outbox = await h.database.sql`select payload from outbox where topic = 'job.enqueue' and payload->>'jobId' = ${f.body.job.id}`;
    assert.equal(outbox.length, 1);
    assert.equal(outbox[0]!.payload.type, 'ingest');
    // Finalizing twice is refused (one ingest job per version).
    f = await json(await h.request('POST', '/v1/datasets/digits/versions/1/finalize'));
    assert.equal(f.status, 409);

    r = await json(await h.request('POST', '/v1/datasets/digits/versions', { body: { options: { format: 'tiff' }, sizeBytes: 10 } }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error.details[0].path, 'options.format');
    r = await json(await h.request('POST', '/v1/datasets/nope/versions', { body: { options: { format: 'idx' }, sizeBytes: 10 } }));
    assert.equal(r.status, 404);
  });

  test('multipart upload: presigned part URLs, complete with ETags, then finalize', async () => {
    await h.request('POST', '/v1/datasets', { body: { name: 'big' } });
    const bytes = randomBytes(300_000);
    const r = await json(await h.request('POST', '/v1/datasets/big/versions', { body: { options: { format: 'imagefolder' }, fileName: 'big.zip', sizeBytes: bytes.length, multipart: true } }));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.upload.method, 'multipart');
    assert.equal(r.body.upload.parts.length, 1);
    const parts = [];
    for (const p of r.body.upload.parts) {
      const res = await fetch(p.url, { method: 'PUT', body: bytes });
      assert.equal(res.status, 200);
      parts.push({ partNumber: p.partNumber, etag: res.headers.get('etag')! });
    }
    const bad = await h.request('POST', r.body.upload.completeUrl, { body: { uploadId: 'nope', parts } });
    assert.equal(bad.status, 400, await bad.clone().text());
    const done = await h.request('POST', r.body.upload.completeUrl, { body: { uploadId: r.body.upload.uploadId, parts } });
    assert.equal(done.status, 200, await done.clone().text());
    const f = await json(await h.request('POST', '/v1/datasets/big/versions/1/finalize'));
    assert.equal(f.status, 202);
    const [row] = await h.database.sql`select upload_key from dataset_versions where id = ${f.body.version.id}`;
    assert.equal(sha(await h.bucket.storage.get(row!.upload_key)), sha(bytes));
  });

  test('get a version with its manifest; latest means the newest ready one', async () => {
    await h.request('POST', '/v1/datasets', { body: { name: 'withmanifest' } });
    await h.request('POST', '/v1/datasets/withmanifest/versions', { body: { options: { format: 'idx' }, sizeBytes: 10 } });
    await h.request('POST', '/v1/datasets/withmanifest/versions', { body: { options: { format: 'idx' }, sizeBytes: 10 } });
    const manifest = { manifestVersion: 1, format: 'idx', height: 28, width: 28, channels: 1, classes: ['0', '1'] };
    await h.database.sql`
      update dataset_versions set state = 'ready', manifest = ${JSON.stringify(manifest)}::jsonb, ready_at = now()
      where version = 1 and dataset_id = (select id from datasets where name = 'withmanifest')`;
    const v = await json(await h.request('GET', '/v1/datasets/withmanifest/versions/latest'));
    assert.equal(v.status, 200);
    assert.equal(v.body.version, 1);
    assert.deepEqual(v.body.manifest, manifest);
    const list = await json(await h.request('GET', '/v1/datasets/withmanifest/versions'));
    assert.deepEqual(list.body.versions.map((x: any) => x.state), ['ready', 'awaiting_upload']);
    const one = await json(await h.request('GET', '/v1/datasets/withmanifest'));
    assert.equal(one.body.latestReady, 1);
    assert.equal((await h.request('GET', '/v1/datasets/withmanifest/versions/7')).status, 404);
    assert.equal((await h.request('GET', '/v1/datasets/withmanifest/versions/x')).status, 400);
  });

  test('delete is refused (409) while an unfinished job uses the data, allowed after', async () => {
    await h.request('POST', '/v1/datasets', { body: { name: 'inuse' } });
    await h.request('POST', '/v1/datasets/inuse/versions', { body: { options: { format: 'idx' }, sizeBytes: 10 } });
    await h.database.sql`update dataset_versions set state = 'ready' where dataset_id = (select id from datasets where name = 'inuse')`;
    const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('inuse@1') })).json()) as any;
    assert.equal(job.dataset, 'inuse@1');
    let res = await h.request('DELETE', '/v1/datasets/inuse');
    assert.equal(res.status, 409);
    const body = (await res.json()) as any;
    assert.equal(body.error.code, 'dataset_in_use');
    assert.match(body.error.message, new RegExp(job.id));
    assert.equal((await h.request('DELETE', '/v1/datasets/inuse/versions/1')).status, 409);
    assert.equal((await h.request('DELETE', '/v1/datasets/inuse', { key: h.keys.adminB })).status, 404);
    await forceState(h, job.id, 'succeeded');
    res = await h.request('DELETE', '/v1/datasets/inuse');
    assert.equal(res.status, 204);
    assert.equal((await h.request('GET', '/v1/datasets/inuse')).status, 404);
    const after = (await (await h.request('GET', `/v1/jobs/${job.id}`)).json()) as any;
    assert.equal(after.dataset, 'inuse@1', 'the finished job keeps its resolved reference');
    assert.equal(after.datasetVersionId, null);
  });
});
