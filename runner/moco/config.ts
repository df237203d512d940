/**
 * The trainer's configuration. Field names match the pretrain job spec (contracts/jobSpec.ts)
 * where they overlap, so the worker passes the user's spec through; `resolveTrainConfig` fills
 * every default that depends on the architecture or the dataset (MoCo v3 reference values,
 * DESIGN.md section 3) and returns a config with no optional fields left.
 */
import type { Arch } from '../../contracts/jobSpec.js';

export type { Arch };
export type PosEmbed = 'sincos' | 'learned' | 'none';
export type Pooling = 'cls' | 'gap' | 'gap_no_ln';
export type OptimizerName = 'adamw' | 'lars';
/** The self-supervised objective: MoCo v3 (default), or the SimCLR / BYOL baselines on the same backbone. */
export type Method = 'mocov3' | 'simclr' | 'byol';
export const METHODS: readonly Method[] = ['mocov3', 'simclr', 'byol'];

export interface ModelConfig {
  arch: Arch;
  imageSize: number;
  patch: number;
  dim: number;
  depth: number;
  heads: number;
  posEmbed: PosEmbed;
  pooling: Pooling;
  freezePatchProjection: boolean;
}

export interface MocoConfig {
  temperature: number;
  momentum: number;
  momentumSchedule: 'cosine' | 'constant';
  projector: { layers: number; hiddenDim: number; outDim: number };
  predictor: { enabled: boolean; layers: number; hiddenDim: number };
}

export interface OptimConfig {
  name: OptimizerName;
  /** Base learning rate; the run uses lr × batch / 256. */
  lr: number;
  weightDecay: number;
  batch: number;
  /** Queries run in micro-batches of this size (and keys in chunks of it); must divide batch. */
  microBatch: number;
  warmupEpochs: number;
  betas: [number, number];
  eps: number;
  clipGradNorm: number | null;
}

export interface AugmentConfig {
  cropMinScale: number;
  colorJitterProb: number;
  grayscaleProb: number;
  blurProb: [number, number];
  solarizeProb: [number, number];
  flipProb: number;
}

export interface TrainConfig {
  method: Method;
  model: ModelConfig;
  moco: MocoConfig;
  optim: OptimConfig;
  augment: AugmentConfig;
  epochs: number;
  maxSteps: number | null;
  checkpointEvery: number;
  seed: number;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends (infer _U)[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K] };

/** What a caller passes: any subset (a job spec's pretrain fields fit as they are). */
export type TrainConfigInput = DeepPartial<Omit<TrainConfig, 'maxSteps' | 'optim'>> & {
  maxSteps?: number | null;
  optim?: DeepPartial<Omit<OptimConfig, 'clipGradNorm'>> & { clipGradNorm?: number | null };
};

/** ViT presets: [dim, depth, heads] (MoCo v3's ViT-S has 12 heads, not DeiT's 6). */
export const VIT_PRESETS = {
  vit_tiny: [192, 12, 3],
  vit_small: [384, 12, 12],
  vit_base: [768, 12, 12],
} as const;

export function isVit(arch: Arch): arch is keyof typeof VIT_PRESETS {
  return arch in VIT_PRESETS;
}

/** The dataset facts the defaults depend on. */
export interface DatasetShape {
  height: number;
  width: number;
  size: number;
}

