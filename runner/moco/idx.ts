/**
 * Reads IDX files (the MNIST / Fashion-MNIST format, optionally gzip-compressed) into an
 * InMemoryImageDataset, for local training without the service: a big-endian magic
 * (0x0000, type 0x08 = uint8, rank), the dimensions as big-endian uint32, then the data.
 */
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { InMemoryImageDataset } from './dataset.js';

export function parseIdx(bytes: Uint8Array): { dims: number[]; data: Uint8Array } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4 || view.getUint16(0) !== 0 || bytes[2] !== 0x08) throw new RangeError('not an uint8 IDX file (bad magic)');
  const rank = bytes[3];
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i));
  const start = 4 + 4 * rank;
  const count = dims.reduce((a, b) => a * b, 1);
  if (bytes.length < start + count) throw new RangeError(`IDX file truncated: ${bytes.length - start} of ${count} bytes`);
  return { dims, data: bytes.subarray(start, start + count) };
}

async function readMaybeGzip(path: string): Promise<Uint8Array> {
  const raw = await readFile(path);
  return raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw;
}

/** Images (n×h×w, grayscale) and optional labels (n) IDX files → a dataset. */
export async function loadIdxDataset(imagesPath: string, labelsPath?: string, classNames?: readonly string[]): Promise<InMemoryImageDataset> {
  const images = parseIdx(await readMaybeGzip(imagesPath));
  if (images.dims.length !== 3) throw new RangeError(`${imagesPath}: expected n×h×w images, got dims [${images.dims}]`);
  const [n, h, w] = images.dims;
  let labels = new Int32Array(n).fill(-1);
  let numClasses = 0;
  if (labelsPath) {
    const l = parseIdx(await readMaybeGzip(labelsPath));
    if (l.dims.length !== 1 || l.dims[0] !== n) throw new RangeError(`${labelsPath}: expected ${n} labels, got dims [${l.dims}]`);
    labels = Int32Array.from(l.data);
    numClasses = Math.max(...labels) + 1;
  }
  return new InMemoryImageDataset(images.data, labels, h, w, 1, numClasses, classNames);
}
