/**
 * The trainer's configuration. Field names match the pretrain job spec (contracts/jobSpec.ts)
 * where they overlap, so the worker passes the user's spec through; `resolveTrainConfig` fills
 * every default that depends on the architecture or the dataset (MoCo v3 reference values,
 * DESIGN.md section 3) and returns a config with no optional fields left.
 */
import { FIELDS_UNUSED_BY_METHOD, type Arch } from '../../contracts/jobSpec.js';
import type { RunPlan } from './schedule.js';

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
  /** Warmup length in epochs; null = a fixed share of the run (`warmupFraction`), however long it is. */
  warmupEpochs: number | null;
  /** Share of the run's steps spent warming up when warmupEpochs is null (reference: 40/300 ViT, 10/100 ResNet). */
  warmupFraction: number;
  betas: [number, number];
  eps: number;
  clipGradNorm: number | null;
}

export interface AugmentConfig {
  cropMinScale: number;
  colorJitterProb: number;
  /** ColorJitter strengths: brightness, contrast, saturation, hue (reference 0.4, 0.4, 0.2, 0.1). */
  colorJitter: [number, number, number, number];
  grayscaleProb: number;
  blurProb: [number, number];
  solarizeProb: [number, number];
  flipProb: number;
}

/** What the trainer measures while it learns, besides the loss. */
export interface MonitorConfig {
  /** kNN top-1 of the backbone's features on a fixed labeled subset of the training split. */
  knn: boolean;
  /** Every this many steps; null = about 20 evaluations over the run (and one before the first step). */
  knnEvery: number | null;
  /** Labeled training images whose features vote, and held-out training images that are classified. */
  knnBank: number;
  knnQueries: number;
  k: number;
}

export interface TrainConfig {
  method: Method;
  model: ModelConfig;
  moco: MocoConfig;
  optim: OptimConfig;
  augment: AugmentConfig;
  monitor: MonitorConfig;
  epochs: number;
  maxSteps: number | null;
  /** Wall-clock budget for the whole pretraining: the trainer sizes the step count from its throughput. */
  budget: { minutes: number } | null;
  checkpointEvery: number;
  seed: number;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends (infer _U)[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K] };

/** What a caller passes: any subset (a job spec's pretrain fields fit as they are). */
export type TrainConfigInput = DeepPartial<Omit<TrainConfig, 'maxSteps' | 'optim' | 'budget'>> & {
  maxSteps?: number | null;
  budget?: { minutes: number } | null;
  optim?: DeepPartial<Omit<OptimConfig, 'clipGradNorm' | 'warmupEpochs'>> & { clipGradNorm?: number | null; warmupEpochs?: number | null };
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
  /** 1 = grayscale (colour augmentations that need colour are skipped); 3 when omitted. */
  channels?: 1 | 3;
  /** 0 or absent = unlabeled (no kNN monitor by default). */
  numClasses?: number;
}

/** Images this small get the small-image recipe (DESIGN.md section 8). */
export const SMALL_IMAGE_MAX = 64;

/** Where a resolved value came from, recorded with the job so a user sees what ran and why. */
export type ValueSource = 'user' | 'dataset-size default' | 'dataset default' | 'architecture default' | 'reference default' | 'unused by the method';

/** The smallest patch (≥ 4) that keeps a small image at 64 tokens or fewer: 28 px → 4, 32 → 4, 64 → 8. */
export function smallImagePatch(imageSize: number): number {
  for (let p = Math.max(4, Math.ceil(imageSize / 8)); p <= imageSize; p++) if (imageSize % p === 0) return p;
  return imageSize;
}

export function resolveTrainConfig(input: TrainConfigInput, dataset: DatasetShape): TrainConfig {
  return resolveTrainConfigWithSources(input, dataset).config;
}

/**
 * Fills every field the caller left out and says, per field, where its value came from. Explicit
 * fields always win; then the small-image recipe (images ≤ 64 px), the dataset (grayscale,
 * labels), the architecture (ViT or ResNet), and last the MoCo v3 reference.
 */
