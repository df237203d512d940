/**
 * Dataset uploads are bounded (issue 10): the PUT URL is signed for the declared size, finalize checks
 * the stored size, bytes PUT after a finalize are never ingested, and uploads nobody finalized are
 * closed by the sweeper after their deadline, their multipart uploads aborted.
 *
 * The local S3 server does not check SigV4 signatures, so what S3 would do with a PUT of another
 * size is decided by the independent signature check in test/support/sigv4.ts; everything else runs
 * against the real services.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createHarness, type Harness } from './harness.js';
import { checkPresignedPut } from '../../support/sigv4.js';
import { UploadSweeper } from '../../../api/uploadSweeper.js';
import { ingestDatasetVersion } from '../../../runner/datasets/ingest.js';
import { DatasetIngestError } from '../../../runner/datasets/errors.js';
import { createLogger } from '../../../common/logger.js';

let h: Harness;
/** Multipart aborts the API sent to S3 (observed on the real client: the local server cannot abort). */
const aborted: string[] = [];

before(async () => {
  h = await createHarness();
  h.bucket.storage.client.middlewareStack.add(
    (next, context) => async (args) => {
      const uploadId = (args.input as { UploadId?: string }).UploadId;
      if (context.commandName === 'AbortMultipartUploadCommand' && uploadId) aborted.push(uploadId);
      return next(args);
    },
    { step: 'initialize', name: 'recordAborts' },
  );
});
after(async () => h.close());

async function json(res: Response) {
  return { status: res.status, body: (await res.json()) as any };
}

