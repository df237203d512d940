import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, createTestStorage, type TestDatabase, type TestStorage } from '../../support/services.js';
import { createLogger } from '../../../common/logger.js';
import { fashionMnistIdxArchive, FASHION_MNIST_CLASSES, importFashionMnist, ingestDatasetVersion, openDatasetSplit } from '../../../runner/datasets/index.js';
import { uploadVersion, versionRow } from './fixtures.js';

let pg: TestDatabase;
let s3: TestStorage;
let work: string;
before(async () => {
  [pg, s3] = await Promise.all([createTestDatabase(), createTestStorage()]);
  work = await mkdtemp(join(tmpdir(), 'ds-fm-'));
});
after(async () => {
  await Promise.all([pg.cleanup(), s3.cleanup(), rm(work, { recursive: true, force: true })]);
});

test('all of Fashion-MNIST (70,000 images) ingests end to end from the Debian files and loads back', async () => {
  const v = await uploadVersion(pg.db, s3.storage, await fashionMnistIdxArchive(), { format: 'idx' }, 'fashion-mnist.tar.gz');
  const manifest = await ingestDatasetVersion({ db: pg.db, storage: s3.storage, log: createLogger('silent'), workDir: work }, v.id);
  assert.equal((await versionRow(pg.db, v.id)).state, 'ready');
  assert.deepEqual([manifest.splits.train.count, manifest.splits.val!.count], [60000, 10000]);
  assert.deepEqual(manifest.splits.train.classCounts, new Array(10).fill(6000));
  assert.deepEqual(manifest.splits.val!.classCounts, new Array(10).fill(1000));
  assert.deepEqual(manifest.classes, FASHION_MNIST_CLASSES);
  const val = openDatasetSplit(s3.storage, manifest, 'val', { cacheDir: join(work, 'cache') });
  const reference = (await importFashionMnist()).val;
  const probe = [0, 1, 4999, 9999];
  assert.deepEqual(await val.read(probe), await reference.read(probe));
});