export function resolveTrainConfigWithSources(input: TrainConfigInput, dataset: DatasetShape): { config: TrainConfig; sources: Record<string, ValueSource> } {
  const sources: Record<string, ValueSource> = {};
  /** The user's value when given, else the first default that applies. */
  function pick<T>(path: string, user: T | undefined, ...defaults: [ValueSource, T | undefined, boolean?][]): T {
    if (user !== undefined) {
      sources[path] = 'user';
      return user;
    }
    for (const [source, value, applies = true] of defaults) {
      if (applies && value !== undefined) {
        sources[path] = source;
        return value;
      }
    }
    throw new Error(`no default for ${path}`);
  }
  const m = input.model ?? {};
  const arch: Arch = pick('model.arch', m.arch, ['reference default', 'vit_small']);
  const vit = isVit(arch);
  const imageSize = pick('model.imageSize', m.imageSize, ['dataset default', Math.min(dataset.height, dataset.width)]);
  const small = imageSize <= SMALL_IMAGE_MAX;
  const gray = dataset.channels === 1;
  const labeled = (dataset.numClasses ?? 0) >= 2;
  const [presetDim, presetDepth, presetHeads] = vit ? VIT_PRESETS[arch] : [0, 0, 0];
  const model: ModelConfig = {
    arch,
    imageSize,
    // Small images keep a few dozen tokens (patch 4 on 28–32 px); else the reference's 16.
    patch: pick('model.patch', m.patch, ['dataset-size default', smallImagePatch(imageSize), small], ['reference default', 16]),
    dim: pick('model.dim', m.dim, ['architecture default', presetDim]),
    depth: pick('model.depth', m.depth, ['architecture default', presetDepth]),
    heads: pick('model.heads', m.heads, ['architecture default', presetHeads]),
    posEmbed: pick('model.posEmbed', m.posEmbed, ['reference default', 'sincos' as const]),
    pooling: pick('model.pooling', m.pooling, ['reference default', 'cls' as const]),
    freezePatchProjection: pick('model.freezePatchProjection', m.freezePatchProjection, ['reference default', true]),
  };
  const method: Method = pick('method', input.method, ['reference default', 'mocov3' as Method]);
  const mc = input.moco ?? {};
  // Heads of 4096 hidden units dwarf a small-image backbone's compute: 1024 there.
  const headHidden = small ? 1024 : 4096;
  const moco: MocoConfig = {
    // SimCLR: 0.2 as in MoCo v3's framework comparison (SimCLR v1's main runs used 0.5); docs/trainer.md.
    temperature: pick('moco.temperature', mc.temperature, ['architecture default', method === 'simclr' ? 0.2 : vit ? 0.2 : 1.0]),
    // BYOL's target network starts at 0.996 (BYOL §3.2); MoCo v3's at 0.99.
    momentum: pick('moco.momentum', mc.momentum, ['reference default', method === 'byol' ? 0.996 : 0.99]),
    momentumSchedule: pick('moco.momentumSchedule', mc.momentumSchedule, ['reference default', 'cosine' as const]),
    projector: {
      layers: pick('moco.projector.layers', mc.projector?.layers, ['architecture default', vit ? 3 : 2]),
      hiddenDim: pick('moco.projector.hiddenDim', mc.projector?.hiddenDim, [small ? 'dataset-size default' : 'reference default', headHidden]),
      outDim: pick('moco.projector.outDim', mc.projector?.outDim, ['reference default', 256]),
    },
    predictor: {
      // SimCLR has no predictor; MoCo v3 and BYOL have one.
      enabled: pick('moco.predictor.enabled', mc.predictor?.enabled, ['reference default', method !== 'simclr']),
      layers: pick('moco.predictor.layers', mc.predictor?.layers, ['reference default', 2]),
      hiddenDim: pick('moco.predictor.hiddenDim', mc.predictor?.hiddenDim, [small ? 'dataset-size default' : 'reference default', headHidden]),
    },
  };
  const o = input.optim ?? {};
  const name: OptimizerName = pick('optim.name', o.name, ['architecture default', vit ? ('adamw' as const) : ('lars' as const)]);
  const epochs = pick('epochs', input.epochs, ['reference default', 100]);
  const batch = pick('optim.batch', o.batch, ['reference default', 256]);
  const optim: OptimConfig = {
    name,
    // Small images, small models, short runs: ten times the reference base lr (DESIGN.md section 8).
    lr: pick('optim.lr', o.lr, ['dataset-size default', 1.5e-3, small && name === 'adamw'], ['architecture default', name === 'adamw' ? 1.5e-4 : 0.6]),
    weightDecay: pick('optim.weightDecay', o.weightDecay, ['architecture default', name === 'adamw' ? 0.1 : 1e-6]),
    batch,
    microBatch: pick('optim.microBatch', o.microBatch, ['reference default', batch]),
    // null: warm up over a fixed share of whatever length the run turns out to have.
    warmupEpochs: pick<number | null>('optim.warmupEpochs', o.warmupEpochs ?? undefined, ['reference default', null]),
    warmupFraction: pick('optim.warmupFraction', o.warmupFraction, ['architecture default', vit ? 40 / 300 : 10 / 100]),
    betas: pick('optim.betas', o.betas as [number, number] | undefined, ['reference default', [0.9, 0.999] as [number, number]]),
    eps: pick('optim.eps', o.eps, ['reference default', 1e-8]),
    clipGradNorm: pick<number | null>('optim.clipGradNorm', o.clipGradNorm ?? undefined, ['reference default', null]),
  };
  const a = input.augment ?? {};
  const augment: AugmentConfig = {
    // A 0.08 crop of a 28-px image keeps ~8×8 pixels, often background: milder crops for small images.
    cropMinScale: pick('augment.cropMinScale', a.cropMinScale, ['dataset-size default', 0.3, small], ['reference default', 0.08]),
    colorJitterProb: pick('augment.colorJitterProb', a.colorJitterProb, ['reference default', 0.8]),
    // Saturation and hue do nothing on one channel.
    colorJitter: pick('augment.colorJitter', a.colorJitter as [number, number, number, number] | undefined, ['dataset default', [0.4, 0.4, 0, 0] as [number, number, number, number], gray], [
      'reference default',
      [0.4, 0.4, 0.2, 0.1] as [number, number, number, number],
    ]),
    grayscaleProb: pick('augment.grayscaleProb', a.grayscaleProb, ['dataset default', 0, gray], ['reference default', 0.2]),
    // The reference's σ ∈ [0.1, 2] is for 224-px crops; scaled to 28 px it is a no-op at best.
    blurProb: pick('augment.blurProb', a.blurProb as [number, number] | undefined, ['dataset-size default', [0, 0] as [number, number], small], ['reference default', [1.0, 0.1] as [number, number]]),
    solarizeProb: pick('augment.solarizeProb', a.solarizeProb as [number, number] | undefined, ['reference default', [0, 0.2] as [number, number]]),
    flipProb: pick('augment.flipProb', a.flipProb, ['reference default', 0.5]),
  };
  const mon = input.monitor ?? {};
  const monitor: MonitorConfig = {
    knn: pick('monitor.knn', mon.knn, ['dataset default', labeled]),
    knnEvery: pick<number | null>('monitor.knnEvery', mon.knnEvery ?? undefined, ['reference default', null]),
    knnBank: pick('monitor.knnBank', mon.knnBank, ['dataset default', Math.max(1, Math.min(5000, Math.floor(dataset.size * 0.8)))]),
    knnQueries: pick('monitor.knnQueries', mon.knnQueries, ['dataset default', Math.max(1, Math.min(1000, Math.floor(dataset.size * 0.2)))]),
    k: pick('monitor.k', mon.k, ['reference default', 20]),
  };
  const config: TrainConfig = {
    method,
    model,
    moco,
    optim,
    augment,
    monitor,
    epochs,
    maxSteps: pick<number | null>('maxSteps', input.maxSteps ?? undefined, ['reference default', null]),
    budget: pick<{ minutes: number } | null>('budget', input.budget ?? undefined, ['reference default', null]),
    checkpointEvery: pick('checkpointEvery', input.checkpointEvery, ['reference default', 500]),
    seed: pick('seed', input.seed, ['reference default', 0]),
  };
  validateTrainConfig(config, dataset);
  for (const path of FIELDS_UNUSED_BY_METHOD[method]) sources[path] = 'unused by the method';
  return { config, sources };
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
  if (c.monitor.knn && c.monitor.knnBank + c.monitor.knnQueries > dataset.size) {
    problems.push(`monitor.knnBank ${c.monitor.knnBank} + monitor.knnQueries ${c.monitor.knnQueries} exceed the ${dataset.size} training examples`);
  }
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

/**
 * The run's length and warmup before any budget is applied: `epochs` of the dataset, cut by
 * `maxSteps`. A budgeted run starts with this plan (its first few steps measure throughput) and
 * then fixes `totalSteps` from the budget (`planWithTotal`), never above this count.
 */
export function planRun(c: TrainConfig, datasetSize: number): RunPlan {
  const spe = stepsPerEpoch(c, datasetSize);
  const epochSteps = c.epochs * spe;
  const cut = c.maxSteps !== null && c.maxSteps < epochSteps;
  return planWithTotal(c, spe, cut ? (c.maxSteps as number) : epochSteps, cut ? 'maxSteps' : 'epochs');
}

/** The plan for a given step count: warmup as set in epochs, else a share of the run. */
export function planWithTotal(c: TrainConfig, spe: number, totalSteps: number, source: RunPlan['source']): RunPlan {
  const o = c.optim;
  const warmup = o.warmupEpochs !== null ? Math.round(o.warmupEpochs * spe) : Math.round(o.warmupFraction * totalSteps);
  return { totalSteps, warmupSteps: Math.max(0, Math.min(warmup, totalSteps - 1)), stepsPerEpoch: spe, source };
}