async function newVersion(name: string, body: Record<string, unknown>) {
  await h.request('POST', '/v1/datasets', { body: { name } });
  const r = await json(await h.request('POST', `/v1/datasets/${name}/versions`, { body: { options: { format: 'idx' }, fileName: 'a.tar.gz', ...body } }));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

const credentials = () => ({ accessKeyId: h.config.S3_ACCESS_KEY_ID, secretAccessKey: h.config.S3_SECRET_ACCESS_KEY });

describe('dataset uploads are bounded', () => {
  test('sizeBytes is required, and the PUT URL is signed for exactly that length', async () => {
    await h.request('POST', '/v1/datasets', { body: { name: 'nosize' } });
    const missing = await json(await h.request('POST', '/v1/datasets/nosize/versions', { body: { options: { format: 'idx' } } }));
    assert.equal(missing.status, 400);
    assert.equal(missing.body.error.details[0].path, 'sizeBytes');

    const v = await newVersion('signed', { sizeBytes: 4096 });
    const url = new URL(v.upload.url);
    assert.deepEqual(url.searchParams.get('X-Amz-SignedHeaders')!.split(';').sort(), ['content-length', 'host']);
    // What S3 decides when the PUT arrives: the declared length matches, any other does not.
    assert.equal(checkPresignedPut(url, credentials(), { 'content-length': '4096' }).ok, true);
    assert.deepEqual(checkPresignedPut(url, credentials(), { 'content-length': '4097' }), { ok: false, reason: 'signature does not match' });
    assert.deepEqual(checkPresignedPut(url, credentials(), { 'content-length': String(64 * 1024 ** 3) }), { ok: false, reason: 'signature does not match' });
  });

  test('finalize refuses an archive of another size (422 naming sizeBytes) and deletes it; the declared bytes then pass', async () => {
    const v = await newVersion('wrongsize', { sizeBytes: 1000 });
    // The local S3 server stores whatever arrives (S3 would refuse it: see the test above).
    assert.equal((await fetch(v.upload.url, { method: 'PUT', body: randomBytes(5000) })).status, 200);
    const f = await json(await h.request('POST', '/v1/datasets/wrongsize/versions/1/finalize'));
    assert.equal(f.status, 422, JSON.stringify(f.body));
    assert.equal(f.body.error.code, 'upload_size_mismatch');
    assert.equal(f.body.error.details[0].path, 'sizeBytes');
    assert.match(f.body.error.message, /5000 bytes.*sizeBytes 1000/);
    const [row] = await h.database.sql`select state, upload_key from dataset_versions where id = ${v.id}`;
    assert.equal(row!.state, 'awaiting_upload', 'nothing started');
    assert.equal(await h.bucket.storage.head(row!.upload_key), null, 'the wrong bytes are gone');

    assert.equal((await fetch(v.upload.url, { method: 'PUT', body: randomBytes(1000) })).status, 200);
    assert.equal((await h.request('POST', '/v1/datasets/wrongsize/versions/1/finalize')).status, 202);
  });

  test('multipart: parts adding up to another size are refused at finalize', async () => {
    const v = await newVersion('mpsize', { sizeBytes: 300_000, multipart: true });
    const part = v.upload.parts[0];
    const res = await fetch(part.url, { method: 'PUT', body: randomBytes(200_000) });
    const done = await h.request('POST', v.upload.completeUrl, { body: { uploadId: v.upload.uploadId, parts: [{ partNumber: 1, etag: res.headers.get('etag')! }] } });
    assert.equal(done.status, 200);
    const f = await json(await h.request('POST', '/v1/datasets/mpsize/versions/1/finalize'));
    assert.equal(f.status, 422);
    assert.equal(f.body.error.details[0].path, 'sizeBytes');
  });

  test('bytes PUT after finalize are never ingested: ingestion refuses them, and a retried finalize too', async () => {
    const v = await newVersion('swapped', { sizeBytes: 2048 });
    assert.equal((await fetch(v.upload.url, { method: 'PUT', body: randomBytes(2048) })).status, 200);
    const f = await json(await h.request('POST', '/v1/datasets/swapped/versions/1/finalize'));
    assert.equal(f.status, 202);
    // The URL is still within its lifetime; on the local server the PUT lands (same size, other bytes).
    assert.equal((await fetch(v.upload.url, { method: 'PUT', body: randomBytes(2048) })).status, 200);
    await assert.rejects(
      ingestDatasetVersion({ db: h.database.db, storage: h.bucket.storage, log: createLogger('silent') }, v.id),
      (err: unknown) => err instanceof DatasetIngestError && err.kind === 'upload_changed' && /not the one finalized/.test(err.message),
    );
    const [row] = await h.database.sql`select state, error from dataset_versions where id = ${v.id}`;
    assert.equal(row!.state, 'failed');
    assert.match(row!.error, /replaced after finalize/);
    // A failed version may be finalized again, but only with the bytes finalized first.
    const again = await json(await h.request('POST', '/v1/datasets/swapped/versions/1/finalize'));
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'upload_changed');
    // Nothing hands out a new upload URL for a version once it is finalized.
    const got = await json(await h.request('GET', '/v1/datasets/swapped/versions/1'));
    assert.equal(got.body.upload, undefined);
  });

  test('the sweeper closes versions past their upload deadline and aborts their multipart uploads; younger ones stay', async () => {
    const stale = await newVersion('stale', { sizeBytes: 300_000, multipart: true });
    const fresh = await newVersion('fresh', { sizeBytes: 300_000, multipart: true });
    const put = await fetch(stale.upload.parts[0].url, { method: 'PUT', body: randomBytes(300_000) });
    assert.equal(put.status, 200);
    await h.database.sql`update dataset_versions set upload_deadline = now() - interval '1 minute' where id = ${stale.id}`;
    aborted.length = 0;
    const sweeper = new UploadSweeper({ db: h.database.db, storage: h.bucket.storage, logger: createLogger('silent') });
    const report = await sweeper.sweep();
    assert.deepEqual(report.closed, [stale.id]);
    assert.deepEqual(report.aborted, [stale.upload.uploadId]);
    assert.deepEqual(aborted, [stale.upload.uploadId], 'AbortMultipartUpload was sent for the stale upload only');

    const [row] = await h.database.sql`select state, error, upload_key from dataset_versions where id = ${stale.id}`;
    assert.equal(row!.state, 'failed');
    assert.match(row!.error, /^upload expired: not finalized by /);
    assert.deepEqual(await h.bucket.storage.list(row!.upload_key), [], 'marker and bytes removed');
    const complete = await json(await h.request('POST', stale.upload.completeUrl, { body: { uploadId: stale.upload.uploadId, parts: [{ partNumber: 1, etag: put.headers.get('etag')! }] } }));
    assert.equal(complete.status, 409);
    assert.equal((await h.request('POST', '/v1/datasets/stale/versions/1/finalize')).status, 409);

    const [young] = await h.database.sql`select state from dataset_versions where id = ${fresh.id}`;
    assert.equal(young!.state, 'awaiting_upload');
    assert.deepEqual((await sweeper.sweep()).closed, [], 'a second pass finds nothing');
  });

  test('finalize after the deadline is refused even before the sweeper ran', async () => {
    const v = await newVersion('late', { sizeBytes: 100 });
    assert.equal((await fetch(v.upload.url, { method: 'PUT', body: randomBytes(100) })).status, 200);
    await h.database.sql`update dataset_versions set upload_deadline = now() - interval '1 second' where id = ${v.id}`;
    const f = await json(await h.request('POST', '/v1/datasets/late/versions/1/finalize'));
    assert.equal(f.status, 409);
    assert.equal(f.body.error.code, 'upload_expired');
  });

  test('deleting a version awaiting its multipart upload aborts the upload', async () => {
    const v = await newVersion('dropme', { sizeBytes: 300_000, multipart: true });
    aborted.length = 0;
    assert.equal((await h.request('DELETE', '/v1/datasets/dropme/versions/1')).status, 204);
    assert.deepEqual(aborted, [v.upload.uploadId]);
  });
});
