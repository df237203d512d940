/**
 * BYOL (Grill et al. 2020, arXiv:2006.07733), as a baseline on MoCo v3's backbone, heads and data
 * path. Its Algorithm 1, for two views of a batch:
 *
 *   update the target: ξ ← τ·ξ + (1−τ)·θ            (τ from 0.996 to 1 on a half-cosine, §3.2)
 *   z'1, z'2 = g_ξ(f_ξ(x1)), g_ξ(f_ξ(x2))           (target network, no gradient)
 *   p1, p2 = q_θ(g_θ(f_θ(x1))), q_θ(g_θ(f_θ(x2)))  (online network with its predictor)
 *   L = ‖p̂1 − ẑ'2‖² + ‖p̂2 − ẑ'1‖² = (2 − 2·cos(p1, z'2)) + (2 − 2·cos(p2, z'1)), batch means
 *
 * The online/target pair is MoCo v3's query/momentum encoder, so the step is MoCo v3's with the
 * normalised MSE in place of the contrastive loss (no negatives, no temperature). The heads are
 * MoCo v3's shapes (`moco.projector`, `moco.predictor`); BYOL's own are 2-layer MLPs without a
 * last BatchNorm. Micro-batches split it exactly: the loss is a mean of per-image terms.
 */
import * as tf from '@tensorflow/tfjs';
import { l2Normalize } from '../loss.js';
import { momentumEncoderStep, type StepFunction } from '../step.js';

/**
 * One micro-batch's share of one direction's batch mean of 2 − 2·cos(p_i, z'_i): predictions
 * p [mb, d] (raw) against the rows offset… of the normalised targets [N, d].
 */
export function byolPart(p: tf.Tensor2D, targets: tf.Tensor2D, offset: number): tf.Scalar {
  const mb = p.shape[0];
  const N = targets.shape[0];
  const t = offset === 0 && mb === N ? targets : tf.slice(targets, [offset, 0], [mb, -1]);
  const cosine = tf.sum(tf.mul(l2Normalize(p), t), 1);
  return tf.mul(tf.sum(tf.sub(2, tf.mul(2, cosine))), 1 / N) as tf.Scalar;
}

/** One direction over the whole batch: mean over i of 2 − 2·cos(p_i, z_i). */
export function byolLoss(p: tf.Tensor2D, z: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => byolPart(p, l2Normalize(z), 0));
}

export const byolStep: StepFunction = (model, optimizer, x1, x2, o) =>
  momentumEncoderStep(model, optimizer, x1, x2, o, { prepareTargets: l2Normalize, lossPart: byolPart });
