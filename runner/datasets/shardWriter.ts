/**
 * Packs one split's staged examples into shards (shardFormat.ts) and uploads them to S3, building
 * the next shard while the previous uploads. Returns the split's manifest entry.
 */
import type { SplitManifest, ShardInfo } from '../../contracts/datasetSpec.js';
import type { Storage } from '../../common/storage.js';
import { allocateShard } from './shardFormat.js';
import type { ImageShape } from './normalize.js';
import type { StagingFile } from './staging.js';

/** 32 MiB: big enough that S3 requests are few, small enough that the first arrives quickly. */
export const DEFAULT_SHARD_BYTES = 32 * 1024 * 1024;
const UPLOADS_IN_FLIGHT = 2;

export async function writeSplitShards(args: {
  storage: Storage;
  staging: StagingFile;
  indices: Int32Array;
  shape: ImageShape;
  numClasses: number;
  shardKey: (index: number) => string;
  shardBytes?: number;
}): Promise<SplitManifest> {
  const { shape, indices } = args;
  const per = shape.height * shape.width * shape.channels;
  const perShard = Math.max(1, Math.floor((args.shardBytes ?? DEFAULT_SHARD_BYTES) / (per + 4)));
  const labels = args.staging.labels;
  const classCounts = new Array<number>(args.numClasses).fill(0);
  const shards: ShardInfo[] = [];
  const inFlight: Promise<void>[] = [];

  for (let s = 0, start = 0; start < indices.length; s++, start += perShard) {
    const part = indices.subarray(start, Math.min(indices.length, start + perShard));
    const shard = allocateShard({ count: part.length, ...shape });
    await args.staging.readInto(part, shard.pixels);
    for (let i = 0; i < part.length; i++) {
      const label = labels[part[i]];
      shard.labels[i] = label;
      if (label >= 0) classCounts[label]++;
    }
    const index = s;
    shards.push({ key: args.shardKey(index), count: part.length, bytes: shard.bytes.length, sha256: '' });
    const upload = args.storage.put(args.shardKey(index), shard.bytes).then((put) => {
      shards[index].sha256 = put.sha256;
    });
    // Awaited below in turn; until then a failure must not count as an unhandled rejection.
    upload.catch(() => {});
    inFlight.push(upload);
    if (inFlight.length >= UPLOADS_IN_FLIGHT) await inFlight.shift();
  }
  await Promise.all(inFlight);
  return { count: indices.length, classCounts: args.numClasses ? classCounts : [], shards };
}
