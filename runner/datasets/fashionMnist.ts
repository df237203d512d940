/**
 * Fashion-MNIST from Debian's package files (`/usr/share/datasets/fashion-mnist/*.gz`): straight
 * into memory for the trainer, or as an IDX tar.gz that uploads through the API like any user's.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { InMemoryImageDataset } from '../moco/dataset.js';
import { buildArchive, type FileForArchive } from './archive/write.js';
import { idxHeaderOf } from './archive/detect.js';
import { CLASS_NAMES_FILE } from './formats/idx.js';
import { writeIdxArchive } from './writers.js';

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
const FILES = {
  train: ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'],
  val: ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'],
} as const;

export interface FashionMnistLimit {
  /** Keep only the first n training (of 60,000) / validation (of 10,000) images. */
  train?: number;
  val?: number;
}

/**
 * Train (60,000) and val (10,000, the t10k files) as 28×28 grayscale in-memory datasets.
 * @example const { train, val } = await importFashionMnist(); // or importFashionMnist(dir, { train: 6000, val: 1000 })
 */
export async function importFashionMnist(
  dir: string = FASHION_MNIST_DIR,
  limit: FashionMnistLimit = {},
): Promise<{ train: InMemoryImageDataset; val: InMemoryImageDataset }> {
  return {
    train: await readIdxPair(dir, FILES.train, limit.train),
    val: await readIdxPair(dir, FILES.val, limit.val),
  };
}

/**
 * The Fashion-MNIST IDX files as one tar.gz to upload with `format: "idx"` (train/t10k split given
 * by the files, class names in classes.txt). Without a limit the original .gz files are repacked
 * untouched (about 30 MB); with one, the subsets are written anew.
 */
export async function fashionMnistIdxArchive(dir: string = FASHION_MNIST_DIR, limit: FashionMnistLimit = {}): Promise<Buffer> {
  if (limit.train === undefined && limit.val === undefined) {
    const names: string[] = [...FILES.train, ...FILES.val];
    const files: FileForArchive[] = await Promise.all(names.map(async (name) => ({ name, data: await readFile(join(dir, name)) })));
    files.push({ name: CLASS_NAMES_FILE, data: Buffer.from(FASHION_MNIST_CLASSES.join('\n') + '\n') });
    return buildArchive(files, 'tar.gz');
  }
  return writeIdxArchive(await importFashionMnist(dir, limit), { container: 'tar.gz' });
}

async function readIdxPair(dir: string, [imagesFile, labelsFile]: readonly [string, string], limit?: number): Promise<InMemoryImageDataset> {
  const images = gunzipSync(await readFile(join(dir, imagesFile)));
  const labels = gunzipSync(await readFile(join(dir, labelsFile)));
  const ih = idxHeaderOf(images);
  const lh = idxHeaderOf(labels);
  if (!ih || ih.dims.length !== 3) throw new Error(`${join(dir, imagesFile)} is not an IDX image file`);
  if (!lh || lh.dims.length !== 1) throw new Error(`${join(dir, labelsFile)} is not an IDX label file`);
  if (ih.dims[0] !== lh.dims[0]) throw new Error(`${imagesFile} holds ${ih.dims[0]} images, ${labelsFile} ${lh.dims[0]} labels`);
  const [count0, h, w] = ih.dims;
  const count = Math.min(count0, limit ?? count0);
  const pixels = new Uint8Array(images.subarray(ih.headerBytes, ih.headerBytes + count * h * w));
  const labelArray = Int32Array.from(labels.subarray(lh.headerBytes, lh.headerBytes + count));
  return new InMemoryImageDataset(pixels, labelArray, h, w, 1, 10, FASHION_MNIST_CLASSES);
}
