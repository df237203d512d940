/**
 * ResNet-18 / ResNet-50 as torchvision builds them (zero_init_residual=True, as MoCo v3 uses),
 * for the CNN form of MoCo v3; the classifier `fc` is replaced by the projector, so the backbone
 * ends at global average pooling. Images of 64 px and less get the small-image stem (3×3 conv,
 * stride 1, no max-pool; the CIFAR form used by solo-learn).
 *
 * Convolutions go through conv2dValid (ops.ts), whose filter gradient works on wasm, where
 * Conv2DBackpropFilter is missing. Weights are stored HWIO; the export transposes to OIHW.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from './config.js';
import { batchNormTrain, conv2dValid } from './ops.js';
import type { ParamSet, Params } from './params.js';
import type { Prng } from './rng.js';

const BN_EPS = 1e-5;
const BN_MOMENTUM = 0.1;

interface ResnetLayout {
  bottleneck: boolean;
  blocks: [number, number, number, number];
  expansion: number;
}

function layout(c: ModelConfig): ResnetLayout {
  if (c.arch === 'resnet18') return { bottleneck: false, blocks: [2, 2, 2, 2], expansion: 1 };
  if (c.arch === 'resnet50') return { bottleneck: true, blocks: [3, 4, 6, 3], expansion: 4 };
  throw new RangeError(`not a ResNet: ${c.arch}`);
}

export const smallImageStem = (c: ModelConfig) => c.imageSize <= 64;

export function resnetFeatureDim(c: ModelConfig): number {
  return 512 * layout(c).expansion;
}

/** The convolutions of one residual block: [name suffix, kernel, in, out, stride]. */
function blockConvs(l: ResnetLayout, inC: number, width: number, stride: number): [string, number, number, number, number][] {
  const out = width * l.expansion;
  const convs: [string, number, number, number, number][] = l.bottleneck
    ? [
        ['1', 1, inC, width, 1],
        ['2', 3, width, width, stride], // torchvision v1.5: the stride sits on the 3×3 conv
        ['3', 1, width, out, 1],
      ]
    : [
        ['1', 3, inC, width, stride],
        ['2', 3, width, width, 1],
      ];
  return convs;
}

function forEachBlock(c: ModelConfig, f: (prefix: string, inC: number, width: number, stride: number, downsample: boolean, last: string) => void) {
  const l = layout(c);
  let inC = 64;
  l.blocks.forEach((count, stage) => {
    const width = 64 * 2 ** stage;
    for (let j = 0; j < count; j++) {
      const stride = j === 0 && stage > 0 ? 2 : 1;
      const downsample = j === 0 && (stride !== 1 || inC !== width * l.expansion);
      f(`layer${stage + 1}.${j}.`, inC, width, stride, downsample, l.bottleneck ? '3' : '2');
      inC = width * l.expansion;
    }
  });
}

export function initResnet(c: ModelConfig, rng: Prng): ParamSet {
  const l = layout(c);
  const p: Params = {};
  const frozen = new Set<string>();
  // kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = √(2 / (k·k·out))
  const conv = (name: string, k: number, ci: number, co: number) => {
    p[name] = tf.tensor(rng.normalArray(k * k * ci * co, 0, Math.sqrt(2 / (k * k * co))), [k, k, ci, co]);
  };
  const bn = (name: string, ch: number, zeroGamma = false) => {
    p[name + '.weight'] = zeroGamma ? tf.zeros([ch]) : tf.ones([ch]);
    p[name + '.bias'] = tf.zeros([ch]);
    p[name + '.running_mean'] = tf.zeros([ch]);
    p[name + '.running_var'] = tf.ones([ch]);
    frozen.add(name + '.running_mean');
    frozen.add(name + '.running_var');
  };
  conv('conv1.weight', smallImageStem(c) ? 3 : 7, 3, 64);
  bn('bn1', 64);
  forEachBlock(c, (prefix, inC, width, stride, downsample, last) => {
    for (const [s, k, ci, co] of blockConvs(l, inC, width, stride)) {
      conv(`${prefix}conv${s}.weight`, k, ci, co);
      bn(`${prefix}bn${s}`, co, s === last); // zero_init_residual
    }
    if (downsample) {
      conv(`${prefix}downsample.0.weight`, 1, inC, width * l.expansion);
      bn(`${prefix}downsample.1`, width * l.expansion);
    }
  });
  return { params: p, frozen };
}

