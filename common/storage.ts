/**
 * S3 access for the API and the runners: path-style, endpoint configurable, checksums only when
 * required (so S3-compatible servers store uploads byte for byte), multipart for large objects,
 * presigned GET/PUT. Everything else in Momentum goes through this module, never the SDK directly.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  NoSuchKey,
  NotFound,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { UserFacingError } from './errors.js';

export interface StorageConfig {
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  forcePathStyle: boolean;
}

export function storageConfigFrom(c: {
  S3_ENDPOINT: string;
  S3_REGION: string;
  S3_BUCKET: string;
  S3_ACCESS_KEY_ID: string;
  S3_SECRET_ACCESS_KEY: string;
  S3_FORCE_PATH_STYLE: boolean;
}): StorageConfig {
  return {
    endpoint: c.S3_ENDPOINT,
    region: c.S3_REGION,
    bucket: c.S3_BUCKET,
    accessKeyId: c.S3_ACCESS_KEY_ID,
    secretAccessKey: c.S3_SECRET_ACCESS_KEY,
    forcePathStyle: c.S3_FORCE_PATH_STYLE,
  };
}

/** Parts of 8 MiB; objects above one part go multipart. */
const PART_SIZE = 8 * 1024 * 1024;

export interface PutResult {
  key: string;
  bytes: number;
  sha256: string;
}

export class NotFoundError extends Error {
  override name = 'NotFoundError';
}

export class Storage {
  readonly client: S3Client;
  readonly bucket: string;

  constructor(readonly cfg: StorageConfig) {
    this.bucket = cfg.bucket;
    this.client = new S3Client({
      endpoint: cfg.endpoint,
      region: cfg.region,
      forcePathStyle: cfg.forcePathStyle,
      credentials: { accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
    });
  }

  /** Creates the bucket when absent; a clear line when the endpoint is unreachable. */
  async ensureBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return;
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status !== 404 && !(err instanceof NotFound)) {
        throw new UserFacingError(
          `cannot reach S3 at S3_ENDPOINT=${this.cfg.endpoint} (bucket ${this.bucket}): ${(err as Error).message || (err as Error).name}`,
        );
      }
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const name = (err as Error).name;
      if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
    }
  }

  /** Uploads bytes (multipart above one part) and returns their size and sha256. */
  async put(key: string, body: Uint8Array | string, contentType = 'application/octet-stream'): Promise<PutResult> {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    const sha256 = sha256Hex(bytes);
    if (bytes.byteLength <= PART_SIZE) {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: bytes, ContentType: contentType, Metadata: { sha256 } }),
      );
    } else {
      await this.putParts(key, contentType, { sha256 }, (function* () {
        for (let at = 0; at < bytes.byteLength; at += PART_SIZE) yield bytes.subarray(at, at + PART_SIZE);
      })());
    }
    return { key, bytes: bytes.byteLength, sha256 };
  }

  /** Uploads a local file (multipart above one part), hashing it on the way. */
  async putFile(key: string, path: string, contentType = 'application/octet-stream'): Promise<PutResult> {
    const hash = createHash('sha256');
    const file = await open(path);
    try {
      const size = (await file.stat()).size;
      const readPart = async (at: number) => {
        const part = Buffer.allocUnsafe(Math.min(PART_SIZE, size - at));
        const { bytesRead } = await file.read(part, 0, part.byteLength, at);
        if (bytesRead !== part.byteLength) throw new Error(`${path} changed while it was uploaded`);
        hash.update(part);
        return part;
      };
      if (size <= PART_SIZE) {
        const body = await readPart(0);
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }));
      } else {
        await this.putParts(key, contentType, undefined, (async function* () {
          for (let at = 0; at < size; at += PART_SIZE) yield await readPart(at);
        })());
      }
      return { key, bytes: size, sha256: hash.digest('hex') };
    } finally {
      await file.close();
    }
  }

  /**
   * A multipart upload, one part at a time. Not lib-storage's Upload: when the server went away
   * mid-upload, its concurrent part uploaders left rejected promises unhandled, which would take a
   * runner down on an S3 blip (seen in the fault suite). On any failure the upload is aborted (best
   * effort: the server may be the thing that failed) and the first error is the one thrown.
   */
  private async putParts(
    key: string,
    contentType: string,
    metadata: Record<string, string> | undefined,
    parts: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
  ): Promise<void> {
    const { UploadId } = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: contentType, Metadata: metadata }),
    );
    try {
      const done: { ETag: string | undefined; PartNumber: number }[] = [];
      for await (const body of parts) {
        const PartNumber = done.length + 1;
        const { ETag } = await this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId, PartNumber, Body: body }));
        done.push({ ETag, PartNumber });
      }
      await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId, MultipartUpload: { Parts: done } }));
    } catch (err) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId })).catch(() => {});
      throw err;
    }
  }

  async get(key: string): Promise<Buffer> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return Buffer.from(await out.Body!.transformToByteArray());
    } catch (err) {
      throw this.mapNotFound(err, key);
    }
  }

  async getStream(key: string): Promise<Readable> {
    return (await this.getStreamWithEtag(key)).body;
  }

  /** The object's bytes as a stream, with the ETag of exactly those bytes. */
  async getStreamWithEtag(key: string): Promise<{ body: Readable; etag?: string; bytes?: number }> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return { body: out.Body as Readable, etag: out.ETag, bytes: out.ContentLength };
    } catch (err) {
      throw this.mapNotFound(err, key);
    }
  }

  async head(key: string): Promise<{ bytes: number; contentType?: string; etag?: string } | null> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { bytes: out.ContentLength ?? 0, contentType: out.ContentType, etag: out.ETag };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<{ key: string; bytes: number }[]> {
    const out: { key: string; bytes: number }[] = [];
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) out.push({ key: o.Key!, bytes: o.Size ?? 0 });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** Deletes every object under a prefix (1000 per request). */
  async deletePrefix(prefix: string): Promise<number> {
    const keys = (await this.list(prefix)).map((o) => o.key);
    for (let i = 0; i < keys.length; i += 1000) {
      await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true },
        }),
      );
    }
    return keys.length;
  }

  /** A short-lived GET URL; `fileName` sets Content-Disposition so browsers and curl -OJ name the file. */
  presignGet(key: string, expiresInSeconds: number, fileName?: string): Promise<string> {
    return getSignedUrl(
      this.client,
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: key,
        ResponseContentDisposition: fileName ? `attachment; filename="${fileName.replace(/["\\]/g, '_')}"` : undefined,
      }),
      { expiresIn: expiresInSeconds },
    );
  }

  /**
   * A PUT URL. With `contentLength` the length is one of the signed headers: S3 refuses a body of any
   * other size (SignatureDoesNotMatch), so a client cannot store more than it declared.
   */
  presignPut(key: string, expiresInSeconds: number, opts: { contentType?: string; contentLength?: number } = {}): Promise<string> {
    return getSignedUrl(
      this.client,
      new PutObjectCommand({ Bucket: this.bucket, Key: key, ContentType: opts.contentType, ContentLength: opts.contentLength }),
      { expiresIn: expiresInSeconds, signableHeaders: opts.contentLength === undefined ? undefined : new Set(['content-length']) },
    );
  }

  destroy(): void {
    this.client.destroy();
  }

  private mapNotFound(err: unknown, key: string): unknown {
    return isNotFound(err) ? new NotFoundError(`no object at s3://${this.bucket}/${key}`) : err;
  }
}

export function isNotFound(err: unknown): boolean {
  if (err instanceof NoSuchKey || err instanceof NotFound) return true;
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}
