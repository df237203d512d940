/**
 * Upload file on local disk → staged, normalized examples with classes and a split plan. No S3, no
 * Postgres: the part of ingestion that judges the user's data, testable on its own.
 */
import { join } from 'node:path';
import type { DatasetFormat, DatasetVersionOptions } from '../../contracts/datasetSpec.js';
import type { Logger } from '../../common/logger.js';
import { openArchive, type ArchiveKind } from './archive/read.js';
import { DatasetIngestError } from './errors.js';
import { readCifar } from './formats/cifar.js';
import type { ReaderContext, ReaderResult } from './formats/context.js';
import { readIdx } from './formats/idx.js';
import { readImageFolder } from './formats/imageFolder.js';
import { PixelNormalizer, type ImageShape } from './normalize.js';
import { planSplits, type SplitPlan } from './splits.js';
import { StagingFile } from './staging.js';
import { ingestLimits, type IngestLimits } from './limits.js';

export interface ConvertedUpload {
  archiveKind: ArchiveKind;
  shape: ImageShape;
  classes: string[];
  staging: StagingFile;
  plan: SplitPlan;
}

const READERS: Record<DatasetFormat, (ctx: ReaderContext) => Promise<ReaderResult>> = {
  imagefolder: (ctx) => readImageFolder(ctx, true),
  unlabeled: (ctx) => readImageFolder(ctx, false),
  idx: readIdx,
  cifar10: (ctx) => readCifar(ctx, 10),
  cifar100: (ctx) => readCifar(ctx, 100),
};

/** Reads the upload at `path`; the caller disposes `staging` (also on error: it is removed here then). */
export async function convertUpload(args: {
  path: string;
  uploadName: string;
  options: DatasetVersionOptions;
  workDir: string;
  log: Logger;
  /** Caps on what the upload may make us read, decode and stage (defaults: limits.ts). */
  limits?: Partial<IngestLimits>;
}): Promise<ConvertedUpload> {
  const { options } = args;
  const limits = ingestLimits(args.limits);
  const archive = await openArchive(args.path, args.uploadName, limits);
  const staging = await StagingFile.create(join(args.workDir, 'staging.bin'), limits.maxStagedBytes);
  try {
    const normalizer = new PixelNormalizer(options, limits);
    const { classes } = await READERS[options.format]({ archive, uploadName: args.uploadName, normalizer, staging, log: args.log, limits });
    if (staging.count === 0 || !normalizer.target) {
      throw new DatasetIngestError('no_examples', `no ${options.format} examples found`, args.uploadName);
    }
    await staging.flush();
    const plan = planSplits(staging.labels, staging.hints, options.valFraction, options.seed);
    return { archiveKind: archive.kind, shape: normalizer.target, classes, staging, plan };
  } catch (err) {
    await staging.dispose();
    throw err;
  }
}
