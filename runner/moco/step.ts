/**
 * One MoCo v3 training step, following the paper's Algorithm 1:
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
 */
import * as tf from '@tensorflow/tfjs';
import { contrastiveHits, contrastivePart, prepareKeys } from './loss.js';
import { keyForward, momentumUpdate, queryForward, trainableNames, type MocoModel } from './model.js';
import { clipByGlobalNorm, globalNorm, type Optimizer } from './optim.js';
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
  /** Share of the 2N queries whose own key scores highest among the batch's N keys (chance 1/N). */
  contrastiveTop1: number;
  /** Global gradient norm over all trained tensors (before clipping). */
  gradNorm: number;
  /** Gradient norm of the patch projection (null when frozen or not a ViT). */
  gradNormPatchProjection: number | null;
  /** Gradient norm of the last transformer block / the last ResNet stage. */
  gradNormLastBlock: number;
}

/** Runs f on the rows [start, start+size) of x (no copy when that is all of x). */
function rows(x: tf.Tensor4D, start: number, size: number): tf.Tensor4D {
  return start === 0 && size === x.shape[0] ? x : tf.slice(x, [start, 0, 0, 0], [size, -1, -1, -1]);
}

/** All keys of one view: momentum encoder in chunks, normalised, transposed to [dim, N]. */
function allKeys(model: MocoModel, x: tf.Tensor4D, chunk: number): tf.Tensor2D {
  return tf.tidy(() => {
    const N = x.shape[0];
    const parts: tf.Tensor2D[] = [];
    for (let s = 0; s < N; s += chunk) parts.push(keyForward(model, rows(x, s, Math.min(chunk, N - s))));
    return prepareKeys(parts.length === 1 ? parts[0] : tf.concat(parts, 0));
  });
}

function lastBlockPrefix(model: MocoModel): string {
  const c = model.config.model;
  return c.arch.startsWith('vit') ? `backbone.blocks.${c.depth - 1}.` : 'backbone.layer4.';
}

/**
 * One step on the views x1, x2 [N, S, S, 3]. Throws TrainingDivergedError (before touching the
 * parameters) when the loss is not finite. Returns the new optimizer-updated model in place.
 */
export function mocoStep(model: MocoModel, optimizer: Optimizer, x1: tf.Tensor4D, x2: tf.Tensor4D, o: { step: number; lr: number; momentum: number }): StepResult {
  const c = model.config;
  const N = x1.shape[0];
  const mb = Math.min(c.optim.microBatch, N);
  const tau = c.moco.temperature;

  momentumUpdate(model, o.momentum);
  const k1 = allKeys(model, x1, mb);
  const k2 = allKeys(model, x2, mb);

  const names = trainableNames(model);
  const fixed: Params = {};
  for (const [n, t] of Object.entries(model.query)) if (!names.includes(n)) fixed[n] = t;
  const bnStats: Params = {};
  let grads: Params | null = null;
  let loss = 0;
  let hits = 0;
  // The two directions are independent terms of the loss: each gets its own backward pass, so
  // only one view's activations are alive at a time (half the peak memory, same gradient).
  const directions: [tf.Tensor4D, tf.Tensor2D][] = [
    [x1, k2],
    [x2, k1],
  ];
  for (let s = 0; s < N; s += mb) {
    for (const [x, keys] of directions) {
      let hitCount: tf.Scalar | undefined;
      const { value, grads: g } = tf.tidy(() => {
        const qx = rows(x, s, mb);
        const lossOf = (...trained: tf.Tensor[]) => {
          const p: Params = { ...fixed };
          names.forEach((n, i) => (p[n] = trained[i]));
          const q = queryForward(model, p, qx, bnStats);
          hitCount = tf.keep(contrastiveHits(q, keys, s));
          return contrastivePart(q, keys, s, tau);
        };
        return tf.valueAndGrads(lossOf)(names.map((n) => model.query[n]));
      });
      loss += value.dataSync()[0];
      value.dispose();
      const counted = hitCount as tf.Scalar | undefined;
      if (counted) {
        hits += counted.dataSync()[0];
        counted.dispose();
      }
      if (grads === null) grads = Object.fromEntries(names.map((n, i) => [n, g[i]]));
      else {
        const acc: Params = grads;
        names.forEach((n, i) => {
          const sum = tf.add(acc[n], g[i]);
          acc[n].dispose();
          g[i].dispose();
          acc[n] = sum;
        });
      }
    }
  }
  k1.dispose();
  k2.dispose();
  let g = grads as Params;

  if (!Number.isFinite(loss)) {
    Object.values(g).forEach((t) => t.dispose());
    Object.values(bnStats).forEach((t) => t.dispose());
    throw new TrainingDivergedError(o.step, loss);
  }

  const gradNorm = globalNorm(g);
  const patchNames = names.filter((n) => n.startsWith('backbone.patch_embed.'));
  const result: StepResult = {
    loss,
    contrastiveTop1: hits / (2 * N),
    gradNorm,
    gradNormPatchProjection: patchNames.length ? globalNorm(g, patchNames) : null,
    gradNormLastBlock: globalNorm(g, names.filter((n) => n.startsWith(lastBlockPrefix(model)))),
  };
  if (c.optim.clipGradNorm !== null) g = clipByGlobalNorm(g, c.optim.clipGradNorm, gradNorm);

  const trained: Params = {};
  for (const n of names) trained[n] = model.query[n];
  const updated = optimizer.apply(trained, g, o.lr);
  Object.values(g).forEach((t) => t.dispose());
  Object.assign(model.query, updated);
  // BatchNorm running statistics of the query backbone (ResNet), from this step's forwards.
  for (const [n, t] of Object.entries(bnStats)) {
    const full = 'backbone.' + n;
    model.query[full].dispose();
    model.query[full] = t;
  }
  return result;
}
