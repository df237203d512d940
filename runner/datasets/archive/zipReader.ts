/**
 * Reads a zip from a local file through its central directory (the authoritative index: local
 * headers may defer sizes to a data descriptor). One entry in memory at a time; fflate inflates.
 * Zip64 and encrypted entries are refused with a clear message. Sizes in the directory are claims:
 * nothing is allocated from them before they are checked against the file and the entry limit, and
 * inflation stops at the declared size.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { inflateRawSync } from 'node:zlib';

export interface ZipEntryInfo {
  name: string;
  isDirectory: boolean;
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
  flags: number;
}

export class ZipFormatError extends Error {}

const EOCD_SIG = 0x06054b50;
const CEN_SIG = 0x02014b50;
const LOC_SIG = 0x04034b50;

/** Entries of the zip; `data()` refuses an entry larger than `maxEntryBytes` before reading it. */
export async function* readZipEntries(path: string, maxEntryBytes = Infinity): AsyncGenerator<{ info: ZipEntryInfo; data: () => Promise<Buffer> }> {
  const fh = await open(path, 'r');
  try {
    const fileSize = (await fh.stat()).size;
    const entries = await readCentralDirectory(fh);
    for (const info of entries) {
      yield { info, data: () => readEntryData(fh, info, fileSize, maxEntryBytes) };
    }
  } finally {
    await fh.close();
  }
}

async function readCentralDirectory(fh: FileHandle): Promise<ZipEntryInfo[]> {
  const size = (await fh.stat()).size;
  // The end-of-central-directory record sits in the last 22 + up to 65535 (comment) bytes.
  const tailLen = Math.min(size, 22 + 65535);
  const tail = Buffer.alloc(tailLen);
  await fh.read(tail, 0, tailLen, size - tailLen);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === EOCD_SIG) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new ZipFormatError('no end-of-central-directory record (truncated or not a zip)');
  const count = tail.readUInt16LE(eocd + 10);
  const cdSize = tail.readUInt32LE(eocd + 12);
  const cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdOffset === 0xffffffff) throw new ZipFormatError('zip64 archives are not supported; use tar or tar.gz');
  if (cdOffset + cdSize > size) throw new ZipFormatError('central directory points past the end of the file (truncated)');
  const cd = Buffer.alloc(cdSize);
  await fh.read(cd, 0, cdSize, cdOffset);
  const out: ZipEntryInfo[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== CEN_SIG) throw new ZipFormatError(`central directory entry ${i} is damaged`);
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const compressedSize = cd.readUInt32LE(p + 20);
    const uncompressed = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    const localHeaderOffset = cd.readUInt32LE(p + 42);
    const name = cd.toString(flags & 0x800 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLen);
    out.push({ name, isDirectory: name.endsWith('/'), method, compressedSize, size: uncompressed, localHeaderOffset, flags });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

export class ZipEntryTooLargeError extends Error {}

async function readEntryData(fh: FileHandle, e: ZipEntryInfo, fileSize: number, maxEntryBytes: number): Promise<Buffer> {
  if (e.flags & 1) throw new ZipFormatError(`${e.name} is encrypted`);
  if (e.size > maxEntryBytes) throw new ZipEntryTooLargeError(`${e.name}: declares ${e.size} bytes, more than the ${maxEntryBytes}-byte entry limit`);
  const local = Buffer.alloc(30);
  await fh.read(local, 0, 30, e.localHeaderOffset);
  if (local.readUInt32LE(0) !== LOC_SIG) throw new ZipFormatError(`${e.name}: local header is damaged`);
  const dataStart = e.localHeaderOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
  // A claimed compressed size past the end of the file is a lie: never allocate it.
  if (dataStart + e.compressedSize > fileSize) throw new ZipFormatError(`${e.name}: data is truncated (claims ${e.compressedSize} bytes past the end of the file)`);
  const raw = Buffer.alloc(e.compressedSize);
  const { bytesRead } = await fh.read(raw, 0, e.compressedSize, dataStart);
  if (bytesRead !== e.compressedSize) throw new ZipFormatError(`${e.name}: data is truncated`);
  let data: Buffer;
  if (e.method === 0) data = raw;
  else if (e.method === 8) {
    try {
      // Output capped at the declared size (itself within the entry limit): a member that inflates
      // beyond what the directory says stops there instead of filling memory.
      data = inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw new ZipFormatError(`${e.name}: inflates to more than the ${e.size} bytes the directory says`);
      throw new ZipFormatError(`${e.name}: deflate data is corrupt (${(err as Error).message})`);
    }
  } else throw new ZipFormatError(`${e.name}: compression method ${e.method} is not supported (use deflate or store)`);
  if (data.length !== e.size) throw new ZipFormatError(`${e.name}: holds ${data.length} bytes, the directory says ${e.size}`);
  return data;
}
