import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { createTestDatabase, createTestStorage, type TestDatabase, type TestStorage } from '../../support/services.js';
import { createLogger } from '../../../common/logger.js';
import { ingestDatasetVersion, DatasetIngestError, openDatasetSplit } from '../../../runner/datasets/index.js';
import { generateSyntheticDataset, writeImageFolderArchive, writeIdxArchive, writeCifarArchive, encodeImage, readAll } from '../../../runner/datasets/index.js';
import { buildArchive } from '../../../runner/datasets/archive/write.js';
import type { InMemoryImageDataset } from '../../../runner/moco/dataset.js';
import { outputsOf, uploadVersion, versionRow } from './fixtures.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let pg: TestDatabase;
let s3: TestStorage;
let cacheDir: string;
/** Every split a test opened: opening starts fetching shards into cacheDir in the background. */
const opened: ReturnType<typeof openDatasetSplit>[] = [];
const log = createLogger('silent');
before(async () => {
  [pg, s3] = await Promise.all([createTestDatabase(), createTestStorage()]);
  cacheDir = await mkdtemp(join(tmpdir(), 'ds-ingest-cache-'));
});
after(async () => {
  // A test that read only part of a split (or none) leaves fetches running: let them settle before
  // their bucket and cache folder go (removing the folder under a write fails with ENOTEMPTY).
  await Promise.allSettled(opened.map((split) => split.ready()));
  await Promise.all([pg.cleanup(), s3.cleanup(), rm(cacheDir, { recursive: true, force: true })]);
});

const ctx = () => ({ db: pg.db, storage: s3.storage, log, shardBytes: 600 });
const rgb = generateSyntheticDataset({ numClasses: 3, perClass: 5, size: 8, channels: 3, seed: 1 });
const gray = generateSyntheticDataset({ numClasses: 3, perClass: 5, size: 8, channels: 1, seed: 2 });

/** Every example of both splits as "label:pixels" strings, to compare datasets as multisets. */
async function examplesOf(ds: { size: number; height: number; width: number; channels: number; read: InMemoryImageDataset['read'] }[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of ds) {
    const { pixels, labels } = await d.read(Int32Array.from({ length: d.size }, (_, i) => i));
    const per = d.height * d.width * d.channels;
    for (let i = 0; i < d.size; i++) out.push(`${labels[i]}:${Buffer.from(pixels.subarray(i * per, (i + 1) * per)).toString('hex')}`);
  }
  return out.sort();
}

async function ingestOk(body: Uint8Array, options: Record<string, unknown>) {
  const v = await uploadVersion(pg.db, s3.storage, body, options);
  const manifest = await ingestDatasetVersion(ctx(), v.id);
  const row = await versionRow(pg.db, v.id);
  assert.equal(row.state, 'ready');
  assert.deepEqual(row.manifest, manifest);
  assert.deepEqual(JSON.parse((await s3.storage.get(row.manifestKey!)).toString()), manifest);
  const train = openDatasetSplit(s3.storage, manifest, 'train', { cacheDir });
  const val = manifest.splits.val ? openDatasetSplit(s3.storage, manifest, 'val', { cacheDir }) : undefined;
  opened.push(train, ...(val ? [val] : []));
  return { v, manifest, train, val, splits: val ? [train, val] : [train] };
}

for (const container of ['tar', 'tar.gz', 'zip'] as const) {
  test(`ImageFolder as ${container}: every image arrives with its class, stratified seeded split, several shards`, async () => {
    const { manifest, splits } = await ingestOk(await writeImageFolderArchive(rgb, { container }), { format: 'imagefolder', valFraction: 0.2, seed: 3 });
    assert.deepEqual([manifest.height, manifest.width, manifest.channels], [8, 8, 3]);
    assert.deepEqual(manifest.classes, rgb.classNames);
    assert.equal(manifest.splitSource, 'seeded');
    assert.deepEqual(manifest.splits.train.classCounts, [4, 4, 4]);
    assert.deepEqual(manifest.splits.val!.classCounts, [1, 1, 1]);
    assert.ok(manifest.splits.train.shards.length > 1, 'small shardBytes gives several shards');
    assert.deepEqual(await examplesOf(splits), await examplesOf([rgb]));
  });
}

