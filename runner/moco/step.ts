/**
 * One training step. MoCo v3's follows the paper's Algorithm 1:
 *
 *   update the momentum encoder: f_k ← m·f_k + (1−m)·f_q
 *   k1, k2 = f_k(x1), f_k(x2)                                 (no gradient; in chunks)
 *   q1, q2 = f_q(x1), f_q(x2)                                 (in micro-batches)
 *   loss = ctr(q1, k2) + ctr(q2, k1)                         (each × 2τ)
 *   top-1 = share of queries whose positive key scores highest (a by-product, no gradient)
 *   loss.backward(); update(f_q)                             (gradients accumulated per
 *                                                             micro-batch and direction)
 *
 * Exact large batches: every query of a micro-batch is scored against all N keys of the batch,
 * and each micro-batch contributes its share of the batch-mean loss, so the accumulated gradient
 * is the full batch's. Memory follows the micro-batch. The one difference: BatchNorm in the heads
 * (and in a ResNet backbone) normalises over the micro-batch (and each key chunk), not the batch.
 *
 * The baselines (methods/simclr.ts, methods/byol.ts) reuse the pieces exported here: BYOL has the
 * same structure with another per-direction objective (`momentumEncoderStep`), SimCLR its own
 * loop; every method ends in `applyGradients` (divergence check, per-layer norms, clip, update).
 */
import * as tf from '@tensorflow/tfjs';
import { contrastiveHits, contrastivePart, prepareKeys } from './loss.js';
import { keyForward, momentumUpdate, queryForward, trainableNames, type MocoModel } from './model.js';
import { clipByGlobalNorm, globalNorms, type Optimizer } from './optim.js';
import type { Params } from './params.js';

export class TrainingDivergedError extends Error {
  constructor(
    readonly step: number,
    readonly loss: number,
  ) {
    super(`training diverged at step ${step}: loss is ${loss} (lower the learning rate, or enable optim.clipGradNorm)`);
    this.name = 'TrainingDivergedError';
  }
}

export interface StepResult {
  loss: number;
  /** Share of the 2N queries whose own key scores highest among the batch's N keys (MoCo v3; null for other methods). */
  contrastiveTop1?: number | null;
  /** Global gradient norm over all trained tensors (before clipping). */
  gradNorm: number;
  /** Gradient norm of the patch projection (null when frozen or not a ViT). */
  gradNormPatchProjection: number | null;
  /** Gradient norm of the first transformer block / the first ResNet stage. */
  gradNormFirstBlock: number;
  /** Gradient norm of the last transformer block / the last ResNet stage. */
  gradNormLastBlock: number;
  /** Gradient norm of the projection head. */
  gradNormProjector: number;
  /** Gradient norm of the prediction head (null without one). */
  gradNormPredictor: number | null;
}

export interface StepOptions {
  step: number;
  lr: number;
  /** The momentum encoder's m for this step (ignored by methods without one). */
  momentum: number;
}

export type StepFunction = (model: MocoModel, optimizer: Optimizer, x1: tf.Tensor4D, x2: tf.Tensor4D, o: StepOptions) => StepResult;

/** The rows [start, start+size) of x (no copy when that is all of x). */
export function rows(x: tf.Tensor4D, start: number, size: number): tf.Tensor4D {
  return start === 0 && size === x.shape[0] ? x : tf.slice(x, [start, 0, 0, 0], [size, -1, -1, -1]);
}

/** The momentum encoder's outputs for one view, in chunks, then `prepare`d (normalised...) once. */
function allTargets(model: MocoModel, x: tf.Tensor4D, chunk: number, prepare: (k: tf.Tensor2D) => tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const N = x.shape[0];
    const parts: tf.Tensor2D[] = [];
    for (let s = 0; s < N; s += chunk) parts.push(keyForward(model, rows(x, s, Math.min(chunk, N - s))));
    return prepare(parts.length === 1 ? parts[0] : tf.concat(parts, 0));
  });
}

/**
 * The value and gradients (over the trained tensors) of `objective(encode)`, where `encode(x)` is
 * the query encoder's output for images x under the tensors being differentiated.
 */
export function lossAndGradients(
  model: MocoModel,
  bnStats: Params,
  objective: (encode: (x: tf.Tensor4D) => tf.Tensor2D) => tf.Scalar,
): { loss: number; grads: Params } {
  const names = trainableNames(model);
  const fixed: Params = {};
  for (const [n, t] of Object.entries(model.query)) if (!names.includes(n)) fixed[n] = t;
  const { value, grads } = tf.tidy(() => {
    const lossOf = (...trained: tf.Tensor[]) => {
      const p: Params = { ...fixed };
      names.forEach((n, i) => (p[n] = trained[i]));
      return objective((x) => queryForward(model, p, x, bnStats));
    };
    return tf.valueAndGrads(lossOf)(names.map((n) => model.query[n]));
  });
  const loss = value.dataSync()[0];
  value.dispose();
  return { loss, grads: Object.fromEntries(names.map((n, i) => [n, grads[i]])) };
}

/** acc += g (both keyed by name); disposes what it replaces. Returns g itself when acc is null. */
export function accumulate(acc: Params | null, g: Params): Params {
  if (acc === null) return g;
  for (const [n, t] of Object.entries(g)) {
    const sum = tf.add(acc[n], t);
    acc[n].dispose();
    t.dispose();
    acc[n] = sum;
  }
  return acc;
}

