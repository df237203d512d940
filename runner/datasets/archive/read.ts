/**
 * Iterates the files of an uploaded archive on local disk: tar, tar.gz or zip, recognised by their
 * magic bytes. Streams tar (one entry at a time in memory); zip goes through its central directory.
 * A bare IDX file (gzipped or not) is yielded as the archive's single entry.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import type { Readable } from 'node:stream';
import { DatasetIngestError } from '../errors.js';
import { hexHead, sniffContainer } from './detect.js';
import { readZipEntries, ZipFormatError } from './zipReader.js';

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
export async function openArchive(path: string, uploadName: string): Promise<OpenedArchive> {
  const head = await readHead(path, 512);
  const outer = sniffContainer(head);
  const corrupt = (kind: string, err: unknown) =>
    err instanceof DatasetIngestError ? err : new DatasetIngestError('corrupt_archive', `${kind} archive is corrupt: ${(err as Error).message}`, uploadName);

  if (outer === 'zip') {
    return {
      kind: 'zip',
      async *entries() {
        try {
          for await (const { info, data } of readZipEntries(path)) {
            yield { name: normalizeName(info.name), isDirectory: info.isDirectory, data };
          }
        } catch (err) {
          throw err instanceof ZipFormatError ? corrupt('zip', err) : err;
        }
      },
    };
  }
  if (outer === 'tar') return { kind: 'tar', entries: () => tarEntries(() => createReadStream(path), 'tar', uploadName) };
  if (outer === 'idx') return { kind: 'idx', entries: () => singleFile(path, uploadName, false) };
  if (outer === 'gzip') {
    let inner: ReturnType<typeof sniffContainer>;
    try {
      inner = sniffContainer(await readHead(path, 512, true));
    } catch (err) {
      throw corrupt('gzip', err);
    }
    if (inner === 'tar') return { kind: 'tar.gz', entries: () => tarEntries(() => createReadStream(path).pipe(createGunzip()), 'tar.gz', uploadName) };
    if (inner === 'idx') return { kind: 'idx.gz', entries: () => singleFile(path, uploadName, true) };
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

async function* tarEntries(source: () => Readable, kind: string, uploadName: string): AsyncGenerator<ArchiveEntry> {
  const input = source();
  const ex = extract();
  // Errors of the gunzip/file stream must reach the iterator, not crash the process.
  input.on('error', (err) => ex.destroy(err));
  input.pipe(ex);
  try {
    for await (const entry of ex) {
      const type = entry.header.type;
      let consumed = false;
      if (type === 'file' || type === 'contiguous-file' || type === 'directory') {
        yield {
          name: normalizeName(entry.header.name),
          isDirectory: type === 'directory',
          data: async () => {
            consumed = true;
            const chunks: Buffer[] = [];
            try {
              for await (const chunk of entry) chunks.push(chunk as Buffer);
            } catch (err) {
              throw new DatasetIngestError('corrupt_archive', `${kind} archive is corrupt inside ${entry.header.name}: ${(err as Error).message}`, uploadName);
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

async function* singleFile(path: string, uploadName: string, gunzip: boolean): AsyncGenerator<ArchiveEntry> {
  const name = basename(uploadName).replace(/\.gz$/i, '');
  yield {
    name,
    isDirectory: false,
    data: async () => {
      const stream = gunzip ? createReadStream(path).pipe(createGunzip()) : createReadStream(path);
      const chunks: Buffer[] = [];
      try {
        for await (const chunk of stream) chunks.push(chunk as Buffer);
      } catch (err) {
        throw new DatasetIngestError('corrupt_archive', `gzip data is corrupt: ${(err as Error).message}`, uploadName);
      }
      return Buffer.concat(chunks);
    },
  };
}

function normalizeName(name: string): string {
  return name.replace(/\\/g, '/').replace(/^(\.\/)+/, '').replace(/^\/+/, '');
}
