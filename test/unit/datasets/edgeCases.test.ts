/**
 * Dataset inputs the docs promise to handle (docs/datasets.md): every image format sharp decodes,
 * macOS and hidden files in archives, `channels: 1` from RGB images, truncated CIFAR batches.
 * Read through convertUpload, the same path an ingest job takes, without any service.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { buildArchive, type FileForArchive } from '../../../runner/datasets/archive/write.js';
import { convertUpload, type ConvertedUpload } from '../../../runner/datasets/convert.js';
import { DatasetIngestError } from '../../../runner/datasets/index.js';
import { datasetVersionOptions } from '../../../contracts/datasetSpec.js';
import { createLogger } from '../../../common/logger.js';

let dir: string;
before(async () => (dir = await mkdtemp(join(tmpdir(), 'ds-edge-'))));
after(async () => rm(dir, { recursive: true, force: true }));

let uploads = 0;
async function convert(files: FileForArchive[], options: Record<string, unknown>, name = 'up.tar'): Promise<ConvertedUpload> {
  const path = join(dir, `upload-${++uploads}`);
  await writeFile(path, await buildArchive(files, 'tar'));
  return convertUpload({ path, uploadName: name, options: datasetVersionOptions.parse(options), workDir: await mkdtemp(join(dir, 'w-')), log: createLogger('silent') });
}

/** An 8×8 image of one colour in the given format. */
function image(format: 'png' | 'jpeg' | 'webp' | 'gif' | 'tiff' | 'avif', rgb: [number, number, number], lossless = true): Promise<Buffer> {
  const base = sharp({ create: { width: 8, height: 8, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
  switch (format) {
    case 'png':
      return base.png().toBuffer();
    case 'jpeg':
      return base.jpeg({ quality: 100 }).toBuffer();
    case 'webp':
      return base.webp({ lossless }).toBuffer();
    case 'gif':
      return base.gif().toBuffer();
    case 'tiff':
      return base.tiff().toBuffer();
    case 'avif':
      return base.avif({ lossless }).toBuffer();
  }
}

async function pixelsOf(converted: ConvertedUpload): Promise<Uint8Array[]> {
  const { height, width, channels } = converted.shape;
  const size = height * width * channels;
  const out = new Uint8Array(size * converted.staging.count);
  await converted.staging.readInto(Array.from({ length: converted.staging.count }, (_, i) => i), out);
  return Array.from({ length: converted.staging.count }, (_, i) => out.subarray(i * size, (i + 1) * size));
}

test('JPEG, WebP, GIF, TIFF and AVIF images are read like PNG, each under its class', async () => {
  const formats = ['png', 'jpeg', 'webp', 'gif', 'tiff', 'avif'] as const;
  const files: FileForArchive[] = [];
  for (const f of formats) {
    files.push({ name: `red/a.${f}`, data: await image(f, [220, 20, 20]) });
    files.push({ name: `blue/a.${f}`, data: await image(f, [20, 20, 220]) });
  }
  const converted = await convert(files, { format: 'imagefolder', valFraction: 0 });
  try {
    assert.deepEqual(converted.classes, ['blue', 'red']);
    assert.deepEqual(converted.shape, { height: 8, width: 8, channels: 3 });
    assert.equal(converted.staging.count, 12);
    const pixels = await pixelsOf(converted);
    for (let i = 0; i < pixels.length; i++) {
      const red = converted.classes[converted.staging.labels[i]!] === 'red';
      // The first pixel of each image is its colour (lossy formats within a small error).
      const [r, , b] = pixels[i]!;
      assert.ok(red ? r! > 180 && b! < 60 : b! > 180 && r! < 60, `image ${i}: ${[...pixels[i]!.subarray(0, 3)]}`);
    }
  } finally {
    await converted.staging.dispose();
  }
});

test('__MACOSX folders, dot files and Thumbs.db are skipped, not read as images or classes', async () => {
  const png = await image('png', [10, 200, 10]);
  const converted = await convert(
    [
      { name: 'cat/1.png', data: png },
      { name: 'dog/1.png', data: png },
      { name: '__MACOSX/cat/1.png', data: png },
      { name: 'cat/._1.png', data: Buffer.from('AppleDouble') },
      { name: 'dog/.DS_Store', data: Buffer.from('finder') },
      { name: '.hidden/1.png', data: png },
      { name: 'dog/Thumbs.db', data: Buffer.from('windows') },
    ],
    { format: 'imagefolder', valFraction: 0 },
  );
  try {
    assert.deepEqual(converted.classes, ['cat', 'dog']);
    assert.equal(converted.staging.count, 2);
  } finally {
    await converted.staging.dispose();
  }
});

test('channels: 1 turns RGB images into grayscale (luma), one channel stored', async () => {
  const converted = await convert(
    [
      { name: 'a/red.png', data: await image('png', [255, 0, 0]) },
      { name: 'b/green.png', data: await image('png', [0, 255, 0]) },
    ],
    { format: 'imagefolder', valFraction: 0, channels: 1 },
  );
  try {
    assert.deepEqual(converted.shape, { height: 8, width: 8, channels: 1 });
    const byClass = new Map((await pixelsOf(converted)).map((p, i) => [converted.classes[converted.staging.labels[i]!], p]));
    // Image files go through libvips' grayscale: Rec. 709 luminance in linear light, re-encoded as
    // sRGB (pure red 0.2126 → 127, pure green 0.7152 → 220). Not a channel picked out of the three.
    assert.ok(Math.abs(byClass.get('a')![0]! - 127) <= 2, `red → ${byClass.get('a')![0]}`);
    assert.ok(Math.abs(byClass.get('b')![0]! - 220) <= 2, `green → ${byClass.get('b')![0]}`);
    assert.ok(byClass.get('a')!.every((v) => v === byClass.get('a')![0]), 'a flat image stays flat');
  } finally {
    await converted.staging.dispose();
  }
});

test('a truncated CIFAR-10 batch is refused, naming the file and the record size', async () => {
  const record = 1 + 32 * 32 * 3;
  const whole = Buffer.alloc(record * 2, 7);
  const run = convert(
    [
      { name: 'cifar-10-batches-bin/data_batch_1.bin', data: whole.subarray(0, record + 100) },
      { name: 'cifar-10-batches-bin/batches.meta.txt', data: Buffer.from(Array.from({ length: 10 }, (_, i) => `c${i}`).join('\n')) },
    ],
    { format: 'cifar10' },
    'cifar.tar',
  );
  await assert.rejects(run, (err: unknown) => err instanceof DatasetIngestError && /data_batch_1\.bin/.test(err.message) && /3073-byte CIFAR-10 records \(truncated/.test(err.message));
});
