/**
 * Iterates the files of an uploaded archive on local disk: tar, tar.gz or zip, recognised by their
 * magic bytes. Streams tar (one entry at a time in memory); zip goes through its central directory.
 * A bare IDX file (gzipped or not) is yielded as the archive's single entry.
 *
 * Every path enforces the upload limits (limits.ts) before it allocates: an entry's size from its
 * header, the gunzip output as it streams, the number of entries, the total decompressed bytes.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import { pipeline, Transform, type Readable } from 'node:stream';
import { DatasetIngestError } from '../errors.js';
import { hexHead, sniffContainer } from './detect.js';
import { readZipEntries, ZipEntryTooLargeError, ZipFormatError } from './zipReader.js';
import { DEFAULT_INGEST_LIMITS, formatBytes, tooLarge, type IngestLimits } from '../limits.js';
import { printable } from '../errors.js';

export type ArchiveKind = 'tar' | 'tar.gz' | 'zip' | 'idx' | 'idx.gz';

export interface ArchiveEntry {
  /** Path inside the archive, with "/" separators and no leading "./". */
  name: string;
  isDirectory: boolean;
  /** The entry's bytes; call at most once, before asking for the next entry. */
  data(): Promise<Buffer>;
}

export interface OpenedArchive {
  kind: ArchiveKind;
  entries(): AsyncGenerator<ArchiveEntry>;
}

/** Identifies the upload at `path` (named `uploadName` in messages) and returns its entry iterator. */
export async function openArchive(path: string, uploadName: string, limits: IngestLimits = DEFAULT_INGEST_LIMITS): Promise<OpenedArchive> {
  const head = await readHead(path, 512);
  const outer = sniffContainer(head);
  const corrupt = (kind: string, err: unknown) =>
    err instanceof DatasetIngestError ? err : new DatasetIngestError('corrupt_archive', `${kind} archive is corrupt: ${(err as Error).message}`, uploadName);
  const zipError = (err: unknown) => {
    if (err instanceof ZipEntryTooLargeError) return tooLarge('maxEntryBytes', err.message, uploadName);
    return err instanceof ZipFormatError ? corrupt('zip', err) : err;
  };

  if (outer === 'zip') {
    return {
      kind: 'zip',
      async *entries() {
        try {
          const budget = new ArchiveBudget(limits, uploadName);
          for await (const { info, data } of readZipEntries(path, limits.maxEntryBytes)) {
            const name = normalizeName(info.name);
            budget.entry(name, info.size);
            // data() runs in the reader's code, outside this generator: its errors are mapped here too.
            yield { name, isDirectory: info.isDirectory, data: () => data().catch((err: unknown) => Promise.reject(zipError(err))) };
          }
        } catch (err) {
          throw zipError(err);
        }
      },
    };
  }
  if (outer === 'tar') return { kind: 'tar', entries: () => tarEntries(() => createReadStream(path), 'tar', uploadName, limits) };
  if (outer === 'idx') return { kind: 'idx', entries: () => singleFile(path, uploadName, false, limits) };
  if (outer === 'gzip') {
    let inner: ReturnType<typeof sniffContainer>;
    try {
      inner = sniffContainer(await readHead(path, 512, true));
    } catch (err) {
      throw corrupt('gzip', err);
    }
    // pipeline (not pipe): an error of any stage (corrupt gzip, the output limit) reaches the reader.
    const gunzipped = () => pipeline(createReadStream(path), createGunzip(), outputLimit(limits.maxArchiveBytes, 'maxArchiveBytes', uploadName), () => {});
    if (inner === 'tar') return { kind: 'tar.gz', entries: () => tarEntries(gunzipped, 'tar.gz', uploadName, limits) };
    if (inner === 'idx') return { kind: 'idx.gz', entries: () => singleFile(path, uploadName, true, limits) };
    throw new DatasetIngestError('unknown_format', 'unknown format: a gzip file that holds neither a tar archive nor an IDX file', uploadName);
  }
  throw new DatasetIngestError(
    'unknown_format',
    `unknown format: not a tar, tar.gz or zip archive (first bytes ${hexHead(head)}${head.length === 0 ? ', the file is empty' : ''})`,
    uploadName,
  );
}

