/**
 * SimCLR (Chen, Kornblith, Norouzi, Hinton 2020, arXiv:2002.05709), as a baseline on MoCo v3's
 * backbone, heads and data path. Its Algorithm 1, for a batch of N images and two views:
 *
 *   z1, z2 = g(f(x1)), g(f(x2))                 (one encoder for both views: no momentum encoder)
 *   s_ij = ẑ_i·ẑ_j / τ over the 2N normalised outputs
 *   ℓ(i, j) = −log( exp(s_ij) / Σ_{k≠i} exp(s_ik) )     (NT-Xent: 1 positive, 2N−2 negatives)
 *   L = 1/(2N) Σ_k [ℓ(2k−1, 2k) + ℓ(2k, 2k−1)]
 *
 * No predictor, no momentum encoder. The loss is the paper's (a mean over the 2N anchors, no 2τ
 * factor). τ defaults to 0.2 (config.ts): the value MoCo v3's comparison of frameworks used; SimCLR
 * v1's main runs used 0.5 (`moco.temperature` sets it). Every pair of the batch is coupled, so the
 * batch is one piece (optim.microBatch must equal optim.batch). The projector is MoCo v3's
 * (`moco.projector`), so that only the objective differs from MoCo v3.
 */
import * as tf from '@tensorflow/tfjs';
import { l2Normalize } from '../loss.js';
import { dense } from '../ops.js';
import { applyGradients, lossAndGradients, type StepFunction } from '../step.js';

/** NT-Xent over the 2N outputs of the two views z1, z2 [N, d] (raw; normalised here). */
export function ntXentLoss(z1: tf.Tensor2D, z2: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => {
    const N = z1.shape[0];
    const z = l2Normalize(tf.concat([z1, z2], 0));
    const similarity = tf.mul(dense(z, tf.transpose(z)), 1 / temperature);
    // k ≠ i: an image is never its own negative (its logit pushed to −∞ in effect).
    const logits = tf.sub(similarity, tf.mul(tf.eye(2 * N), 1e9));
    // The positive of view-1 image i is row N+i, and of view-2 image i row i.
    const positives = tf.oneHot(tf.concat([tf.range(N, 2 * N, 1, 'int32'), tf.range(0, N, 1, 'int32')]), 2 * N);
    return tf.mean(tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), positives), 1))) as tf.Scalar;
  });
}

export const simclrStep: StepFunction = (model, optimizer, x1, x2, o) => {
  const tau = model.config.moco.temperature;
  const bnStats = {};
  const { loss, grads } = lossAndGradients(model, bnStats, (encode) => ntXentLoss(encode(x1), encode(x2), tau));
  return applyGradients(model, optimizer, grads, loss, bnStats, o);
};