test('ImageFolder with train/ and val/ folders keeps that split', async () => {
  const valIdx = [0, 1, 2];
  const trainIdx = Array.from({ length: 12 }, (_, i) => i + 3);
  const body = await writeImageFolderArchive({ train: rgb.subset(trainIdx), val: rgb.subset(valIdx) }, { container: 'tar.gz' });
  const { manifest, train, val } = await ingestOk(body, { format: 'imagefolder' });
  assert.equal(manifest.splitSource, 'format');
  assert.deepEqual(await examplesOf([train]), await examplesOf([rgb.subset(trainIdx)]));
  assert.deepEqual(await examplesOf([val!]), await examplesOf([rgb.subset(valIdx)]));
});

test('IDX gzipped in a tar.gz: train/t10k split, class names from classes.txt', async () => {
  const trainIdx = Array.from({ length: 9 }, (_, i) => i);
  const valIdx = [9, 10, 11, 12, 13, 14];
  const { manifest, train, val } = await ingestOk(await writeIdxArchive({ train: gray.subset(trainIdx), val: gray.subset(valIdx) }), { format: 'idx' });
  assert.equal(manifest.splitSource, 'format');
  assert.deepEqual(manifest.classes, gray.classNames);
  assert.equal(manifest.channels, 1);
  assert.deepEqual(await examplesOf([train]), await examplesOf([gray.subset(trainIdx)]));
  assert.deepEqual(await examplesOf([val!]), await examplesOf([gray.subset(valIdx)]));
});

test('IDX raw (not gzipped) in a zip, train only: seeded split, resized to the declared size', async () => {
  const body = await writeIdxArchive({ train: gray }, { container: 'zip', gzipFiles: false });
  const { manifest, splits } = await ingestOk(body, { format: 'idx', valFraction: 0.2, imageSize: 12, resize: 'stretch', channels: 3 });
  assert.deepEqual([manifest.height, manifest.width, manifest.channels], [12, 12, 3]);
  assert.equal(manifest.splitSource, 'seeded');
  assert.equal(manifest.splits.train.count + manifest.splits.val!.count, 15);
  const { pixels } = await splits[0].read([0]);
  assert.equal(pixels.length, 12 * 12 * 3);
  assert.ok(pixels[0] === pixels[1] && pixels[1] === pixels[2], 'grayscale replicated into RGB');
});

test('CIFAR-10 binary batches: planar records become HWC, test_batch validates', async () => {
  const c10 = generateSyntheticDataset({ numClasses: 10, perClass: 2, size: 32, channels: 3, seed: 4 });
  const trainIdx = Array.from({ length: 10 }, (_, i) => i);
  const valIdx = Array.from({ length: 10 }, (_, i) => i + 10);
  const body = await writeCifarArchive({ train: c10.subset(trainIdx), val: c10.subset(valIdx) });
  const { manifest, train, val } = await ingestOk(body, { format: 'cifar10' });
  assert.deepEqual(manifest.classes, c10.classNames);
  assert.deepEqual(manifest.splits.train.classCounts, new Array(10).fill(1));
  assert.deepEqual(await examplesOf([train]), await examplesOf([c10.subset(trainIdx)]));
  assert.deepEqual(await examplesOf([val!]), await examplesOf([c10.subset(valIdx)]));
});

test('CIFAR-100 binary files: fine labels, train.bin trains and test.bin validates', async () => {
  const c100 = generateSyntheticDataset({ numClasses: 100, perClass: 2, size: 32, channels: 3, seed: 5 });
  // One image of every class trains, the other validates (an absent class would be refused).
  const seen = new Set<number>();
  const trainIdx: number[] = [];
  const valIdx: number[] = [];
  c100.labels.forEach((label, i) => (seen.has(label) ? valIdx : (seen.add(label), trainIdx)).push(i));
  const body = await writeCifarArchive({ train: c100.subset(trainIdx), val: c100.subset(valIdx) }, { variant: 100, container: 'tar.gz' });
  const { manifest, train, val } = await ingestOk(body, { format: 'cifar100' });
  assert.equal(manifest.classes.length, 100);
  assert.deepEqual(manifest.splits.train.classCounts, new Array(100).fill(1));
  assert.equal(manifest.splits.val?.count, 100);
  assert.deepEqual(await examplesOf([train]), await examplesOf([c100.subset(trainIdx)]));
  assert.deepEqual(await examplesOf([val!]), await examplesOf([c100.subset(valIdx)]));
});

