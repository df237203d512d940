/**
 * The evaluation protocol of a probe job, with its baselines. For each subject (the pretrained
 * backbone, the same architecture at its random initialisation with the run's seed, and raw
 * pixels) the same protocol runs:
 *
 *   features   = readout(frozen backbone, inference mode)    (class tokens of the last n blocks)
 *   lr         = argmax over candidates of top-1 on a held-out part of the TRAINING split,
 *                a linear layer trained on the rest (features standardized with that rest's stats)
 *   classifier = linear layer on the whole training split (standardized with its stats), that lr
 *   report     = train and evaluation top-1 / top-5; cosine kNN top-1 / top-5 on the features
 *
 * The evaluation split is read once, after every choice is made: nothing it holds can steer them.
 */
import type { ImageDataset } from './dataset.js';
import { effectiveReadout } from './backbone.js';
import { readBackbone, type BackboneFiles } from './checkpoint.js';
import type { ModelConfig } from './config.js';
import { initialBackbone } from './model.js';
import { disposeParams, type Params } from './params.js';
import { extractFeatures, knnOnFeatures, trainLinear, type EvalHooks, type Features } from './probe.js';
import { Prng, mixSeed } from './rng.js';
import { DEFAULT_PROTOCOL, type EvalProtocol } from './protocol.js';

export { DEFAULT_PROTOCOL, PROTOCOL_NAME, type EvalProtocol } from './protocol.js';

export interface LinearReport {
  top1: number;
  top5: number;
  trainTop1: number;
  trainTop5: number;
  selectedLr: number;
  /** Held-out (training split) top-1 of each candidate lr. */
  lrSelection: { lr: number; heldOutTop1: number }[];
}

export interface SubjectReport {
  featureDim: number;
  linear: LinearReport;
  knn: { top1: number; top5: number };
}

export type Subject = 'model' | 'random_init' | 'raw_pixels';

export interface EvaluationReport {
  protocol: EvalProtocol;
  trainExamples: number;
  evalExamples: number;
  numClasses: number;
  subjects: Partial<Record<Subject, SubjectReport>> & { model: SubjectReport };
}

/** Mean and std per dimension (std floored so constant dimensions stay finite). */
export function featureStats(f: Features): { mean: Float32Array; std: Float32Array } {
  const n = f.labels.length;
  const D = f.dim;
  const mean = new Float32Array(D);
  const std = new Float32Array(D);
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) mean[d] += f.features[i * D + d];
  for (let d = 0; d < D; d++) mean[d] /= n;
  for (let i = 0; i < n; i++)
    for (let d = 0; d < D; d++) {
      const v = f.features[i * D + d] - mean[d];
      std[d] += v * v;
    }
  for (let d = 0; d < D; d++) std[d] = Math.max(Math.sqrt(std[d] / n), 1e-6);
  return { mean, std };
}

export function standardized(f: Features, s: { mean: Float32Array; std: Float32Array }): Features {
  const D = f.dim;
  const out = new Float32Array(f.features.length);
  for (let i = 0; i < f.features.length; i++) out[i] = (f.features[i] - s.mean[i % D]) / s.std[i % D];
  return { features: out, labels: f.labels, dim: D };
}

function rowsOf(f: Features, idx: ArrayLike<number>): Features {
  const D = f.dim;
  const out = new Float32Array(idx.length * D);
  const labels = new Int32Array(idx.length);
  for (let j = 0; j < idx.length; j++) {
    out.set(f.features.subarray(idx[j] * D, (idx[j] + 1) * D), j * D);
    labels[j] = f.labels[idx[j]];
  }
  return { features: out, labels, dim: D };
}

/** Chooses the lr on a held-out part of the training features only. */
export async function selectLearningRate(train: Features, classes: number, p: EvalProtocol, hooks: EvalHooks = {}): Promise<{ lr: number; scores: { lr: number; heldOutTop1: number }[] }> {
  if (p.lrCandidates.length === 1) return { lr: p.lrCandidates[0], scores: [] };
  const n = train.labels.length;
  const order = new Prng(mixSeed(p.seed, 0x5e1ec7)).permutation(n);
  const held = Math.max(1, Math.round(n * p.heldOutFraction));
  const fitRaw = rowsOf(train, order.subarray(held));
  const heldRaw = rowsOf(train, order.subarray(0, held));
  const stats = featureStats(fitRaw);
  const fit = standardized(fitRaw, stats);
  const heldOut = standardized(heldRaw, stats);
  const scores: { lr: number; heldOutTop1: number }[] = [];
  for (const lr of p.lrCandidates) {
    const r = await trainLinear(fit, heldOut, classes, { epochs: p.epochs, lr, batch: p.batch, seed: p.seed, featureBatch: 0 }, { signal: hooks.signal });
    scores.push({ lr, heldOutTop1: r.top1 });
  }
  // Best held-out top-1; a tie goes to the smaller lr (the first candidate in ascending order).
  const best = [...scores].sort((a, b) => b.heldOutTop1 - a.heldOutTop1 || a.lr - b.lr)[0];
  return { lr: best.lr, scores };
}

