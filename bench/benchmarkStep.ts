/** The shapes `bench:trainer` measures by default: DESIGN.md's and the small-image recipe's (docs/trainer.md). */
export const BENCHMARK_SHAPES = {
  default: { img: 32, patch: 4, dim: 192, depth: 6, heads: 3, batch: 64, hidden: 1024, out: 256 },
  small: { img: 28, patch: 7, dim: 64, depth: 4, heads: 4, batch: 256, hidden: 512, out: 128 },
} satisfies Record<string, BenchmarkShape>;

/** The shape's command-line options, which bench/trainer-step.ts and bench/trainer-profile.ts both take. */
export const SHAPE_KEYS = ['img', 'patch', 'dim', 'depth', 'heads', 'batch', 'hidden', 'out'] as const;
export const SHAPE_OPTIONS = {
  img: { type: 'string' },
  patch: { type: 'string' },
  dim: { type: 'string' },
  depth: { type: 'string' },
  heads: { type: 'string' },
  batch: { type: 'string' },
  hidden: { type: 'string' },
  out: { type: 'string' },
} as const;

/** `base` with each shape option given on the command line in place of its value. */
export function withShapeOptions(base: BenchmarkShape, values: Partial<Record<(typeof SHAPE_KEYS)[number], string>>): BenchmarkShape {
  const shape = { ...base };
  for (const k of SHAPE_KEYS) if (values[k] !== undefined) shape[k] = Number(values[k]);
  return shape;
}

/**
 * The benchmark's MoCo v3 step, shared by bench/trainer-step.ts (timing) and
 * bench/trainer-profile.ts (per-kernel profile): a ViT on S×S images with patch p, fixed random
 * views (no augmentation on either side, as in ../shared/baselines/pytorch_moco_step.py), AdamW at
 * the reference lr for the batch, momentum 0.99.
 */
import * as tf from '@tensorflow/tfjs';
import { resolveTrainConfig } from '../runner/moco/config.js';
import { buildMocoModel, type MocoModel } from '../runner/moco/model.js';
import { createOptimizer, type Optimizer } from '../runner/moco/optim.js';
import { Prng } from '../runner/moco/rng.js';
import { mocoStep, type StepResult } from '../runner/moco/step.js';

export interface BenchmarkShape {
  img: number;
  patch: number;
  dim: number;
  depth: number;
  heads: number;
  batch: number;
  hidden: number;
  out: number;
  microBatch?: number;
}

export interface BenchmarkStep {
  model: MocoModel;
  optimizer: Optimizer;
  /** Runs step i of the benchmark on the fixed views. */
  step(i: number): StepResult;
  dispose(): void;
}

export function benchmarkStep(s: BenchmarkShape): BenchmarkStep {
  const config = resolveTrainConfig(
    {
      model: { arch: 'vit_tiny', imageSize: s.img, patch: s.patch, dim: s.dim, depth: s.depth, heads: s.heads },
      moco: { projector: { hiddenDim: s.hidden, outDim: s.out }, predictor: { hiddenDim: s.hidden } },
      optim: { batch: s.batch, microBatch: s.microBatch },
    },
    { height: s.img, width: s.img, size: s.batch },
  );
  const model = buildMocoModel(config);
  const optimizer = createOptimizer(config.optim);
  const rng = new Prng(0);
  const view = () => tf.tensor4d(rng.normalArray(s.batch * s.img * s.img * 3, 0, 1), [s.batch, s.img, s.img, 3]);
  const [x1, x2] = [view(), view()];
  return {
    model,
    optimizer,
    step: (i) => mocoStep(model, optimizer, x1, x2, { step: i, lr: (1.5e-4 * s.batch) / 256, momentum: 0.99 }),
    dispose: () => {
      x1.dispose();
      x2.dispose();
    },
  };
}