test('unlabeled folder: images anywhere, labels -1, no classes', async () => {
  const { manifest, splits } = await ingestOk(await writeImageFolderArchive(rgb, { container: 'zip', unlabeled: true }), { format: 'unlabeled' });
  assert.deepEqual(manifest.classes, []);
  assert.deepEqual(manifest.splits.train.classCounts, []);
  const all = await examplesOf(splits);
  assert.equal(all.length, 15);
  assert.ok(all.every((e) => e.startsWith('-1:')));
  const { pixels } = await readAll(rgb);
  const expected = Array.from({ length: 15 }, (_, i) => `-1:${Buffer.from(pixels.subarray(i * 192, (i + 1) * 192)).toString('hex')}`).sort();
  assert.deepEqual(all, expected);
});

// --- Refusals: each names the file and what is wrong, and leaves nothing registered --------------

async function ingestRefused(body: Uint8Array, options: Record<string, unknown>, expected: { kind: string; message: RegExp }, fileName?: string) {
  const v = await uploadVersion(pg.db, s3.storage, body, options, fileName);
  // What an interrupted earlier attempt left behind must go too.
  await s3.storage.put(`${v.prefix}shards/train-00000.bin`, 'leftover of an interrupted attempt');
  await assert.rejects(ingestDatasetVersion(ctx(), v.id), (err: unknown) => {
    assert.ok(err instanceof DatasetIngestError, `a DatasetIngestError, got ${String(err)}`);
    assert.equal(err.kind, expected.kind);
    assert.match(err.message, expected.message);
    return true;
  });
  const row = await versionRow(pg.db, v.id);
  assert.equal(row.state, 'failed');
  assert.match(row.error!, expected.message);
  assert.equal(row.manifest, null);
  assert.equal(row.manifestKey, null);
  assert.deepEqual(await outputsOf(s3.storage, v.prefix), [], 'no shards or manifest left in S3');
}

const png = (ds: InMemoryImageDataset, i: number) =>
  readAll(ds).then(({ pixels }) => {
    const per = ds.height * ds.width * ds.channels;
    return encodeImage(pixels.subarray(i * per, (i + 1) * per), ds.height, ds.width, ds.channels);
  });

test('a corrupt archive (truncated tar.gz) is refused', async () => {
  const good = await writeImageFolderArchive(rgb, { container: 'tar.gz' });
  await ingestRefused(good.subarray(0, Math.floor(good.length / 2)), { format: 'imagefolder' }, { kind: 'corrupt_archive', message: /^upload\.tgz: tar\.gz archive is corrupt/ }, 'upload.tgz');
});

test('a corrupt zip (no central directory) is refused', async () => {
  const good = await writeImageFolderArchive(rgb, { container: 'zip' });
  await ingestRefused(good.subarray(0, good.length - 30), { format: 'imagefolder' }, { kind: 'corrupt_archive', message: /zip archive is corrupt/ });
});

test('an undecodable image is refused, naming it', async () => {
  const files = [];
  for (let i = 0; i < 6; i++) files.push({ name: `${rgb.classNames![i % 3]}/${i}.png`, data: await png(rgb, i) });
  files.push({ name: 'square-1/broken.png', data: Buffer.from('this is not a png at all') });
  await ingestRefused(await buildArchive(files, 'tar'), { format: 'imagefolder' }, { kind: 'undecodable_image', message: /^square-1\/broken\.png: undecodable image/ });
});

test('an empty class folder is refused', async () => {
  const files = [];
  for (let i = 0; i < 6; i++) files.push({ name: `${rgb.classNames![i % 2]}/${i}.png`, data: await png(rgb, i) });
  await ingestRefused(await buildArchive(files, 'tar', ['disc-0', 'square-1', 'zebra']), { format: 'imagefolder' }, { kind: 'empty_class', message: /^zebra\/: empty class "zebra"/ });
});

