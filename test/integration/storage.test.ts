import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { createTestStorage, type TestStorage } from '../support/services.js';
import { NotFoundError } from '../../common/storage.js';

let s: TestStorage;
before(async () => (s = await createTestStorage()));
after(() => s.cleanup());

test('a multipart upload stores the bytes exactly and reports their sha256', async () => {
  const body = Buffer.alloc(9 * 1024 * 1024 + 123);
  for (let i = 0; i < body.length; i += 4096) body[i] = i % 251;
  const put = await s.storage.put('x/big.bin', body);
  assert.equal(put.bytes, body.length);
  assert.equal(put.sha256, createHash('sha256').update(body).digest('hex'));
  assert.ok((await s.storage.get('x/big.bin')).equals(body));
});

// From a file, as checkpoints are uploaded (put() from memory shares putParts; the 9 MiB test covers it).
test('a file above 64 MiB: several parts, a round trip byte for byte, the sha256 of the bytes', async () => {
  // 65 MiB and a bit, not a multiple of the part size: the last part is short.
  const body = randomBytes(65 * 1024 * 1024 + 4097);
  const want = createHash('sha256').update(body).digest('hex');
  const dir = await mkdtemp(join(tmpdir(), 'storage-big-'));
  try {
    const path = join(dir, 'big.bin');
    await writeFile(path, body);
    for (const [key, put] of [['x/huge-from-file.bin', () => s.storage.putFile('x/huge-from-file.bin', path)]] as const) {
      // Which requests went to S3 (the local S3 server's ETags do not count parts, so the test does).
      const sent: string[] = [];
      const send = s.storage.client.send.bind(s.storage.client);
      s.storage.client.send = ((command: { constructor: { name: string } }, ...rest: unknown[]) => {
        sent.push(command.constructor.name);
        return (send as (...a: unknown[]) => unknown)(command, ...rest);
      }) as typeof s.storage.client.send;
      let result;
      try {
        result = await put();
      } finally {
        s.storage.client.send = send;
      }
      assert.deepEqual(result, { key, bytes: body.length, sha256: want });
      assert.deepEqual(
        sent.filter((c) => c !== 'UploadPartCommand'),
        ['CreateMultipartUploadCommand', 'CompleteMultipartUploadCommand'],
        `${key}: one multipart upload`,
      );
      assert.equal(sent.filter((c) => c === 'UploadPartCommand').length, 9, `${key}: 9 parts of at most 8 MiB`);
      const head = await s.storage.client.send(new HeadObjectCommand({ Bucket: s.bucket, Key: key }));
      assert.equal(head.ContentLength, body.length);
      const back = await s.storage.get(key);
      assert.equal(createHash('sha256').update(back).digest('hex'), want, `${key}: read back byte for byte`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a presigned GET names the file and expires', async () => {
  await s.storage.put('x/small.txt', 'hello');
  const url = await s.storage.presignGet('x/small.txt', 3, 'small.txt');
  const ok = await fetch(url);
  assert.equal(ok.status, 200);
  assert.equal(await ok.text(), 'hello');
  assert.equal(ok.headers.get('content-disposition'), 'attachment; filename="small.txt"');
  await new Promise((r) => setTimeout(r, 4100));
  assert.equal((await fetch(url)).status, 403);
});

test('a presigned PUT uploads', async () => {
  const url = await s.storage.presignPut('x/up.bin', 60);
  const r = await fetch(url, { method: 'PUT', body: new Uint8Array([1, 2, 3]) });
  assert.equal(r.status, 200);
  assert.deepEqual([...(await s.storage.get('x/up.bin'))], [1, 2, 3]);
});

test('missing objects are NotFoundError; listing and deleting by prefix', async () => {
  await assert.rejects(s.storage.get('nope'), NotFoundError);
  assert.equal(await s.storage.head('nope'), null);
  await s.storage.put('y/a', 'a');
  await s.storage.put('y/b', 'b');
  assert.deepEqual((await s.storage.list('y/')).map((o) => o.key), ['y/a', 'y/b']);
  assert.equal(await s.storage.deletePrefix('y/'), 2);
  assert.deepEqual(await s.storage.list('y/'), []);
});
