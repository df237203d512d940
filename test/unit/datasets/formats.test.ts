import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allocateShard, decodeShard } from '../../../runner/datasets/shardFormat.js';
import { planSplits } from '../../../runner/datasets/splits.js';
import { sniffContainer } from '../../../runner/datasets/archive/detect.js';
import { buildArchive } from '../../../runner/datasets/archive/write.js';
import { convertUpload } from '../../../runner/datasets/convert.js';
import { DatasetIngestError, generateSyntheticDataset, writeIdxFiles } from '../../../runner/datasets/index.js';
import { datasetVersionOptions } from '../../../contracts/datasetSpec.js';
import { createLogger } from '../../../common/logger.js';

test('a shard round-trips header, labels and pixels; a damaged one is refused', () => {
  const shard = allocateShard({ count: 3, height: 2, width: 2, channels: 3 });
  shard.labels.set([2, -1, 7]);
  for (let i = 0; i < shard.pixels.length; i++) shard.pixels[i] = i;
  const back = decodeShard(new Uint8Array(shard.bytes));
  assert.deepEqual([back.count, back.height, back.width, back.channels], [3, 2, 2, 3]);
  assert.deepEqual([...back.labels], [2, -1, 7]);
  assert.deepEqual([...back.pixels], Array.from({ length: 36 }, (_, i) => i));
  assert.throws(() => decodeShard(shard.bytes.subarray(0, shard.bytes.length - 1)), /header says/);
  const wrongMagic = Buffer.from(shard.bytes);
  wrongMagic[0] = 0x58;
  assert.throws(() => decodeShard(wrongMagic), /not a shard/);
});

test('an unaligned shard buffer still decodes (labels copied)', () => {
  const shard = allocateShard({ count: 2, height: 1, width: 1, channels: 1 });
  shard.labels.set([4, 5]);
  const padded = new Uint8Array(shard.bytes.length + 1);
  padded.set(shard.bytes, 1);
  assert.deepEqual([...decodeShard(padded.subarray(1)).labels], [4, 5]);
});

test('the seeded split is stratified per class and reproducible from its seed', () => {
  const labels = Int32Array.from({ length: 100 }, (_, i) => (i < 60 ? 0 : i < 90 ? 1 : 2));
  const hints = new Uint8Array(100);
  const a = planSplits(labels, hints, 0.1, 7);
  const b = planSplits(labels, hints, 0.1, 7);
  const c = planSplits(labels, hints, 0.1, 8);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.val, c.val);
  const valClasses = [...a.val!].map((i) => labels[i]);
  assert.deepEqual([0, 1, 2].map((k) => valClasses.filter((l) => l === k).length), [6, 3, 1]);
  assert.equal(a.train.length + a.val!.length, 100);
  assert.equal(a.source, 'seeded');
  assert.equal(planSplits(labels, hints, 0, 7).val, undefined);
});

test('a split given by the format wins over the seeded draw', () => {
  const plan = planSplits(new Int32Array(4), Uint8Array.from([1, 2, 1, 2]), 0.5, 0);
  assert.deepEqual([...plan.train], [0, 2]);
  assert.deepEqual([...plan.val!], [1, 3]);
  assert.equal(plan.source, 'format');
});

test('containers are recognised by their bytes, not their names', async () => {
  const files = [{ name: 'a/x.txt', data: Buffer.from('x') }];
  assert.equal(sniffContainer(await buildArchive(files, 'tar')), 'tar');
  assert.equal(sniffContainer(await buildArchive(files, 'tar.gz')), 'gzip');
  assert.equal(sniffContainer(await buildArchive(files, 'zip')), 'zip');
  const idx = await writeIdxFiles(generateSyntheticDataset({ numClasses: 2, perClass: 1, size: 8, channels: 1 }));
  assert.equal(sniffContainer(idx.images), 'idx');
  assert.equal(sniffContainer(Buffer.from('GIF89a')), 'unknown');
  assert.equal(sniffContainer(new Uint8Array(0)), 'unknown');
});

test('a bare IDX image file (no labels beside it) is refused, naming it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ds-unit-'));
  try {
    const idx = await writeIdxFiles(generateSyntheticDataset({ numClasses: 2, perClass: 2, size: 8, channels: 1 }));
    await writeFile(join(dir, 'up'), gzipSync(idx.images));
    const run = convertUpload({ path: join(dir, 'up'), uploadName: 'train-images-idx3-ubyte.gz', options: datasetVersionOptions.parse({ format: 'idx' }), workDir: dir, log: createLogger('silent') });
    await assert.rejects(run, (err: unknown) => err instanceof DatasetIngestError && err.kind === 'count_mismatch' && /^train-images-idx3-ubyte: no labels file/.test(err.message));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a declared format that does not match the archive says what it expected', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ds-unit-'));
  try {
    await writeFile(join(dir, 'up'), await buildArchive([{ name: 'cat/readme.txt', data: Buffer.from('hi') }], 'tar'));
    const run = convertUpload({ path: join(dir, 'up'), uploadName: 'up.tar', options: datasetVersionOptions.parse({ format: 'cifar10' }), workDir: dir, log: createLogger('silent') });
    await assert.rejects(run, /^DatasetIngestError: up\.tar: no CIFAR-10 batches found \(expected data_batch_1\.bin/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('bilinear resize: same size is identity, constant stays constant, center-crop keeps the middle', async () => {
  const { resizeBilinear } = await import('../../../runner/datasets/normalize.js');
  const img = Uint8Array.from({ length: 16 }, (_, i) => i * 10);
  const s4 = { height: 4, width: 4, channels: 1 as const };
  assert.deepEqual(resizeBilinear(img, s4, s4, false), img);
  const flat = new Uint8Array(4 * 4 * 3).fill(77);
  assert.ok(resizeBilinear(flat, { ...s4, channels: 3 }, { height: 7, width: 5, channels: 3 }, false).every((v) => v === 77));
  // 2 rows × 4 cols: left half 0, right half 200 except the middle two columns 100; crop to 2×2 keeps them.
  const wide = Uint8Array.from([0, 100, 100, 200, 0, 100, 100, 200]);
  assert.deepEqual([...resizeBilinear(wide, { height: 2, width: 4, channels: 1 }, { height: 2, width: 2, channels: 1 }, true)], [100, 100, 100, 100]);
});
