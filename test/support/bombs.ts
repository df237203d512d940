/**
 * Hostile uploads, built in memory and small on disk: archives that lie about their sizes, inflate a
 * thousandfold, claim huge images, hold too many files, or carry control bytes in names. Each comes
 * with the limits it is meant to hit (small ones where a realistic bomb would take long to build)
 * and the message its refusal must carry. Used by the datasets bomb test and bench/bombs.ts.
 */
import { createGzip, deflateRawSync } from 'node:zlib';
import { crc32 } from 'node:zlib';
import { buildTar } from '../../runner/datasets/archive/write.js';
import { encodeImage } from '../../runner/datasets/index.js';
import type { IngestLimits } from '../../runner/datasets/limits.js';

export interface Bomb {
  name: string;
  fileName: string;
  options: Record<string, unknown>;
  limits?: Partial<IngestLimits>;
  /** The refusal: its kind and a pattern its message matches (naming the limit where it is one). */
  expect: { kind: string; message: RegExp };
  build(): Promise<Buffer>;
}

const MiB = 1024 * 1024;

interface ZipMember {
  name: string | Buffer;
  data: Buffer;
  method: 0 | 8;
  /** What the directory claims; defaults to the truth. */
  size?: number;
  compressedSize?: number;
}

/** A zip written by hand, so that its central directory can say whatever a bomb wants. */
export function handZip(members: ZipMember[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const m of members) {
    const name = typeof m.name === 'string' ? Buffer.from(m.name, 'utf8') : m.name;
    const size = m.size ?? (m.method === 0 ? m.data.length : -1);
    const compressedSize = m.compressedSize ?? m.data.length;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x800, 6);
    local.writeUInt16LE(m.method, 8);
    local.writeUInt32LE(compressedSize >>> 0, 18);
    local.writeUInt32LE(size >>> 0, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x800, 8);
    central.writeUInt16LE(m.method, 10);
    central.writeUInt32LE(compressedSize >>> 0, 20);
    central.writeUInt32LE(size >>> 0, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, m.data);
    centrals.push(central, name);
    offset += 30 + name.length + m.data.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(members.length, 8);
  eocd.writeUInt16LE(members.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

/** A tar header (ustar) that declares `size` bytes; the caller decides how many actually follow. */
export function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(size.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write('0', 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}

/** gzip of `head` followed by `zeros` zero bytes, streamed (never `zeros` bytes in memory). */
export async function gzipZeros(head: Buffer, zeros: number): Promise<Buffer> {
  const gz = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gz.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((r) => gz.on('end', r));
  gz.write(head);
  const block = Buffer.alloc(MiB);
  for (let left = zeros; left > 0; left -= MiB) {
    if (!gz.write(left >= MiB ? block : block.subarray(0, left))) await new Promise((r) => gz.once('drain', r));
  }
  gz.end();
  await done;
  return Buffer.concat(out);
}

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

/** A PNG whose header claims width × height (8-bit grayscale); its pixel data is a few bytes. */
export function pngClaiming(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 0;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateRawSync(Buffer.alloc(16))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

function idxImagesHeader(count: number, rows: number, cols: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(0x00000803, 0);
  h.writeUInt32BE(count, 4);
  h.writeUInt32BE(rows, 8);
  h.writeUInt32BE(cols, 12);
  return h;
}

const tinyPng = () => encodeImage(new Uint8Array(8 * 8 * 3).fill(100), 8, 8, 3);

export const BOMBS: Bomb[] = [
  {
    name: 'zip entry declaring 4 GiB',
    fileName: 'upload.zip',
    options: { format: 'imagefolder' },
    expect: { kind: 'too_large', message: /cat\/a\.png: entry is 4 GiB, more than 512 MiB \(limit maxEntryBytes\)/ },
    build: async () => handZip([{ name: 'cat/a.png', data: deflateRawSync(Buffer.alloc(64)), method: 8, size: 0xfffffff0 }]),
  },
  {
    name: 'zip deflate bomb under a small declared size',
    fileName: 'upload.zip',
    options: { format: 'imagefolder' },
    expect: { kind: 'corrupt_archive', message: /inflates to more than the 100 bytes the directory says/ },
    build: async () => handZip([{ name: 'cat/a.png', data: deflateRawSync(Buffer.alloc(64 * MiB), { level: 9 }), method: 8, size: 100 }]),
  },
  {
    name: 'zip member claiming 4 GiB compressed past the end of the file',
    fileName: 'upload.zip',
    options: { format: 'imagefolder' },
    expect: { kind: 'corrupt_archive', message: /claims 4294967280 bytes past the end of the file/ },
    build: async () => handZip([{ name: 'cat/a.png', data: Buffer.alloc(10), method: 0, size: 10, compressedSize: 0xfffffff0 }]),
  },
  {
    name: 'tar.gz entry header declaring 600 MiB',
    fileName: 'upload.tgz',
    options: { format: 'imagefolder' },
    expect: { kind: 'too_large', message: /cat\/big\.png: entry is 600 MiB, more than 512 MiB \(limit maxEntryBytes\)/ },
    build: () => gzipZeros(tarHeader('cat/big.png', 600 * MiB), 4 * MiB),
  },
  {
    name: 'tar.gz whose entries inflate past the archive limit',
    fileName: 'upload.tgz',
    options: { format: 'imagefolder' },
    limits: { maxArchiveBytes: 16 * MiB },
    expect: { kind: 'too_large', message: /more than 16 MiB.*\(limit maxArchiveBytes\)/ },
    build: async () => gzipZeros(await buildTar([1, 2, 3].map((i) => ({ name: `cat/${i}.bin`, data: new Uint8Array(8 * MiB) }))), 0),
  },
  {
    name: 'gzipped IDX file inflating past the entry limit',
    fileName: 'train-images-idx3-ubyte.gz',
    options: { format: 'idx' },
    limits: { maxEntryBytes: 16 * MiB },
    expect: { kind: 'too_large', message: /decompresses to more than 16 MiB \(limit maxEntryBytes\)/ },
    build: () => gzipZeros(idxImagesHeader(100_000, 28, 28), 100_000 * 784),
  },
  {
    name: 'gzipped IDX inside a tar inflating past the entry limit',
    fileName: 'upload.tar',
    options: { format: 'idx' },
    limits: { maxEntryBytes: 16 * MiB },
    expect: { kind: 'too_large', message: /train-images-idx3-ubyte\.gz: gunzips to more than 16 MiB \(limit maxEntryBytes\)/ },
    build: async () => buildTar([{ name: 'train-images-idx3-ubyte.gz', data: await gzipZeros(idxImagesHeader(100_000, 28, 28), 100_000 * 784) }]),
  },
  {
    name: 'PNG claiming 60000 x 60000 pixels',
    fileName: 'upload.zip',
    options: { format: 'imagefolder' },
    expect: { kind: 'too_large', message: /cat\/huge\.png: image is 60000x60000 = 3600000000 pixels, more than 25000000 \(limit maxImagePixels\)/ },
    build: async () => handZip([{ name: 'cat/huge.png', data: pngClaiming(60000, 60000), method: 0 }]),
  },
  {
    name: 'first image 4000 px wide setting the dataset shape',
    fileName: 'upload.zip',
    options: { format: 'imagefolder', resize: 'stretch' },
    expect: { kind: 'too_large', message: /would be 4000x2, larger than 1024 px a side.*\(limit maxImageSide\)/ },
    build: async () => handZip([{ name: 'cat/wide.png', data: Buffer.from(await encodeImage(new Uint8Array(4000 * 2).fill(7), 2, 4000, 1)), method: 0 }]),
  },
  {
    name: 'too many files',
    fileName: 'upload.zip',
    options: { format: 'imagefolder' },
    limits: { maxFiles: 20 },
    expect: { kind: 'too_large', message: /upload\.zip: the archive holds more than 20 entries \(limit maxFiles\)/ },
    build: async () => handZip(Array.from({ length: 50 }, (_, i) => ({ name: `cat/${i}.txt`, data: Buffer.from('x'), method: 0 as const }))),
  },
  {
    name: 'decoded images past the staged-bytes limit',
    fileName: 'upload.zip',
    options: { format: 'imagefolder' },
    limits: { maxStagedBytes: 1000 },
    expect: { kind: 'too_large', message: /decoded images add up to more than 1000 bytes .*\(limit maxStagedBytes\)/ },
    build: async () => {
      const png = Buffer.from(await tinyPng());
      return handZip(Array.from({ length: 10 }, (_, i) => ({ name: `cat/${i}.png`, data: png, method: 0 as const })));
    },
  },
  {
    name: 'NUL byte in an entry name',
    fileName: 'upload.zip',
    options: { format: 'imagefolder' },
    expect: { kind: 'undecodable_image', message: /cat\\x00evil\/x\.png: undecodable image/ },
    build: async () => handZip([{ name: Buffer.from('cat\0evil/x.png', 'latin1'), data: Buffer.from('not a png'), method: 0 }]),
  },
];
