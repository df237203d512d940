/**
 * The one error ingestion raises for bad input. Its message is what the user reads on the failed
 * dataset version (stored in dataset_versions.error), so it always names the file and what is wrong.
 */
export class DatasetIngestError extends Error {
  override name = 'DatasetIngestError';
  /** The file inside the upload (or the upload itself) that is at fault, when one is. */
  readonly file?: string;
  /** A short machine-readable kind, for callers that want to branch or count. */
  readonly kind: DatasetIngestErrorKind;

  constructor(kind: DatasetIngestErrorKind, message: string, file?: string) {
    // Recorded in Postgres (text): a NUL or other control byte in an archive name must not make
    // the failure itself unrecordable.
    super(printable(file ? `${file}: ${message}` : message));
    this.kind = kind;
    this.file = file === undefined ? undefined : printable(file);
  }
}

/** Control characters (NUL included) shown as \xNN escapes. */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export type DatasetIngestErrorKind =
  | 'too_large'
  | 'corrupt_archive'
  | 'unknown_format'
  | 'undecodable_image'
  | 'empty_class'
  | 'mixed_sizes'
  | 'channel_mismatch'
  | 'count_mismatch'
  | 'bad_label'
  | 'no_examples'
  | 'missing_upload'
  | 'upload_changed'
  | 'not_ingestable';
