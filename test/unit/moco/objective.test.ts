import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { contrastiveLoss, contrastivePart, prepareKeys } from '../../../runner/moco/loss.js';
import { learningRateAt, momentumAt, peakLearningRate } from '../../../runner/moco/schedule.js';
import { createOptimizer } from '../../../runner/moco/optim.js';
import { resolveTrainConfig } from '../../../runner/moco/config.js';
import { randomTensor } from './gradcheck.js';

before(async () => {
  await tf.setBackend('cpu');
});

test('the symmetrised loss is 4τ·ln(N) at chance', () => {
  const tau = 0.2;
  for (const N of [16, 256]) {
    // Keys all alike: every logit ties, so each CE is exactly ln N.
    const q = randomTensor([N, 32], 1) as tf.Tensor2D;
    const k = tf.ones([N, 32]) as tf.Tensor2D;
    const total = contrastiveLoss(q, k, tau).dataSync()[0] + contrastiveLoss(q, k, tau).dataSync()[0];
    assert.ok(Math.abs(total - 4 * tau * Math.log(N)) < 1e-4, `${total} vs ${4 * tau * Math.log(N)}`);
    // Random high-dimensional q, k: close to chance.
    const q2 = randomTensor([N, 256], 2) as tf.Tensor2D, k2 = randomTensor([N, 256], 3) as tf.Tensor2D;
    const r = 2 * contrastiveLoss(q2, k2, tau).dataSync()[0];
    assert.ok(Math.abs(r / (4 * tau * Math.log(N)) - 1) < 0.05, `${r}`);
  }
  // Matching pairs score below chance.
  const q = randomTensor([16, 64], 4) as tf.Tensor2D;
  assert.ok(2 * contrastiveLoss(q, q, tau).dataSync()[0] < 4 * tau * Math.log(16) / 4);
});

test('micro-batch shares add up to the full-batch loss and gradient', () => {
  const q = randomTensor([8, 6], 5), k = randomTensor([8, 6], 6) as tf.Tensor2D;
  const kT = prepareKeys(k);
  const full = tf.valueAndGrad((x: tf.Tensor) => contrastivePart(x as tf.Tensor2D, kT, 0, 0.2))(q);
  const halves = [0, 4].map((s) =>
    tf.valueAndGrad((x: tf.Tensor) => contrastivePart(tf.slice(x, [s, 0], [4, -1]) as tf.Tensor2D, kT, s, 0.2))(q),
  );
  assert.ok(Math.abs(full.value.dataSync()[0] - (halves[0].value.dataSync()[0] + halves[1].value.dataSync()[0])) < 1e-5);
  const summed = tf.add(halves[0].grad, halves[1].grad);
  assert.ok(tf.max(tf.abs(tf.sub(summed, full.grad))).dataSync()[0] < 1e-6);
});

test('learning rate: scaled by batch/256, linear warmup per step, cosine to 0 at the last step', () => {
  const peak = peakLearningRate({ lr: 1.5e-4, batch: 4096 });
  const plan = { totalSteps: 30001, warmupSteps: 4000 };
  assert.ok(Math.abs(peak - 2.4e-3) < 1e-15, 'peak 1.5e-4 × 4096/256');
  assert.equal(learningRateAt(0, peak, plan), 0);
  assert.ok(Math.abs(learningRateAt(2000, peak, plan) - 1.2e-3) < 1e-12, 'half-way through warmup');
  assert.ok(Math.abs(learningRateAt(4000, peak, plan) - 2.4e-3) < 1e-12, 'peak');
  assert.ok(Math.abs(learningRateAt(4000 + 13000, peak, plan) - 1.2e-3) < 1e-12, 'half-way down the cosine');
  assert.equal(learningRateAt(30000, peak, plan), 0, 'the last step is at the floor');
});

test('momentum: 0.99 → 1 on a half-cosine ending at the last step, or constant', () => {
  const m = { momentum: 0.99, momentumSchedule: 'cosine' as const };
  const plan = { totalSteps: 1001 };
  assert.ok(Math.abs(momentumAt(0, m, plan) - 0.99) < 1e-12);
  assert.ok(Math.abs(momentumAt(500, m, plan) - 0.995) < 1e-12);
  assert.equal(momentumAt(1000, m, plan), 1);
  assert.equal(momentumAt(500, { momentum: 0.9, momentumSchedule: 'constant' }, plan), 0.9);
});

test('AdamW: decoupled decay on every parameter, bias-corrected first step', () => {
  const c = resolveTrainConfig({ model: { arch: 'vit_tiny' }, optim: { weightDecay: 0.1 } }, { height: 32, width: 32, size: 512 });
  const opt = createOptimizer(c.optim);
  const p = { w: tf.tensor2d([[1, -2]]), b: tf.tensor1d([3]) };
  const g = { w: tf.tensor2d([[0.5, 0.5]]), b: tf.tensor1d([-1]) };
  const lr = 0.01;
  const next = opt.apply(p, g, lr);
  // step 1: m̂ = g, v̂ = g², update = g/(|g|+eps) = sign(g); p ← p(1 − lr·wd) − lr·sign(g)
  const w = next.w.dataSync();
  assert.ok(Math.abs(w[0] - (1 * (1 - lr * 0.1) - lr)) < 1e-6);
  assert.ok(Math.abs(w[1] - (-2 * (1 - lr * 0.1) - lr)) < 1e-6);
  assert.ok(Math.abs(next.b.dataSync()[0] - (3 * (1 - lr * 0.1) + lr)) < 1e-6, 'biases decay too, as in the reference');
  assert.deepEqual(opt.scalars(), { step: 1 });
});

test('LARS: trust ratio and decay only for ndim > 1; momentum 0.9', () => {
  const c = resolveTrainConfig({ model: { arch: 'resnet18' }, optim: { weightDecay: 0 } }, { height: 32, width: 32, size: 512 });
  const opt = createOptimizer(c.optim);
  const p = { w: tf.tensor2d([[3, 4]]), b: tf.tensor1d([1]) };
  const g = { w: tf.tensor2d([[0, 2]]), b: tf.tensor1d([2]) };
  const next = opt.apply(p, g, 1);
  // w: ratio = 0.001·‖p‖/‖g‖ = 0.001·5/2 → update 0.0025·g; b: plain g.
  assert.deepEqual(Array.from(next.w.dataSync()).map((v) => +v.toFixed(6)), [3, 3.995]);
  assert.equal(next.b.dataSync()[0], -1);
  const again = opt.apply(next, { w: tf.zeros([1, 2]), b: tf.tensor1d([0]) }, 1);
  assert.ok(Math.abs(again.b.dataSync()[0] - (-1 - 0.9 * 2)) < 1e-6, 'momentum buffer carries 0.9·μ');
});