/** The first `n` bytes of the file, or of its gunzipped content. */
async function readHead(path: string, n: number, gunzip = false): Promise<Buffer> {
  if (!gunzip) {
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(n);
      const { bytesRead } = await fh.read(buf, 0, n, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }
  const stream = createReadStream(path).pipe(createGunzip());
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      total += (chunk as Buffer).length;
      if (total >= n) break;
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks).subarray(0, n);
}

/** Counts entries and their declared sizes against the limits, before anything is read. */
class ArchiveBudget {
  private files = 0;
  private bytes = 0;
  constructor(
    private readonly limits: IngestLimits,
    private readonly uploadName: string,
  ) {}

  entry(name: string, size: number): void {
    if (++this.files > this.limits.maxFiles) {
      throw tooLarge('maxFiles', `the archive holds more than ${this.limits.maxFiles} entries`, this.uploadName);
    }
    if (size > this.limits.maxEntryBytes) {
      throw tooLarge('maxEntryBytes', `entry is ${formatBytes(size)}, more than ${formatBytes(this.limits.maxEntryBytes)}`, name);
    }
    this.bytes += size;
    if (this.bytes > this.limits.maxArchiveBytes) {
      throw tooLarge('maxArchiveBytes', `the archive's entries add up to more than ${formatBytes(this.limits.maxArchiveBytes)} uncompressed`, this.uploadName);
    }
  }
}

/** Passes bytes through until `max` have gone by, then fails the stream with the user's error. */
function outputLimit(max: number, limit: 'maxArchiveBytes' | 'maxEntryBytes', file: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > max) done(tooLarge(limit, `decompresses to more than ${formatBytes(max)}`, file));
      else done(null, chunk);
    },
  });
}

async function* tarEntries(source: () => Readable, kind: string, uploadName: string, limits: IngestLimits): AsyncGenerator<ArchiveEntry> {
  const input = source();
  const budget = new ArchiveBudget(limits, uploadName);
  const ex = extract();
  // Errors of the gunzip/file stream must reach the iterator, not crash the process.
  input.on('error', (err) => ex.destroy(err));
  input.pipe(ex);
  try {
    for await (const entry of ex) {
      const type = entry.header.type;
      let consumed = false;
      if (type === 'file' || type === 'contiguous-file' || type === 'directory') {
        const name = normalizeName(entry.header.name);
        budget.entry(name, entry.header.size ?? 0);
        yield {
          name,
          isDirectory: type === 'directory',
          data: async () => {
            consumed = true;
            const chunks: Buffer[] = [];
            try {
              for await (const chunk of entry) chunks.push(chunk as Buffer);
            } catch (err) {
              if (err instanceof DatasetIngestError) throw err;
              throw new DatasetIngestError('corrupt_archive', `${kind} archive is corrupt inside ${name}: ${(err as Error).message}`, uploadName);
            }
            return Buffer.concat(chunks);
          },
        };
      }
      if (!consumed) entry.resume();
    }
  } catch (err) {
    if (err instanceof DatasetIngestError) throw err;
    throw new DatasetIngestError('corrupt_archive', `${kind} archive is corrupt: ${(err as Error).message}`, uploadName);
  } finally {
    input.destroy();
  }
}

async function* singleFile(path: string, uploadName: string, gunzip: boolean, limits: IngestLimits): AsyncGenerator<ArchiveEntry> {
  const name = basename(uploadName).replace(/\.gz$/i, '');
  yield {
    name,
    isDirectory: false,
    data: async () => {
      const limit = outputLimit(limits.maxEntryBytes, 'maxEntryBytes', uploadName);
      const stream = gunzip ? pipeline(createReadStream(path), createGunzip(), limit, () => {}) : pipeline(createReadStream(path), limit, () => {});
      const chunks: Buffer[] = [];
      try {
        for await (const chunk of stream) chunks.push(chunk as Buffer);
      } catch (err) {
        if (err instanceof DatasetIngestError) throw err;
        throw new DatasetIngestError('corrupt_archive', `gzip data is corrupt: ${(err as Error).message}`, uploadName);
      }
      return Buffer.concat(chunks);
    },
  };
}

function normalizeName(name: string): string {
  return printable(name.replace(/\\/g, '/').replace(/^(\.\/)+/, '').replace(/^\/+/, ''));
}
