/**
 * The job spec: what a user submits in `POST /v1/jobs`, validated here for the API and read back
 * by the runner. Every object is strict (unknown fields are an error, so a typo never trains the
 * wrong model silently); every number is bounded. Defaults follow the MoCo v3 reference for ViT
 * (DESIGN.md section 3); the runner resolves the ones that depend on the architecture or dataset.
 */
import { z } from 'zod';
import { gateRule } from './gate.js';
import { modelAlias, modelName, modelRef } from './models.js';

export const JOB_TYPES = ['pretrain', 'probe', 'ingest'] as const;
export type JobType = (typeof JOB_TYPES)[number];

export const ARCHS = ['vit_tiny', 'vit_small', 'vit_base', 'resnet18', 'resnet50'] as const;
export type Arch = (typeof ARCHS)[number];

const int = (min: number, max: number) => z.number().int().min(min).max(max);
const positive = (max: number) => z.number().positive().max(max);
const probability = z.number().min(0).max(1);

/** `name@version`, `name@latest` or `name` (= latest ready version). */
export const datasetRef = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}(@(\d{1,6}|latest))?$/, 'must be "name", "name@latest" or "name@N"');

/** A checkpoint of a job: an alias (`latest`, `best`, a user alias) or a version `v3` / `3`. */
export const CHECKPOINT_REF_PATTERN = /^(v?\d{1,6}|[a-z][a-z0-9_-]{0,31})$/;
export const CHECKPOINT_REF_MESSAGE = 'must be a version ("v3") or an alias ("latest", "best")';
export const checkpointRef = z.string().regex(CHECKPOINT_REF_PATTERN, CHECKPOINT_REF_MESSAGE);

export const modelSpec = z.strictObject({
  arch: z.enum(ARCHS).default('vit_small'),
  /** Side of the square training image; defaults to the dataset's. */
  imageSize: int(8, 512).optional(),
  /** ViT patch size; defaults to 16, or 4 for images of 64 px and less. */
  patch: int(1, 64).optional(),
  dim: int(8, 4096).optional(),
  depth: int(1, 48).optional(),
  heads: int(1, 64).optional(),
  posEmbed: z.enum(['sincos', 'learned', 'none']).default('sincos'),
  /** cls: class token after the last LayerNorm; gap: average of patch tokens (with or without that LayerNorm). */
  pooling: z.enum(['cls', 'gap', 'gap_no_ln']).default('cls'),
  /** The random patch projection of MoCo v3: initialised, then frozen. */
  freezePatchProjection: z.boolean().default(true),
});

export const mocoSpec = z.strictObject({
  /** InfoNCE temperature; defaults to 0.2 for ViT and 1.0 for ResNet. */
  temperature: positive(10).optional(),
  /** Initial momentum of the key encoder; rises to 1 on a half-cosine when schedule is cosine. Defaults: 0.99 (MoCo v3), 0.996 (BYOL). */
  momentum: probability.optional(),
  momentumSchedule: z.enum(['cosine', 'constant']).default('cosine'),
  projector: z
    .strictObject({
      layers: int(1, 4).optional(),
      /** Defaults to 4096, or 1024 for images of 64 px and less. */
      hiddenDim: int(8, 16384).optional(),
      outDim: int(8, 4096).default(256),
    })
    .prefault({}),
  predictor: z
    .strictObject({
      /** Defaults to true for MoCo v3 and BYOL; SimCLR has none. */
      enabled: z.boolean().optional(),
      layers: int(1, 4).default(2),
      hiddenDim: int(8, 16384).optional(),
    })
    .prefault({}),
});

export const optimSpec = z
  .strictObject({
    name: z.enum(['adamw', 'lars']).optional(),
    /** Base learning rate: the run uses lr × batch / 256. Defaults: 1.5e-4 (AdamW), 0.6 (LARS). */
    lr: positive(100).optional(),
    weightDecay: z.number().min(0).max(10).optional(),
    batch: int(2, 65536).default(256),
    /** Queries run in micro-batches of this size against all keys of the batch; memory follows it. */
    microBatch: int(2, 65536).optional(),
    warmupEpochs: z.number().min(0).max(10000).optional(),
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
    eps: positive(1).default(1e-8),
    /** Clip the global gradient norm; off by default, as in the reference. */
    clipGradNorm: positive(1e6).optional(),
  })
  .refine((o) => o.microBatch === undefined || (o.microBatch <= o.batch && o.batch % o.microBatch === 0), {
    message: 'microBatch must divide batch',
    path: ['microBatch'],
  });