function padSpatial(x: tf.Tensor4D, pad: number): tf.Tensor4D {
  return pad === 0 ? x : tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]);
}

/** BatchNorm2d: batch statistics in training (and the running-statistics update), else running. */
function bn2d(p: Params, name: string, x: tf.Tensor4D, training: boolean, bnStats?: Params): tf.Tensor4D {
  const [n, h, w, ch] = x.shape;
  const g = p[name + '.weight'] as tf.Tensor1D;
  const b = p[name + '.bias'] as tf.Tensor1D;
  if (!training) {
    const scale = tf.mul(g, tf.rsqrt(tf.add(p[name + '.running_var'], BN_EPS)));
    return tf.add(tf.mul(tf.sub(x, p[name + '.running_mean']), scale), b);
  }
  const flat = tf.reshape(x, [n * h * w, ch]) as tf.Tensor2D;
  if (bnStats) {
    // PyTorch: running ← (1 − 0.1)·running + 0.1·batch, with the unbiased batch variance.
    const count = n * h * w;
    // Several training forwards in one step chain their updates, as successive PyTorch calls do.
    const { mean, variance } = tf.moments(flat, 0);
    const unbiased = tf.mul(variance, count / Math.max(count - 1, 1));
    for (const [stat, batchValue] of [['.running_mean', mean], ['.running_var', unbiased]] as const) {
      const previous = bnStats[name + stat];
      const next = tf.add(tf.mul(previous ?? p[name + stat], 1 - BN_MOMENTUM), tf.mul(batchValue, BN_MOMENTUM));
      bnStats[name + stat] = tf.keep(next);
      previous?.dispose();
    }
  }
  return tf.reshape(batchNormTrain(flat, g, b, BN_EPS), [n, h, w, ch]);
}

function convBn(p: Params, conv: string, bn: string, x: tf.Tensor4D, stride: number, training: boolean, bnStats?: Params): tf.Tensor4D {
  const w = p[conv] as tf.Tensor4D;
  const k = w.shape[0];
  return bn2d(p, bn, conv2dValid(padSpatial(x, (k - 1) / 2), w, stride), training, bnStats);
}

export function resnetForward(p: Params, images: tf.Tensor4D, c: ModelConfig, training: boolean, bnStats?: Params): tf.Tensor2D {
  const l = layout(c);
  const small = smallImageStem(c);
  let x = tf.relu(convBn(p, 'conv1.weight', 'bn1', images, small ? 1 : 2, training, bnStats));
  // Max-pool 3×3/2 with PyTorch's padding 1; zero padding equals −∞ padding after the ReLU.
  if (!small) x = tf.maxPool(padSpatial(x, 1), 3, 2, 'valid');
  forEachBlock(c, (prefix, inC, width, stride, downsample) => {
    let h: tf.Tensor4D = x;
    const convs = blockConvs(l, inC, width, stride);
    convs.forEach(([s, , , , st], i) => {
      h = convBn(p, `${prefix}conv${s}.weight`, `${prefix}bn${s}`, h, st, training, bnStats);
      if (i < convs.length - 1) h = tf.relu(h);
    });
    const shortcut = downsample ? convBn(p, `${prefix}downsample.0.weight`, `${prefix}downsample.1`, x, stride, training, bnStats) : x;
    x = tf.relu(tf.add(h, shortcut)) as tf.Tensor4D;
  });
  return tf.mean(x, [1, 2]) as tf.Tensor2D;
}
