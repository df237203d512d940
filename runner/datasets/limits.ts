/**
 * Caps on what one upload may make ingestion read, decode and stage. An upload is the user's input:
 * a 40 KB zip that declares a 4 GB entry, a gzip that inflates a thousandfold, a PNG header that
 * claims 100,000 × 100,000 pixels, or a million tiny files must be refused with a message naming
 * the limit, never crash (and retry) the runner. A size error is a DatasetIngestError of kind
 * `too_large`: the user's, not retried.
 */
import { DatasetIngestError } from './errors.js';

export interface IngestLimits {
  /** Decompressed bytes of one archive entry (one entry is held in memory at a time). */
  maxEntryBytes: number;
  /** Decompressed bytes of the whole archive (gunzip output, sum of tar/zip entries). */
  maxArchiveBytes: number;
  /** Entries (files and folders) in the archive. */
  maxFiles: number;
  /** Pixels of one encoded image (sharp's limitInputPixels), checked on its header before decoding. */
  maxImagePixels: number;
  /** Height or width of the dataset's image shape (the declared imageSize or the first image's). */
  maxImageSide: number;
  /** Decoded pixel bytes staged on local disk for the whole dataset. */
  maxStagedBytes: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export const DEFAULT_INGEST_LIMITS: Readonly<IngestLimits> = Object.freeze({
  maxEntryBytes: 512 * MiB,
  maxArchiveBytes: 16 * GiB,
  maxFiles: 2_000_000,
  maxImagePixels: 25_000_000,
  maxImageSide: 1024,
  maxStagedBytes: 16 * GiB,
});

export function ingestLimits(overrides: Partial<IngestLimits> = {}): IngestLimits {
  return { ...DEFAULT_INGEST_LIMITS, ...overrides };
}

/** Bytes in a short human form for messages: 512 MiB, 1.5 GiB, 300 bytes. */
export function formatBytes(n: number): string {
  if (n >= GiB) return `${+(n / GiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${+(n / MiB).toFixed(2)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(2)} KiB`;
  return `${n} bytes`;
}

/** The user's error for exceeding `limit` (its name in IngestLimits), with what was found. */
export function tooLarge(limit: keyof IngestLimits, what: string, file?: string): DatasetIngestError {
  return new DatasetIngestError('too_large', `${what} (limit ${limit})`, file);
}
