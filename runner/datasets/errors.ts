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
    super(file ? `${file}: ${message}` : message);
    this.kind = kind;
    this.file = file;
  }
}

export type DatasetIngestErrorKind =
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
  | 'not_ingestable';
