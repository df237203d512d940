/** What every format reader gets: the opened upload, the normalizer and the staging file. */
import type { Logger } from '../../../common/logger.js';
import type { OpenedArchive } from '../archive/read.js';
import type { PixelNormalizer } from '../normalize.js';
import type { StagingFile } from '../staging.js';
import type { IngestLimits } from '../limits.js';

export interface ReaderContext {
  archive: OpenedArchive;
  uploadName: string;
  normalizer: PixelNormalizer;
  staging: StagingFile;
  log: Logger;
  limits: IngestLimits;
}

/** A reader fills the staging file (labels final, 0..classes-1, or -1) and names the classes. */
export interface ReaderResult {
  classes: string[];
}

/** How many decodes run at once: enough to keep both cores and libuv's 4 threads busy. */
export const DECODE_WINDOW = 8;

/** Hidden files and macOS resource forks are never data. */
export function isJunkPath(name: string): boolean {
  return name.split('/').some((part) => part.startsWith('.') || part === '__MACOSX' || part === 'Thumbs.db');
}
