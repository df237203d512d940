/** The S3 key layout (DESIGN.md section 5). Ids, never user-chosen names, appear in keys. */

export function datasetVersionPrefix(tenantId: string, datasetId: string, version: number): string {
  return `datasets/${tenantId}/${datasetId}/v${version}/`;
}
export function datasetUploadKey(tenantId: string, datasetId: string, version: number, fileName: string): string {
  return `${datasetVersionPrefix(tenantId, datasetId, version)}upload/${fileName}`;
}
export function datasetShardKey(tenantId: string, datasetId: string, version: number, split: string, index: number): string {
  return `${datasetVersionPrefix(tenantId, datasetId, version)}shards/${split}-${String(index).padStart(5, '0')}.bin`;
}
export function datasetManifestKey(tenantId: string, datasetId: string, version: number): string {
  return `${datasetVersionPrefix(tenantId, datasetId, version)}manifest.json`;
}

export function checkpointPrefix(tenantId: string, jobId: string, version: number): string {
  return `checkpoints/${tenantId}/${jobId}/v${version}/`;
}
/**
 * Where one attempt uploads a version: under the version, a folder per attempt. A zombie attempt
 * (one that lost its lock and keeps running) computes the same version number as the attempt that
 * took over, but never writes a byte under that attempt's keys.
 */
export function checkpointAttemptPrefix(tenantId: string, jobId: string, version: number, attempt: number): string {
  return `${checkpointPrefix(tenantId, jobId, version)}a${attempt}/`;
}

/** The files of one checkpoint version. */
export const CHECKPOINT_FILES = {
  /** Full training state to resume: both encoders, optimizer, step, RNG, data order. */
  state: 'state.safetensors',
  stateMeta: 'state.json',
  /** Backbone only, with the reference implementation's parameter names. */
  backbone: 'backbone.safetensors',
  backboneMeta: 'backbone.json',
} as const;
export type CheckpointFileKind = keyof typeof CHECKPOINT_FILES;
