/**
 * MoCo v3's contrastive loss (builder.py `contrastive_loss`): q and k L2-normalised,
 * logits = q·kᵀ / τ, cross-entropy with the matching key as the label, × 2τ. The symmetrised
 * total is ctr(q1, k2) + ctr(q2, k1), summed. At chance it is about 4τ·ln(N).
 *
 * For exact large batches the queries come in micro-batches: `contrastivePart` is one
 * micro-batch's share of the batch-mean loss against all N keys, so the shares (and their
 * gradients) add up to the full-batch loss.
 */
import * as tf from '@tensorflow/tfjs';
import { dense } from './ops.js';

export function l2Normalize(x: tf.Tensor2D): tf.Tensor2D {
  // F.normalize: x / max(‖x‖, 1e-12)
  return tf.div(x, tf.maximum(tf.norm(x, 'euclidean', 1, true), 1e-12));
}

/** Keys prepared once per step: normalised and transposed to [dim, N], so logits are a plain product. */
export function prepareKeys(k: tf.Tensor2D): tf.Tensor2D {
  return tf.transpose(l2Normalize(k));
}

/**
 * Σ over the micro-batch of CE(q_i · K / τ, label offset+i), divided by the full batch size N,
 * × 2τ. q [mb, d] (raw), keysT [d, N] from prepareKeys.
 */
export function contrastivePart(q: tf.Tensor2D, keysT: tf.Tensor2D, offset: number, temperature: number): tf.Scalar {
  const mb = q.shape[0];
  const N = keysT.shape[1];
  const logits = tf.mul(dense(l2Normalize(q), keysT), 1 / temperature);
  const labels = tf.oneHot(tf.range(offset, offset + mb, 1, 'int32'), N);
  const ceSum = tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), labels)));
  return tf.mul(ceSum, (2 * temperature) / N) as tf.Scalar;
}

/**
 * How many queries of the micro-batch score their own positive key highest among all N keys: the
 * contrastive top-1 (chance is 1/N). q [mb, d] raw, keysT [d, N] from prepareKeys.
 */
export function contrastiveHits(q: tf.Tensor2D, keysT: tf.Tensor2D, offset: number): tf.Scalar {
  const mb = q.shape[0];
  const best = tf.argMax(dense(q, keysT), 1);
  return tf.sum(tf.cast(tf.equal(best, tf.range(offset, offset + mb, 1, 'int32')), 'float32'));
}

/** The whole-batch loss of one direction, ctr(q, k). */
export function contrastiveLoss(q: tf.Tensor2D, k: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => contrastivePart(q, prepareKeys(k), 0, temperature));
}
