import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { bmm, conv2dValid, dense, gelu, layerNorm, batchNormTrain, standardizeFirstAxis, standardizeLastAxis } from '../../../runner/moco/ops.js';
import { checkGradients, randomTensor } from './gradcheck.js';

before(async () => {
  await tf.setBackend('cpu');
});

test('dense (with and without bias) has the gradient of x·W + b', () => {
  const x = randomTensor([3, 4], 1), w = randomTensor([4, 5], 2), b = randomTensor([5], 3);
  checkGradients((x, w, b) => dense(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D), [x, w, b]);
  checkGradients((x, w) => dense(x as tf.Tensor2D, w as tf.Tensor2D), [x, w]);
  const ref = tf.add(tf.matMul(x, w), b);
  assert.ok(tf.max(tf.abs(tf.sub(dense(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D), ref))).dataSync()[0] < 1e-6);
});

test('bmm has the gradient of a batched product', () => {
  checkGradients((a, b) => bmm(a as tf.Tensor3D, b as tf.Tensor3D), [randomTensor([2, 3, 4], 4), randomTensor([2, 4, 2], 5)]);
});

test('layerNorm and its standardisation have the right gradients and values', () => {
  const x = randomTensor([3, 6], 6, 2);
  checkGradients((x) => standardizeLastAxis(x as tf.Tensor2D), [x]);
  checkGradients((x, g, b) => layerNorm(x as tf.Tensor2D, g as tf.Tensor1D, b as tf.Tensor1D), [x, randomTensor([6], 7), randomTensor([6], 8)]);
  const y = standardizeLastAxis(x as tf.Tensor2D);
  const { mean, variance } = tf.moments(y, 1);
  assert.ok(tf.max(tf.abs(mean)).dataSync()[0] < 1e-5);
  assert.ok(tf.max(tf.abs(tf.sub(variance, 1))).dataSync()[0] < 1e-3);
});

test('batchNormTrain standardises columns, with the right gradients', () => {
  const x = randomTensor([5, 3], 9, 2);
  checkGradients((x) => standardizeFirstAxis(x as tf.Tensor2D), [x]);
  checkGradients((x, g, b) => batchNormTrain(x as tf.Tensor2D, g as tf.Tensor1D, b as tf.Tensor1D), [x, randomTensor([3], 10), randomTensor([3], 11)]);
  const { mean } = tf.moments(standardizeFirstAxis(x as tf.Tensor2D), 0);
  assert.ok(tf.max(tf.abs(mean)).dataSync()[0] < 1e-5);
});

test('gelu is exact (erf) GELU with the right gradient', () => {
  const x = randomTensor([10], 12, 2);
  checkGradients((x) => gelu(x), [x]);
  const v = gelu(tf.tensor1d([-1, 0, 1, 2])).dataSync();
  // PyTorch F.gelu: -0.158655, 0, 0.841345, 1.954500
  [-0.158655, 0, 0.841345, 1.9545].forEach((e, i) => assert.ok(Math.abs(v[i] - e) < 1e-5, `${v[i]} vs ${e}`));
});

test('conv2dValid matches tf.conv2d and has the right gradients (stride 1 and 2, uneven sizes)', () => {
  for (const [size, k, stride] of [[5, 3, 1], [6, 3, 2], [7, 1, 2]] as const) {
    const x = randomTensor([2, size, size, 2], 13), w = randomTensor([k, k, 2, 3], 14);
    const ref = tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, 'valid');
    const ours = conv2dValid(x as tf.Tensor4D, w as tf.Tensor4D, stride);
    assert.ok(tf.max(tf.abs(tf.sub(ref, ours))).dataSync()[0] < 1e-5);
    checkGradients((x, w) => conv2dValid(x as tf.Tensor4D, w as tf.Tensor4D, stride), [x, w]);
  }
});