export function resolveTrainConfig(input: TrainConfigInput, dataset: DatasetShape): TrainConfig {
  const m = input.model ?? {};
  const arch: Arch = m.arch ?? 'vit_small';
  const vit = isVit(arch);
  const imageSize = m.imageSize ?? Math.min(dataset.height, dataset.width);
  const [presetDim, presetDepth, presetHeads] = vit ? VIT_PRESETS[arch] : [0, 0, 0];
  const model: ModelConfig = {
    arch,
    imageSize,
    // Small images need small patches (e.g. patch 4 on 32×32), with the same structure.
    patch: m.patch ?? (imageSize <= 64 ? 4 : 16),
    dim: m.dim ?? presetDim,
    depth: m.depth ?? presetDepth,
    heads: m.heads ?? presetHeads,
    posEmbed: m.posEmbed ?? 'sincos',
    pooling: m.pooling ?? 'cls',
    freezePatchProjection: m.freezePatchProjection ?? true,
  };
  const method: Method = input.method ?? 'mocov3';
  const mc = input.moco ?? {};
  const moco: MocoConfig = {
    // SimCLR: 0.2 as in MoCo v3's framework comparison (SimCLR v1's main runs used 0.5); docs/trainer.md.
    temperature: mc.temperature ?? (method === 'simclr' ? 0.2 : vit ? 0.2 : 1.0),
    // BYOL's target network starts at 0.996 (BYOL §3.2); MoCo v3's at 0.99.
    momentum: mc.momentum ?? (method === 'byol' ? 0.996 : 0.99),
    momentumSchedule: mc.momentumSchedule ?? 'cosine',
    projector: {
      layers: mc.projector?.layers ?? (vit ? 3 : 2),
      hiddenDim: mc.projector?.hiddenDim ?? 4096,
      outDim: mc.projector?.outDim ?? 256,
    },
    predictor: {
      // SimCLR has no predictor; MoCo v3 and BYOL have one.
      enabled: mc.predictor?.enabled ?? method !== 'simclr',
      layers: mc.predictor?.layers ?? 2,
      hiddenDim: mc.predictor?.hiddenDim ?? 4096,
    },
  };
  const o = input.optim ?? {};
  const name: OptimizerName = o.name ?? (vit ? 'adamw' : 'lars');
  const epochs = input.epochs ?? 100;
  const batch = o.batch ?? 256;
  // Reference warmup: 40 of 300 epochs (ViT), 10 of 100 (ResNet); shorter runs keep the proportion.
  const warmupDefault = vit ? Math.min(40, (epochs * 40) / 300) : Math.min(10, epochs / 10);
  const optim: OptimConfig = {
    name,
    lr: o.lr ?? (name === 'adamw' ? 1.5e-4 : 0.6),
    weightDecay: o.weightDecay ?? (name === 'adamw' ? 0.1 : 1e-6),
    batch,
    microBatch: o.microBatch ?? batch,
    warmupEpochs: o.warmupEpochs ?? warmupDefault,
    betas: (o.betas as [number, number] | undefined) ?? [0.9, 0.999],
    eps: o.eps ?? 1e-8,
    clipGradNorm: o.clipGradNorm ?? null,
  };
  const a = input.augment ?? {};
  const augment: AugmentConfig = {
    cropMinScale: a.cropMinScale ?? 0.08,
    colorJitterProb: a.colorJitterProb ?? 0.8,
    grayscaleProb: a.grayscaleProb ?? 0.2,
    blurProb: (a.blurProb as [number, number] | undefined) ?? [1.0, 0.1],
    solarizeProb: (a.solarizeProb as [number, number] | undefined) ?? [0, 0.2],
    flipProb: a.flipProb ?? 0.5,
  };
  const config: TrainConfig = {
    method,
    model,
    moco,
    optim,
    augment,
    epochs,
    maxSteps: input.maxSteps ?? null,
    checkpointEvery: input.checkpointEvery ?? 500,
    seed: input.seed ?? 0,
  };
  validateTrainConfig(config, dataset);
  return config;
}

/** Errors a user can act on, named by field; thrown before any tensor is allocated. */
export function validateTrainConfig(c: TrainConfig, dataset: DatasetShape): void {
  const problems: string[] = [];
  const { model, optim } = c;
  if (isVit(model.arch)) {
    if (model.imageSize % model.patch !== 0) problems.push(`model.patch ${model.patch} must divide model.imageSize ${model.imageSize}`);
    if (model.dim % model.heads !== 0) problems.push(`model.heads ${model.heads} must divide model.dim ${model.dim}`);
    if (model.posEmbed === 'sincos' && model.dim % 4 !== 0) problems.push(`model.dim ${model.dim} must be a multiple of 4 for sin-cos position embedding`);
  }
  if (optim.batch % optim.microBatch !== 0) problems.push(`optim.microBatch ${optim.microBatch} must divide optim.batch ${optim.batch}`);
  if (optim.microBatch < 2) problems.push('optim.microBatch must be at least 2 (BatchNorm in the heads needs two samples)');
  if (dataset.size < optim.batch) problems.push(`the dataset holds ${dataset.size} examples, fewer than optim.batch ${optim.batch}`);
  if (c.moco.projector.layers < 1 || c.moco.predictor.layers < 1) problems.push('head layers must be at least 1');
  if (!METHODS.includes(c.method)) problems.push(`method ${JSON.stringify(c.method)} must be one of ${METHODS.join(', ')}`);
  if (c.method === 'simclr') {
    if (c.moco.predictor.enabled) problems.push('moco.predictor.enabled must be false with method simclr (SimCLR has no predictor)');
    // NT-Xent couples every pair of the 2N views: the batch cannot be split into independent shares.
    if (optim.microBatch !== optim.batch) problems.push(`optim.microBatch ${optim.microBatch} must equal optim.batch ${optim.batch} with method simclr`);
  }
  if (problems.length) throw new RangeError(`invalid training config: ${problems.join('; ')}`);
}

/** Steps per epoch: the reference drops the last incomplete batch. */
export function stepsPerEpoch(c: TrainConfig, datasetSize: number): number {
  return Math.floor(datasetSize / c.optim.batch);
}

/** Total steps of the schedules (epochs × steps per epoch), and where the run stops. */
export function totalSteps(c: TrainConfig, datasetSize: number): { scheduleSteps: number; stopAt: number } {
  const scheduleSteps = c.epochs * stepsPerEpoch(c, datasetSize);
  return { scheduleSteps, stopAt: c.maxSteps === null ? scheduleSteps : Math.min(c.maxSteps, scheduleSteps) };
}
