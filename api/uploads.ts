/**
 * Presigned multipart uploads for large dataset archives (common/storage.ts has single PUTs only):
 * the API creates the upload and signs one URL per part; the client PUTs the parts straight to S3
 * and sends back the ETags; the API completes the upload. Bytes never pass through the API.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Storage } from '../common/storage.js';

/** S3's bounds: parts of 5 MiB (except the last) to 5 GiB, at most 10 000 of them. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
export const MAX_PARTS = 10_000;
/** Above this an archive goes multipart; below it one PUT is simpler and as fast. */
export const MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024;
const DEFAULT_PART_BYTES = 64 * 1024 * 1024;

export function planParts(sizeBytes: number): { partSize: number; partCount: number } {
  const partSize = Math.max(DEFAULT_PART_BYTES, MIN_PART_BYTES, Math.ceil(sizeBytes / MAX_PARTS));
  return { partSize, partCount: Math.max(1, Math.ceil(sizeBytes / partSize)) };
}

export interface MultipartPlan {
  uploadId: string;
  partSize: number;
  parts: { partNumber: number; url: string }[];
}

/**
 * Where we note that an upload id was issued for a key. Completing checks the note first, so an
 * unknown or foreign upload id is the client's error (400) on every S3 implementation, not whatever
 * the server makes of it (the local S3 server answers 500).
 */
export function multipartMarkerKey(key: string, uploadId: string): string {
  return `${key}.multipart/${uploadId}`;
}

export const UPLOAD_ID_PATTERN = /^[A-Za-z0-9._~-]{1,1024}$/;

export async function isIssuedUpload(storage: Storage, key: string, uploadId: string): Promise<boolean> {
  return UPLOAD_ID_PATTERN.test(uploadId) && (await storage.head(multipartMarkerKey(key, uploadId))) !== null;
}

export async function startMultipartUpload(storage: Storage, key: string, sizeBytes: number, ttlSeconds: number): Promise<MultipartPlan> {
  const created = await storage.client.send(
    new CreateMultipartUploadCommand({ Bucket: storage.bucket, Key: key, ContentType: 'application/octet-stream' }),
  );
  const uploadId = created.UploadId!;
  await storage.put(multipartMarkerKey(key, uploadId), `${sizeBytes}`, 'text/plain');
  const { partSize, partCount } = planParts(sizeBytes);
  const parts = await Promise.all(
    Array.from({ length: partCount }, async (_, i) => ({
      partNumber: i + 1,
      url: await getSignedUrl(storage.client, new UploadPartCommand({ Bucket: storage.bucket, Key: key, UploadId: uploadId, PartNumber: i + 1 }), {
        expiresIn: ttlSeconds,
      }),
    })),
  );
  return { uploadId, partSize, parts };
}

export async function completeMultipartUpload(
  storage: Storage,
  key: string,
  uploadId: string,
  parts: { partNumber: number; etag: string }[],
): Promise<void> {
  await storage.client.send(
    new CompleteMultipartUploadCommand({
      Bucket: storage.bucket,
      Key: key,
      UploadId: uploadId,
      MultipartUpload: {
        Parts: [...parts].sort((a, b) => a.partNumber - b.partNumber).map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })),
      },
    }),
  );
  await storage.deletePrefix(`${key}.multipart/`);
}

export async function abortMultipartUpload(storage: Storage, key: string, uploadId: string): Promise<void> {
  await storage.client.send(new AbortMultipartUploadCommand({ Bucket: storage.bucket, Key: key, UploadId: uploadId }));
}

/**
 * Aborts every multipart upload issued for `key` (found by their markers) and removes the markers.
 * An upload S3 no longer knows (completed, aborted, or a server without multipart abort, which
 * answers 4xx) counts as settled; on a 5xx or a network error its marker stays, so the next sweep
 * tries again. Returns the upload ids settled.
 */
export async function abortIssuedUploads(storage: Storage, key: string): Promise<{ settled: string[]; failed: string[] }> {
  const markers = await storage.list(`${key}.multipart/`);
  const settled: string[] = [];
  const failed: string[] = [];
  for (const marker of markers) {
    const uploadId = marker.key.slice(`${key}.multipart/`.length);
    try {
      await abortMultipartUpload(storage, key, uploadId);
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? 0;
      if (!(status >= 400 && status < 500)) {
        failed.push(uploadId);
        continue;
      }
    }
    await storage.deletePrefix(marker.key);
    settled.push(uploadId);
  }
  return { settled, failed };
}