test('mixed sizes without a resize policy are refused, naming the odd image', async () => {
  const big = generateSyntheticDataset({ numClasses: 1, perClass: 1, size: 10, channels: 3 });
  const files = [];
  for (let i = 0; i < 4; i++) files.push({ name: `${rgb.classNames![i % 2]}/${i}.png`, data: await png(rgb, i) });
  files.push({ name: 'disc-0/big.png', data: await png(big, 0) });
  await ingestRefused(await buildArchive(files, 'zip'), { format: 'imagefolder' }, { kind: 'mixed_sizes', message: /^disc-0\/big\.png: image is 10x10 but earlier images \(disc-0\/0\.png\) are 8x8; set resize/ });
});

test('with a resize policy the same mixed sizes ingest', async () => {
  const big = generateSyntheticDataset({ numClasses: 1, perClass: 1, size: 10, channels: 3 });
  const files = [];
  for (let i = 0; i < 4; i++) files.push({ name: `${rgb.classNames![i % 2]}/${i}.png`, data: await png(rgb, i) });
  files.push({ name: 'disc-0/big.png', data: await png(big, 0) });
  const { manifest } = await ingestOk(await buildArchive(files, 'zip'), { format: 'imagefolder', resize: 'center-crop', valFraction: 0 });
  assert.equal(manifest.splits.train.count, 5);
  assert.equal(manifest.splits.val, undefined);
});

test('an RGB image among grayscale ones is refused unless channels are declared', async () => {
  const files = [
    { name: 'a/0.png', data: await png(gray, 0) },
    { name: 'a/1.png', data: await png(gray, 1) },
    { name: 'b/2.png', data: await png(rgb, 2) },
  ];
  await ingestRefused(await buildArchive(files, 'tar'), { format: 'imagefolder' }, { kind: 'channel_mismatch', message: /^b\/2\.png: image is RGB but earlier images \(a\/0\.png\) are grayscale/ });
});

test('an unknown format is refused with the bytes it starts with', async () => {
  await ingestRefused(Buffer.from('%PDF-1.7 definitely not an archive'), { format: 'imagefolder' }, { kind: 'unknown_format', message: /^report\.pdf: unknown format: not a tar, tar\.gz or zip archive \(first bytes 25 50 44 46/ }, 'report.pdf');
});

test('IDX labels and images that disagree in count are refused', async () => {
  const idx = await writeIdxArchive({ train: gray }, { gzipFiles: false, container: 'tar' });
  const short = await writeIdxArchive({ train: gray.subset([0, 1, 2, 3]) }, { gzipFiles: false, container: 'tar' });
  // Rebuild: the images of the full set with the labels of the short one.
  const { extract } = await import('tar-stream');
  const read = async (b: Buffer) => {
    const out: Record<string, Buffer> = {};
    const ex = extract();
    ex.end(b);
    for await (const e of ex) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      out[e.header.name] = Buffer.concat(chunks);
    }
    return out;
  };
  const full = await read(idx);
  const part = await read(short);
  const body = await buildArchive(
    [
      { name: 'train-images-idx3-ubyte', data: full['train-images-idx3-ubyte'] },
      { name: 'train-labels-idx1-ubyte.gz', data: gzipSync(part['train-labels-idx1-ubyte']) },
    ],
    'tar',
  );
  await ingestRefused(body, { format: 'idx' }, { kind: 'count_mismatch', message: /^train-labels-idx1-ubyte\.gz: holds 4 labels but train-images-idx3-ubyte holds 15 images/ });
});

test('a version already ready is returned unchanged; nothing is re-ingested', async () => {
  const { v, manifest } = await ingestOk(await writeImageFolderArchive(rgb, { container: 'tar' }), { format: 'imagefolder' });
  const before = (await s3.storage.list(v.prefix)).map((o) => o.key);
  assert.deepEqual(await ingestDatasetVersion(ctx(), v.id), manifest);
  assert.deepEqual((await s3.storage.list(v.prefix)).map((o) => o.key), before);
});