/** The whole protocol on one subject's features. */
export async function evaluateFeatures(train: Features, evalSplit: Features, classes: number, p: EvalProtocol, hooks: EvalHooks = {}): Promise<SubjectReport> {
  const { lr, scores } = await selectLearningRate(train, classes, p, hooks);
  // Only now is the evaluation split touched.
  const stats = featureStats(train);
  const r = await trainLinear(standardized(train, stats), standardized(evalSplit, stats), classes, { epochs: p.epochs, lr, batch: p.batch, seed: p.seed, featureBatch: 0 }, hooks);
  const knn = knnOnFeatures(train, evalSplit, classes, { k: p.knn.k, temperature: p.knn.temperature, featureBatch: 0 });
  return {
    featureDim: train.dim,
    linear: { top1: r.top1, top5: r.top5, trainTop1: r.trainTop1, trainTop5: r.trainTop5, selectedLr: lr, lrSelection: scores },
    knn: { top1: knn.top1, top5: knn.top5 },
  };
}

/** Raw pixels as features: [0, 1] per pixel and channel (the protocol standardizes them). */
export async function pixelFeatures(data: ImageDataset, batch = 1024): Promise<Features> {
  const D = data.height * data.width * data.channels;
  const features = new Float32Array(data.size * D);
  const labels = new Int32Array(data.size);
  for (let start = 0; start < data.size; start += batch) {
    const n = Math.min(batch, data.size - start);
    const r = await data.read(Array.from({ length: n }, (_, i) => start + i));
    for (let i = 0; i < r.pixels.length; i++) features[start * D + i] = r.pixels[i] / 255;
    labels.set(r.labels, start);
  }
  return { features, labels, dim: D };
}

async function backboneSubject(
  backbone: { params: Params; model: ModelConfig },
  data: { train: ImageDataset; val: ImageDataset },
  p: EvalProtocol,
  hooks: EvalHooks,
): Promise<SubjectReport> {
  const opts = { batch: 128, signal: hooks.signal, lastBlocks: p.readout.lastBlocks };
  const train = await extractFeatures(backbone, data.train, opts);
  const val = await extractFeatures(backbone, data.val, opts);
  return evaluateFeatures(train, val, data.train.numClasses, p, hooks);
}

/**
 * A probe job's evaluation: the checkpoint's backbone, and unless `baselines` is off, the same
 * architecture at the run's initialisation (`seed`) and raw pixels, all under one protocol.
 */
export async function evaluateBackbone(
  files: BackboneFiles,
  data: { train: ImageDataset; val: ImageDataset },
  protocol: Partial<EvalProtocol> & { seed: number },
  hooks: EvalHooks & { initSeed?: number } = {},
): Promise<EvaluationReport> {
  const classes = data.train.numClasses;
  if (classes < 2) throw new RangeError('the evaluation needs a labelled training set with at least 2 classes');
  const { meta, params } = readBackbone(files);
  const p: EvalProtocol = { ...DEFAULT_PROTOCOL, ...protocol };
  p.readout = { lastBlocks: effectiveReadout(meta.model, p.readout.lastBlocks) };
  const subjects: Partial<Record<Subject, SubjectReport>> = {};
  try {
    subjects.model = await backboneSubject({ params, model: meta.model }, data, p, hooks);
    hooks.log?.('evaluated', { subject: 'model', linearTop1: subjects.model.linear.top1, knnTop1: subjects.model.knn.top1 });
  } finally {
    disposeParams(params);
  }
  if (p.baselines) {
    // The random-init twin: the backbone the pretrain run started from (its seed, its frozen patch projection).
    const init = initialBackbone(meta.model, hooks.initSeed ?? p.seed);
    try {
      subjects.random_init = await backboneSubject({ params: init, model: meta.model }, data, p, hooks);
      hooks.log?.('evaluated', { subject: 'random_init', linearTop1: subjects.random_init.linear.top1 });
    } finally {
      disposeParams(init);
    }
    subjects.raw_pixels = await evaluateFeatures(await pixelFeatures(data.train), await pixelFeatures(data.val), classes, p, hooks);
    hooks.log?.('evaluated', { subject: 'raw_pixels', linearTop1: subjects.raw_pixels.linear.top1 });
  }
  return {
    protocol: p,
    trainExamples: data.train.size,
    evalExamples: data.val.size,
    numClasses: classes,
    subjects: subjects as EvaluationReport['subjects'],
  };
}
