/**
 * MoCo v3's MLP heads (builder.py `_build_mlp`): every Linear without bias; hidden layers are
 * Linear → BatchNorm1d → ReLU; the last Linear is followed by BatchNorm1d without affine when
 * `lastBn` (the ViT projector and predictor, the ResNet projector; not the ResNet predictor).
 * Parameter names use the indices of the reference nn.Sequential (Linear 0, BN 1, ReLU 2, ...).
 *
 * BatchNorm always uses the statistics of the batch it is given: PyTorch does the same in
 * training, and the heads are never run in inference mode. With micro-batches that batch is the
 * micro-batch of one view (the reference normalises per view over the global batch).
 */
import * as tf from '@tensorflow/tfjs';
import { batchNormTrain, dense } from './ops.js';
import type { Params } from './params.js';
import type { Prng } from './rng.js';

export interface MlpShape {
  layers: number;
  inDim: number;
  hiddenDim: number;
  outDim: number;
  lastBn: boolean;
}

/** Sequential index of the Linear of layer l (each hidden layer spans Linear, BN, ReLU). */
const linearIndex = (l: number) => 3 * l;

export function initMlp(shape: MlpShape, prefix: string, rng: Prng): Params {
  const p: Params = {};
  for (let l = 0; l < shape.layers; l++) {
    const d1 = l === 0 ? shape.inDim : shape.hiddenDim;
    const d2 = l === shape.layers - 1 ? shape.outDim : shape.hiddenDim;
    // PyTorch's Linear default: kaiming_uniform(a=√5) = U(±1/√fan_in); stored [in, out].
    const bound = 1 / Math.sqrt(d1);
    p[`${prefix}${linearIndex(l)}.weight`] = tf.tensor(rng.uniformArray(d1 * d2, -bound, bound), [d1, d2]);
    if (l < shape.layers - 1) {
      p[`${prefix}${linearIndex(l) + 1}.weight`] = tf.ones([d2]);
      p[`${prefix}${linearIndex(l) + 1}.bias`] = tf.zeros([d2]);
    }
  }
  return p;
}

export function mlpForward(p: Params, prefix: string, shape: MlpShape, x: tf.Tensor2D): tf.Tensor2D {
  let h = x;
  for (let l = 0; l < shape.layers; l++) {
    h = dense(h, p[`${prefix}${linearIndex(l)}.weight`] as tf.Tensor2D);
    if (l < shape.layers - 1) {
      const bn = `${prefix}${linearIndex(l) + 1}.`;
      h = tf.relu(batchNormTrain(h, p[bn + 'weight'] as tf.Tensor1D, p[bn + 'bias'] as tf.Tensor1D));
    } else if (shape.lastBn) {
      h = batchNormTrain(h);
    }
  }
  return h;
}