/**
 * Augmentations. Left out, a field takes the reference value, or the small-image recipe's for images
 * of 64 px and less (crop scale ≥ 0.3, no blur) and the grayscale one for one channel (no grayscale,
 * no saturation or hue jitter); the job's `config-resolved` event says which.
 */
export const augmentSpec = z.strictObject({
  cropMinScale: z.number().gt(0).max(1).optional(),
  colorJitterProb: probability.default(0.8),
  /** ColorJitter strengths: brightness, contrast, saturation, hue (reference 0.4, 0.4, 0.2, 0.1). */
  colorJitter: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1), z.number().min(0).max(1), z.number().min(0).max(0.5)]).optional(),
  grayscaleProb: probability.optional(),
  /** Gaussian blur probability for view 1 and view 2 (reference: 1.0 / 0.1). */
  blurProb: z.tuple([probability, probability]).optional(),
  /** Solarize probability for view 1 and view 2 (reference: 0 / 0.2). */
  solarizeProb: z.tuple([probability, probability]).default([0, 0.2]),
  flipProb: probability.default(0.5),
});

export const webhookSpec = z.strictObject({
  url: z.string().url().max(2048),
  /** Event names (`job.succeeded`, `checkpoint.created`, ...); all when omitted. */
  events: z.array(z.string().min(1).max(64)).max(32).optional(),
});