/** The name prefixes of the layers whose gradient norms are reported (the paper's Figure 9: the patch projection spikes first). */
function layerPrefixes(model: MocoModel): { patch: string; first: string; last: string } {
  const c = model.config.model;
  if (c.arch.startsWith('vit')) return { patch: 'backbone.patch_embed.', first: 'backbone.blocks.0.', last: `backbone.blocks.${c.depth - 1}.` };
  return { patch: '', first: 'backbone.layer1.', last: 'backbone.layer4.' };
}

/**
 * The end of every method's step: refuse a non-finite loss (TrainingDivergedError, before touching
 * the parameters), measure the per-layer gradient norms, clip if asked, let the optimizer update
 * the query encoder, and keep the backbone's BatchNorm statistics (ResNet) from this step.
 */
export function applyGradients(model: MocoModel, optimizer: Optimizer, g: Params, loss: number, bnStats: Params, o: StepOptions): StepResult {
  const c = model.config;
  if (!Number.isFinite(loss)) {
    Object.values(g).forEach((t) => t.dispose());
    Object.values(bnStats).forEach((t) => t.dispose());
    throw new TrainingDivergedError(o.step, loss);
  }
  const names = Object.keys(g);
  const layers = layerPrefixes(model);
  const under = (prefix: string) => (prefix ? names.filter((n) => n.startsWith(prefix)) : []);
  const groups = { all: names, patch: under(layers.patch), first: under(layers.first), last: under(layers.last), projector: under('projector.'), predictor: under('predictor.') };
  const norms = globalNorms(g, groups);
  const orNull = (k: keyof typeof groups) => (groups[k].length ? norms[k] : null);
  const gradNorm = norms.all;
  const result: StepResult = {
    loss,
    gradNorm,
    gradNormPatchProjection: orNull('patch'),
    gradNormFirstBlock: norms.first,
    gradNormLastBlock: norms.last,
    gradNormProjector: norms.projector,
    gradNormPredictor: orNull('predictor'),
  };
  if (c.optim.clipGradNorm !== null) g = clipByGlobalNorm(g, c.optim.clipGradNorm, gradNorm);

  const trained: Params = {};
  for (const n of names) trained[n] = model.query[n];
  const updated = optimizer.apply(trained, g, o.lr);
  Object.values(g).forEach((t) => t.dispose());
  Object.assign(model.query, updated);
  for (const [n, t] of Object.entries(bnStats)) {
    const full = 'backbone.' + n;
    model.query[full].dispose();
    model.query[full] = t;
  }
  return result;
}

/** What distinguishes the methods that have a momentum encoder: how targets are prepared and scored. */
export interface MomentumObjective {
  /** Once per view, on the momentum encoder's outputs for the whole batch (e.g. normalise, transpose). */
  prepareTargets(k: tf.Tensor2D): tf.Tensor2D;
  /** How many queries of the micro-batch score their own target highest (the contrastive top-1's numerator). */
  hits?(q: tf.Tensor2D, targets: tf.Tensor2D, offset: number): tf.Scalar;
  /** A micro-batch's share of one direction's batch-mean loss: queries [mb, d] (raw), rows offset… */
  lossPart(q: tf.Tensor2D, targets: tf.Tensor2D, offset: number): tf.Scalar;
}

/**
 * update f_k; t1, t2 = f_k(x1), f_k(x2); loss = part(f_q(x1), t2) + part(f_q(x2), t1), by
 * micro-batch and direction. The two directions are independent terms of the loss: each gets its
 * own backward pass, so only one view's activations are alive at a time (half the peak memory).
 */
export function momentumEncoderStep(model: MocoModel, optimizer: Optimizer, x1: tf.Tensor4D, x2: tf.Tensor4D, o: StepOptions, objective: MomentumObjective): StepResult {
  const N = x1.shape[0];
  const mb = Math.min(model.config.optim.microBatch, N);

  momentumUpdate(model, o.momentum);
  const t1 = allTargets(model, x1, mb, objective.prepareTargets);
  const t2 = allTargets(model, x2, mb, objective.prepareTargets);

  const bnStats: Params = {};
  let grads: Params | null = null;
  let loss = 0;
  let hits = 0;
  const directions: [tf.Tensor4D, tf.Tensor2D][] = [
    [x1, t2],
    [x2, t1],
  ];
  for (let s = 0; s < N; s += mb) {
    for (const [x, targets] of directions) {
      let counted: tf.Scalar | undefined;
      const part = lossAndGradients(model, bnStats, (encode) => {
        const q = encode(rows(x, s, mb));
        if (objective.hits) counted = tf.keep(objective.hits(q, targets, s));
        return objective.lossPart(q, targets, s);
      });
      loss += part.loss;
      grads = accumulate(grads, part.grads);
      const c = counted as tf.Scalar | undefined;
      if (c) {
        hits += c.dataSync()[0];
        c.dispose();
      }
    }
  }
  t1.dispose();
  t2.dispose();
  const result = applyGradients(model, optimizer, grads as Params, loss, bnStats, o);
  return { ...result, contrastiveTop1: objective.hits ? hits / (2 * N) : null };
}

/** MoCo v3: ctr(q1, k2) + ctr(q2, k1) against all N keys of the batch, each × 2τ. */
export const mocoStep: StepFunction = (model, optimizer, x1, x2, o) => {
  const tau = model.config.moco.temperature;
  return momentumEncoderStep(model, optimizer, x1, x2, o, {
    prepareTargets: prepareKeys,
    lossPart: (q, keysT, offset) => contrastivePart(q, keysT, offset, tau),
    hits: contrastiveHits,
  });
};
