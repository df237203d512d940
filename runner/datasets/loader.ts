/**
 * Serves one split of an ingested dataset version to the trainer as an ImageDataset.
 *
 * Shards are fetched from S3 a few at a time in the background as soon as the split is opened,
 * verified against the manifest's sha256, and kept in a local cache named by that sha256 (written to
 * a temporary file, then renamed: concurrent processes never see half a file). Once loaded, a shard
 * lives in memory; `read(indices)` only copies rows, and waits only for shards not yet loaded (a
 * shard a read needs jumps the download queue).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DatasetManifest, ShardInfo } from '../../contracts/datasetSpec.js';
import { sha256Hex, type Storage } from '../../common/storage.js';
import type { ImageDataset } from '../moco/dataset.js';
import { decodeShard, type DecodedShard } from './shardFormat.js';

export interface OpenSplitOptions {
  /** Local cache folder shared across runs and processes (e.g. `${DATA_DIR}/shard-cache`). */
  cacheDir: string;
  /** Shards downloaded at once (default 4). */
  concurrency?: number;
}

export interface LoaderStats {
  cacheHits: number;
  downloads: number;
  bytesDownloaded: number;
}

export class ShardChecksumError extends Error {
  override name = 'ShardChecksumError';
}

export type SplitName = 'train' | 'val';

/** Opens a split and starts fetching its shards; reads wait only for the shards they touch. */
export function openDatasetSplit(storage: Storage, manifest: DatasetManifest, split: SplitName, options: OpenSplitOptions): ShardedImageDataset {
  const splitManifest = manifest.splits[split];
  if (!splitManifest) throw new Error(`this dataset version has no ${split} split`);
  return new ShardedImageDataset(storage, manifest, splitManifest.shards, options);
}

export class ShardedImageDataset implements ImageDataset {
  readonly size: number;
  readonly height: number;
  readonly width: number;
  readonly channels: 1 | 3;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  readonly stats: LoaderStats = { cacheHits: 0, downloads: 0, bytesDownloaded: 0 };

  /** starts[s] = index of shard s's first example; starts[n] = size. */
  private readonly starts: Int32Array;
  private readonly loaded: (DecodedShard | undefined)[];
  private readonly pending: (Promise<DecodedShard> | undefined)[];
  private readonly queue: number[];
  private active = 0;
  private readonly concurrency: number;
  private failure?: Error;

  constructor(
    private readonly storage: Storage,
    manifest: DatasetManifest,
    private readonly shards: ShardInfo[],
    private readonly options: OpenSplitOptions,
  ) {
    this.height = manifest.height;
    this.width = manifest.width;
    this.channels = manifest.channels;
    this.numClasses = manifest.classes.length;
    this.classNames = manifest.classes;
    this.starts = new Int32Array(shards.length + 1);
    for (let s = 0; s < shards.length; s++) this.starts[s + 1] = this.starts[s] + shards[s].count;
    this.size = this.starts[shards.length];
    this.loaded = new Array(shards.length);
    this.pending = new Array(shards.length);
    this.queue = shards.map((_, s) => s);
    this.concurrency = Math.max(1, options.concurrency ?? 4);
    this.pump();
  }

  /** Resolves once every shard is in memory (optional: read() waits for what it needs). */
  async ready(): Promise<void> {
    await Promise.all(this.shards.map((_, s) => this.shard(s)));
  }

  async read(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; labels: Int32Array }> {
    const per = this.height * this.width * this.channels;
    const shardOf = new Int32Array(indices.length);
    const needed = new Set<number>();
    for (let i = 0; i < indices.length; i++) {
      const j = indices[i];
      if (!Number.isInteger(j) || j < 0 || j >= this.size) throw new RangeError(`index ${j} outside 0..${this.size - 1}`);
      const s = this.shardIndexOf(j);
      shardOf[i] = s;
      if (!this.loaded[s]) needed.add(s);
    }
    if (needed.size) await Promise.all([...needed].map((s) => this.shard(s)));
    const pixels = new Uint8Array(indices.length * per);
    const labels = new Int32Array(indices.length);
    for (let i = 0; i < indices.length; i++) {
      const shard = this.loaded[shardOf[i]]!;
      const k = indices[i] - this.starts[shardOf[i]];
      pixels.set(shard.pixels.subarray(k * per, (k + 1) * per), i * per);
      labels[i] = shard.labels[k];
    }
    return { pixels, labels };
  }

  /** Binary search over shard starts: shards are equal-sized except the last, but need not be. */
  private shardIndexOf(j: number): number {
    let lo = 0;
    let hi = this.shards.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= j) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** The shard, loading it now (ahead of the background queue) when it is not under way. */
  private shard(s: number): Promise<DecodedShard> {
    if (this.loaded[s]) return Promise.resolve(this.loaded[s]!);
    if (this.failure) return Promise.reject(this.failure);
    const queued = this.queue.indexOf(s);
    if (queued >= 0) this.queue.splice(queued, 1);
    return this.start(s);
  }

  private start(s: number): Promise<DecodedShard> {
    let p = this.pending[s];
    if (p) return p;
    this.active++;
    p = this.fetch(this.shards[s])
      .then((shard) => {
        this.loaded[s] = shard;
        return shard;
      })
      .catch((err: Error) => {
        this.failure ??= err;
        throw err;
      })
      .finally(() => {
        this.active--;
        this.pending[s] = undefined;
        this.pump();
      });
    // Background loads are awaited by readers if at all; their failure is reported there.
    p.catch(() => {});
    this.pending[s] = p;
    return p;
  }

  private pump(): void {
    while (!this.failure && this.active < this.concurrency && this.queue.length) this.start(this.queue.shift()!);
  }

  private async fetch(info: ShardInfo): Promise<DecodedShard> {
    const cached = join(this.options.cacheDir, `${info.sha256}.shard`);
    const hit = await readFile(cached).catch(() => null);
    if (hit && sha256Hex(hit) === info.sha256) {
      this.stats.cacheHits++;
      return decodeShard(hit);
    }
    if (hit) await rm(cached, { force: true }); // damaged cache file: fetch again
    const bytes = await this.storage.get(info.key);
    this.stats.downloads++;
    this.stats.bytesDownloaded += bytes.length;
    const got = sha256Hex(bytes);
    if (got !== info.sha256) {
      throw new ShardChecksumError(`shard ${info.key} has sha256 ${got}, the manifest says ${info.sha256}; refusing corrupt data`);
    }
    await mkdir(this.options.cacheDir, { recursive: true });
    const tmp = `${cached}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, bytes);
    await rename(tmp, cached);
    return decodeShard(bytes);
  }
}
