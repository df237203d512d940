/**
 * Dataset versions: what a user declares when creating one (validated by the API, read by the
 * ingestion job), and the manifest that ingestion writes beside the shards in S3 and mirrors in
 * Postgres.
 */
import { z } from 'zod';

export const DATASET_FORMATS = ['imagefolder', 'idx', 'cifar10', 'cifar100', 'unlabeled'] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];

export const datasetName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'lowercase letters, digits, ".", "_" and "-", at most 63, starting with a letter or digit');

export const datasetVersionOptions = z.strictObject({
  /**
   * imagefolder: `class/file.png|jpg` in a tar, tar.gz or zip; idx: MNIST-layout IDX files (gzipped
   * or not) in an archive; cifar10/cifar100: the binary batches in an archive; unlabeled: images in
   * any folders, for pretraining only.
   */
  format: z.enum(DATASET_FORMATS),
  /** Side of the square images stored; defaults to the images' own size when they all agree. */
  imageSize: z.number().int().min(8).max(512).optional(),
  /** 1 (grayscale) or 3 (RGB); defaults to what the data holds. */
  channels: z.union([z.literal(1), z.literal(3)]).optional(),
  /** What to do with images of another size: refuse (none), stretch, or resize then center-crop. */
  resize: z.enum(['none', 'stretch', 'center-crop']).default('none'),
  /** Fraction held out for validation when the format gives no split. */
  valFraction: z.number().min(0).max(0.5).default(0.1),
  seed: z.number().int().min(0).max(2 ** 31 - 1).default(0),
});
export type DatasetVersionOptions = z.infer<typeof datasetVersionOptions>;

export interface ShardInfo {
  key: string;
  count: number;
  bytes: number;
  sha256: string;
}

export interface SplitManifest {
  count: number;
  /** Images per class, in the order of `classes` (empty when unlabeled). */
  classCounts: number[];
  shards: ShardInfo[];
}

export interface DatasetManifest {
  manifestVersion: 1;
  format: DatasetFormat;
  height: number;
  width: number;
  channels: 1 | 3;
  /** Class names; empty when unlabeled. */
  classes: string[];
  splits: { train: SplitManifest; val?: SplitManifest };
  source: { key: string; bytes: number; sha256: string };
  createdAt: string;
  /** Shard file layout, "MMSH/1" (runner/datasets/shardFormat.ts). Optional: added after v1 manifests. */
  shardFormat?: string;
  /** Whether train/val came from the format (IDX t10k, CIFAR test_batch, train/ val/ folders) or a seeded draw. */
  splitSource?: 'format' | 'seeded';
  /** The options the version was ingested with, after defaults (image size, resize, seed, valFraction). */
  options?: DatasetVersionOptions;
}
