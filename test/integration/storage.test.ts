import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
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
