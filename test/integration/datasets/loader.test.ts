import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, createTestStorage, type TestDatabase, type TestStorage } from '../../support/services.js';
import { createLogger } from '../../../common/logger.js';
import { ingestDatasetVersion, openDatasetSplit, ShardChecksumError, generateSyntheticDataset, writeIdxArchive } from '../../../runner/datasets/index.js';
import type { DatasetManifest } from '../../../contracts/datasetSpec.js';
import { uploadVersion } from './fixtures.js';

let pg: TestDatabase;
let s3: TestStorage;
let work: string;
let manifest: DatasetManifest;
const gray = generateSyntheticDataset({ numClasses: 3, perClass: 10, size: 8, channels: 1, seed: 5 });
const trainIdx = Array.from({ length: 24 }, (_, i) => i);

before(async () => {
  [pg, s3] = await Promise.all([createTestDatabase(), createTestStorage()]);
  work = await mkdtemp(join(tmpdir(), 'ds-loader-'));
  const body = await writeIdxArchive({ train: gray.subset(trainIdx), val: gray.subset([24, 25, 26, 27, 28, 29]) });
  const v = await uploadVersion(pg.db, s3.storage, body, { format: 'idx' });
  // 5 examples of 64 bytes (+4 label bytes) per shard: 24 train examples make 5 shards.
  manifest = await ingestDatasetVersion({ db: pg.db, storage: s3.storage, log: createLogger('silent'), shardBytes: 5 * 68 }, v.id);
});
after(async () => {
  await Promise.all([pg.cleanup(), s3.cleanup(), rm(work, { recursive: true, force: true })]);
});

test('read(indices) returns exactly the ingested pixels and labels, in the order asked, across shards', async () => {
  assert.equal(manifest.splits.train.shards.length, 5);
  const ds = openDatasetSplit(s3.storage, manifest, 'train', { cacheDir: join(work, 'a') });
  assert.equal(ds.size, 24);
  const order = [23, 0, 7, 7, 12, 5, 19, 1];
  const got = await ds.read(order);
  const want = await gray.read(order);
  assert.deepEqual(got.labels, want.labels);
  assert.deepEqual(got.pixels, want.pixels);
  await assert.rejects(ds.read([24]), RangeError);
});

test('a second open is served from the cache, named by sha256; a fresh cache downloads', async () => {
  const cacheDir = join(work, 'b');
  const first = openDatasetSplit(s3.storage, manifest, 'train', { cacheDir });
  await first.ready();
  assert.equal(first.stats.downloads, 5);
  assert.equal(first.stats.cacheHits, 0);
  const files = (await readdir(cacheDir)).sort();
  assert.deepEqual(files, manifest.splits.train.shards.map((s) => `${s.sha256}.shard`).sort(), 'only whole, renamed files');
  const second = openDatasetSplit(s3.storage, manifest, 'train', { cacheDir });
  const all = Array.from({ length: 24 }, (_, i) => i);
  assert.deepEqual(await second.read(all), await first.read(all));
  assert.equal(second.stats.cacheHits, 5);
  assert.equal(second.stats.downloads, 0);
});

test('a shard whose bytes do not match the manifest sha256 is refused', async () => {
  const shard = manifest.splits.val!.shards[0];
  const original = await s3.storage.get(shard.key);
  const tampered = Buffer.from(original);
  tampered[tampered.length - 1] ^= 0xff;
  await s3.storage.put(shard.key, tampered);
  try {
    const ds = openDatasetSplit(s3.storage, manifest, 'val', { cacheDir: join(work, 'c') });
    await assert.rejects(ds.read([0]), (err: unknown) => err instanceof ShardChecksumError && /sha256 .* the manifest says/.test(err.message));
    // Other shards of the split may be cached by the background prefetch; the refused one never is.
    const cached = await readdir(join(work, 'c')).catch(() => [] as string[]);
    assert.ok(!cached.some((f) => f.startsWith(shard.sha256)), `the corrupt shard is not cached: ${cached}`);
  } finally {
    await s3.storage.put(shard.key, original);
  }
});

test('a damaged cache file is detected and fetched again', async () => {
  const cacheDir = join(work, 'd');
  const ds = openDatasetSplit(s3.storage, manifest, 'val', { cacheDir });
  await ds.ready();
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(cacheDir, `${manifest.splits.val!.shards[0].sha256}.shard`), 'garbage');
  const again = openDatasetSplit(s3.storage, manifest, 'val', { cacheDir });
  assert.deepEqual(await again.read([0, 5]), await gray.read([24, 29]));
  assert.equal(again.stats.downloads, 1);
});