export const resourcesSpec = z.strictObject({
  /**
   * 0 (CPU only: the run sees no GPU) or 1. tfjs-node-gpu trains on one GPU per process, and a
   * runner gives each run one GPU, so more is refused at submission rather than silently ignored.
   */
  gpus: z
    .number()
    .int()
    .min(0)
    .max(1, { message: 'at most 1: a run trains on one GPU (tfjs-node-gpu uses one GPU per process, and each runner gives a run one GPU)' })
    .default(1),
  backend: z.enum(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'),
});

const common = {
  seed: int(0, 2 ** 31 - 1).default(0),
  resources: resourcesSpec.prefault({}),
  maxRuntimeSeconds: int(10, 30 * 24 * 3600).default(24 * 3600),
  webhook: webhookSpec.optional(),
  /** Free-form labels for the user (CI commit, branch); at most 32. */
  labels: z.record(z.string().max(64), z.string().max(256)).optional(),
};

/**
 * Where weights come from (a probe's source, a pretrain's initFrom): a job's checkpoint
 * (`{ job, checkpoint }`, checkpoint `latest` when omitted) or a model version (`{ model:
 * "fmnist-backbone@production" }`). The API pins what it resolved: `{ job, checkpoint: "v3" }`, plus
 * `model: "name@N"` when a model was named (then job and checkpoint must name that version's).
 */
export const weightsSource = z
  .strictObject({
    job: z.uuid().optional(),
    checkpoint: checkpointRef.optional(),
    model: modelRef.optional(),
  })
  .refine((s) => s.job !== undefined || s.model !== undefined, { message: 'name a job (and optionally a checkpoint) or a model ("name@alias", "name@N")', path: ['job'] })
  .refine((s) => s.job !== undefined || s.checkpoint === undefined, { message: 'a checkpoint belongs to a job: name the job too, or use model', path: ['checkpoint'] });
export type WeightsSource = z.infer<typeof weightsSource>;

/** The self-supervised objective: MoCo v3, or SimCLR / BYOL as baselines on the same backbone and data path. */
export const METHODS = ['mocov3', 'simclr', 'byol'] as const;

/**
 * Spec fields a method resolves but never reads: SimCLR has no momentum encoder and no predictor.
 * Shown as unused (not as the default they hold) wherever resolved values are reported.
 */
export const FIELDS_UNUSED_BY_METHOD: Record<(typeof METHODS)[number], readonly string[]> = {
  mocov3: [],
  byol: [],
  simclr: ['moco.momentum', 'moco.momentumSchedule', 'moco.predictor.layers', 'moco.predictor.hiddenDim'],
};

export const pretrainSpec = z.strictObject({
  type: z.literal('pretrain'),
  dataset: datasetRef,
  method: z.enum(METHODS).default('mocov3'),
  model: modelSpec.prefault({}),
  moco: mocoSpec.prefault({}),
  optim: optimSpec.prefault({}),
  augment: augmentSpec.prefault({}),
  epochs: int(1, 10000).default(100),
  /** Stop after this many steps instead of at the end of `epochs`; warmup, lr and momentum schedules end there. */
  maxSteps: int(1, 100_000_000).optional(),
  /**
   * Wall-clock budget for the whole pretraining. The runner measures its throughput over the first
   * steps, fixes the step count that fits (never more than `epochs` / `maxSteps` allow), records it as
   * a `schedule-fixed` job event and keeps it across resumes; the schedules end at that step.
   */
  budget: z.strictObject({ minutes: z.number().min(0.1).max(30 * 24 * 60) }).optional(),
  /** Watching it learn: kNN top-1 on a fixed labeled subset of the training split, every few steps. */
  monitor: z
    .strictObject({
      /** On by default when the dataset has labels. */
      knn: z.boolean().optional(),
      /** Steps between evaluations; default: about 20 over the run. */
      knnEvery: int(1, 1_000_000).optional(),
      /** Labeled training images that vote (default min(5000, 80 % of the split)). */
      knnBank: int(1, 100_000).optional(),
      /** Held-out training images classified (default min(1000, 20 % of the split)). */
      knnQueries: int(1, 100_000).optional(),
      k: int(1, 1000).optional(),
    })
    .optional(),
  checkpointEvery: int(1, 1_000_000).default(500),
  /** Keep the newest K checkpoint versions (aliased ones are always kept). */
  keepCheckpoints: int(1, 1000).default(3),
  /** Start from another pretrain job's checkpoint (retraining); its architecture must match. */
  initFrom: weightsSource.optional(),
  ...common,
});

/**
 * Register the probed checkpoint as a version of `model` and point `alias` at it, if every gate rule
 * passes (contracts/gate.ts). The decision and both numbers are recorded either way.
 */
export const promoteSpec = z.strictObject({
  model: modelName,
  alias: modelAlias,
  gate: z.array(gateRule).max(8).default([]),
});
export type PromoteSpec = z.infer<typeof promoteSpec>;

export const probeSpec = z.strictObject({
  type: z.literal('probe'),
  source: weightsSource,
  promote: promoteSpec.optional(),
  /** Labeled dataset to probe on; defaults to the pretrain job's dataset. */
  dataset: datasetRef.optional(),
  epochs: int(1, 1000).default(10),
  /**
   * SGD base learning rate (× batch / 256), momentum 0.9, no weight decay, cosine schedule. When
   * omitted, the probe tries `lrCandidates` and keeps the best on a held-out part of the TRAINING
   * split (never the evaluation split); given, it is used as is.
   */
  lr: positive(1000).optional(),
  lrCandidates: z.array(positive(1000)).min(1).max(8).optional(),
  /** Share of the training split held out to choose the lr. */
  heldOutFraction: z.number().min(0.01).max(0.5).default(0.1),
  batch: int(1, 65536).default(256),
  /** Features: the class tokens of the last n blocks, concatenated (DINO's linear evaluation uses 4). */
  readout: z.strictObject({ lastBlocks: int(1, 48).default(1) }).prefault({}),
  /** Cosine kNN on the same features (votes weighted by exp(similarity / 0.07)). */
  knn: z.strictObject({ k: int(1, 1000).default(20) }).prefault({}),
  /** Also evaluate, with the same protocol, the architecture at its random init (same seed) and raw pixels. */
  baselines: z.boolean().default(true),
  ...common,
});

export const jobSpec = z.discriminatedUnion('type', [pretrainSpec, probeSpec]);

export type PretrainSpec = z.infer<typeof pretrainSpec>;
export type ProbeSpec = z.infer<typeof probeSpec>;
export type JobSpec = z.infer<typeof jobSpec>;

/** The spec of an ingest job; created by the API when a dataset version is finalized. */
export interface IngestSpec {
  type: 'ingest';
  datasetId: string;
  datasetVersionId: string;
}

/** Parses `name`, `name@latest`, `name@3`. */
export function parseDatasetRef(ref: string): { name: string; version: number | 'latest' } {
  const [name, v] = ref.split('@') as [string, string | undefined];
  return { name, version: v === undefined || v === 'latest' ? 'latest' : Number(v) };
}
