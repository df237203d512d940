/**
 * Packs in-memory datasets into the upload formats Momentum accepts: ImageFolder (PNG or JPEG in
 * tar, tar.gz or zip), unlabeled folders, IDX and CIFAR binary batches. For tests, the demo and the
 * quickstart; the output ingests back to the same pixels (PNG is lossless).
 */
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import type { ImageDataset } from '../moco/dataset.js';
import { buildArchive, type ArchiveContainer, type FileForArchive } from './archive/write.js';
import { CLASS_NAMES_FILE } from './formats/idx.js';

export interface SplitDatasets {
  train: ImageDataset;
  val?: ImageDataset;
}

/** Every example of a dataset, in order. */
export async function readAll(ds: ImageDataset): Promise<{ pixels: Uint8Array; labels: Int32Array }> {
  return ds.read(Int32Array.from({ length: ds.size }, (_, i) => i));
}

export async function encodeImage(pixels: Uint8Array, height: number, width: number, channels: 1 | 3, format: 'png' | 'jpeg' = 'png'): Promise<Buffer> {
  // Without b-w, sharp writes one-channel input as an RGB file.
  let img = sharp(pixels, { raw: { width, height, channels } });
  if (channels === 1) img = img.toColourspace('b-w');
  return format === 'png' ? img.png({ compressionLevel: 6 }).toBuffer() : img.jpeg({ quality: 95 }).toBuffer();
}

/**
 * ImageFolder: `class/00001.png` (or `train/class/…` and `val/class/…` when given both splits).
 * With `unlabeled`, images go to `images/00001.png` and labels are dropped.
 */
export async function writeImageFolderArchive(
  data: ImageDataset | SplitDatasets,
  options: { container?: ArchiveContainer; imageFormat?: 'png' | 'jpeg'; unlabeled?: boolean } = {},
): Promise<Buffer> {
  const splits: [string, ImageDataset][] = 'train' in data
    ? [['train', data.train], ...(data.val ? ([['val', data.val]] as [string, ImageDataset][]) : [])]
    : [['', data]];
  const ext = options.imageFormat === 'jpeg' ? 'jpg' : 'png';
  const files: FileForArchive[] = [];
  for (const [split, ds] of splits) {
    const { pixels, labels } = await readAll(ds);
    const per = ds.height * ds.width * ds.channels;
    const encoded = await Promise.all(
      Array.from({ length: ds.size }, (_, i) => encodeImage(pixels.subarray(i * per, (i + 1) * per), ds.height, ds.width, ds.channels, options.imageFormat)),
    );
    for (let i = 0; i < ds.size; i++) {
      const folder = options.unlabeled ? 'images' : (ds.classNames?.[labels[i]] ?? String(labels[i]));
      const name = `${String(i).padStart(5, '0')}.${ext}`;
      files.push({ name: [split, folder, name].filter(Boolean).join('/'), data: encoded[i] });
    }
  }
  return buildArchive(files, options.container ?? 'tar.gz');
}

/** One dataset as IDX: images (count × h × w, grayscale) and labels (count). */
export async function writeIdxFiles(ds: ImageDataset): Promise<{ images: Buffer; labels: Buffer }> {
  if (ds.channels !== 1) throw new Error('IDX holds grayscale images only');
  const { pixels, labels } = await readAll(ds);
  const images = Buffer.alloc(16 + pixels.length);
  images.writeUInt32BE(0x00000803, 0);
  images.writeUInt32BE(ds.size, 4);
  images.writeUInt32BE(ds.height, 8);
  images.writeUInt32BE(ds.width, 12);
  images.set(pixels, 16);
  const labelBytes = Buffer.alloc(8 + labels.length);
  labelBytes.writeUInt32BE(0x00000801, 0);
  labelBytes.writeUInt32BE(ds.size, 4);
  for (let i = 0; i < labels.length; i++) labelBytes[8 + i] = labels[i];
  return { images, labels: labelBytes };
}

/** The MNIST layout: train-/t10k- images and labels, gzipped (default) or raw, plus classes.txt. */
export async function writeIdxArchive(
  data: SplitDatasets,
  options: { container?: ArchiveContainer; gzipFiles?: boolean; classNames?: boolean } = {},
): Promise<Buffer> {
  const gz = options.gzipFiles ?? true;
  const files: FileForArchive[] = [];
  for (const [prefix, ds] of [['train', data.train], ['t10k', data.val]] as const) {
    if (!ds) continue;
    const idx = await writeIdxFiles(ds);
    files.push({ name: `${prefix}-images-idx3-ubyte${gz ? '.gz' : ''}`, data: gz ? gzipSync(idx.images) : idx.images });
    files.push({ name: `${prefix}-labels-idx1-ubyte${gz ? '.gz' : ''}`, data: gz ? gzipSync(idx.labels) : idx.labels });
  }
  if ((options.classNames ?? true) && data.train.classNames) {
    files.push({ name: CLASS_NAMES_FILE, data: Buffer.from(data.train.classNames.join('\n') + '\n') });
  }
  return buildArchive(files, options.container ?? 'tar.gz');
}

/**
 * CIFAR binary batches in `cifar-10-batches-bin/` (data_batch_1.bin, test_batch.bin,
 * batches.meta.txt) or `cifar-100-binary/` (train.bin, test.bin, fine_label_names.txt). Images must
 * be 32×32 RGB; CIFAR-100's coarse label is written as 0.
 */
export async function writeCifarArchive(data: SplitDatasets, options: { variant?: 10 | 100; container?: ArchiveContainer } = {}): Promise<Buffer> {
  const variant = options.variant ?? 10;
  const dir = variant === 10 ? 'cifar-10-batches-bin' : 'cifar-100-binary';
  const files: FileForArchive[] = [];
  const names = variant === 10 ? ['data_batch_1.bin', 'test_batch.bin'] : ['train.bin', 'test.bin'];
  for (const [name, ds] of [[names[0], data.train], [names[1], data.val]] as const) {
    if (ds) files.push({ name: `${dir}/${name}`, data: await cifarBatch(ds, variant) });
  }
  const classNames = data.train.classNames ?? [];
  const fullNames = Array.from({ length: variant }, (_, k) => classNames[k] ?? `class-${k}`);
  files.push({ name: `${dir}/${variant === 10 ? 'batches.meta.txt' : 'fine_label_names.txt'}`, data: Buffer.from(fullNames.join('\n') + '\n') });
  return buildArchive(files, options.container ?? 'tar.gz');
}

async function cifarBatch(ds: ImageDataset, variant: 10 | 100): Promise<Buffer> {
  if (ds.height !== 32 || ds.width !== 32 || ds.channels !== 3) throw new Error('CIFAR batches hold 32×32 RGB images');
  const labelBytes = variant === 10 ? 1 : 2;
  const record = labelBytes + 3072;
  const { pixels, labels } = await readAll(ds);
  const out = Buffer.alloc(ds.size * record);
  for (let i = 0; i < ds.size; i++) {
    const r = i * record;
    out[r + labelBytes - 1] = labels[i];
    for (let p = 0; p < 1024; p++) {
      for (let ch = 0; ch < 3; ch++) out[r + labelBytes + ch * 1024 + p] = pixels[i * 3072 + p * 3 + ch];
    }
  }
  return out;
}
