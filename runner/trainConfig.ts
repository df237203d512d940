/**
 * From what a user submits (contracts/jobSpec.ts) and what the dataset holds (its manifest) to what
 * the trainer runs. The architecture-dependent defaults (τ 0.2 for ViT and 1.0 for ResNet, AdamW vs
 * LARS and their lr/wd, 3 vs 2 projector layers, patch 4 on images of 64 px and less, warmup) are
 * the trainer's own `resolveTrainConfig`, so a CLI or a test calling the trainer directly gets the
 * same run; this module adds what only the service knows: the dataset's shape and the job's limits.
 * Every problem is a RangeError naming the spec field, which fails the job without a retry.
 */
import type { DatasetManifest } from '../contracts/datasetSpec.js';
import type { PretrainSpec, ProbeSpec } from '../contracts/jobSpec.js';
import { refuseFootprint } from '../contracts/footprint.js';
import { planRun, resolveTrainConfigWithSources, type TrainConfig, type ValueSource } from './moco/config.js';
import { DEFAULT_PROTOCOL, type EvalProtocol } from './moco/protocol.js';

/**
 * `memoryBytes`: what this runner offers a run (RUNNER_MEMORY_MB); a spec estimated above it at the
 * dataset's real image size is refused here (the API only had a lower bound without imageSize).
 */
export function buildTrainConfig(spec: PretrainSpec, manifest: DatasetManifest, memoryBytes?: number): TrainConfig {
  return buildTrainConfigWithSources(spec, manifest, memoryBytes).config;
}

/** The resolved config and, per field, where its value came from (kept with the job as an event). */
export function buildTrainConfigWithSources(
  spec: PretrainSpec,
  manifest: DatasetManifest,
  memoryBytes?: number,
): { config: TrainConfig; sources: Record<string, ValueSource> } {
  const datasetSide = Math.min(manifest.height, manifest.width);
  if (memoryBytes !== undefined) {
    const why = refuseFootprint(spec, spec.model.imageSize ?? datasetSide, memoryBytes, manifest.channels);
    if (why) throw new RangeError(why);
  }
  if (spec.model.imageSize !== undefined && spec.model.imageSize > datasetSide) {
    throw new RangeError(`model.imageSize ${spec.model.imageSize} is larger than the dataset's ${manifest.height}×${manifest.width} images`);
  }
  const resolved = resolveTrainConfigWithSources(
    {
      method: spec.method,
      model: spec.model,
      moco: spec.moco,
      optim: spec.optim,
      augment: spec.augment,
      epochs: spec.epochs,
      maxSteps: spec.maxSteps ?? null,
      budget: spec.budget ?? null,
      monitor: spec.monitor,
      checkpointEvery: spec.checkpointEvery,
      seed: spec.seed,
    },
    { height: manifest.height, width: manifest.width, size: manifest.splits.train.count, channels: manifest.channels, numClasses: manifest.classes.length },
  );
  const config = resolved.config;
  if (planRun(config, manifest.splits.train.count).totalSteps < 1) {
    throw new RangeError(`the run would train 0 steps (dataset of ${manifest.splits.train.count} images, optim.batch ${config.optim.batch})`);
  }
  return resolved;
}

/**
 * The evaluation protocol of a probe job (linear probe: SGD momentum 0.9, no weight decay, cosine,
 * on standardized features; lr chosen on held-out training images), stored with its result.
 */
export function buildProbeConfig(spec: ProbeSpec, manifest: DatasetManifest): EvalProtocol {
  const trainCount = manifest.splits.train.count;
  if (trainCount < 1) throw new RangeError('the probe dataset has no training images');
  return {
    ...DEFAULT_PROTOCOL,
    epochs: spec.epochs,
    // A batch larger than the split would train on nothing: use the whole split as one batch.
    batch: Math.min(spec.batch, trainCount),
    seed: spec.seed,
    lrCandidates: spec.lr !== undefined ? [spec.lr] : (spec.lrCandidates ?? DEFAULT_PROTOCOL.lrCandidates),
    heldOutFraction: spec.heldOutFraction,
    readout: { lastBlocks: spec.readout.lastBlocks },
    knn: { ...DEFAULT_PROTOCOL.knn, k: spec.knn.k },
    baselines: spec.baselines,
  };
}
