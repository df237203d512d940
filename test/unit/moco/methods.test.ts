/** SimCLR and BYOL beside MoCo v3: their losses on hand-computed cases, their gradients, and short runs. */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { ntXentLoss } from '../../../runner/moco/methods/simclr.js';
import { byolLoss, byolPart } from '../../../runner/moco/methods/byol.js';
import { l2Normalize } from '../../../runner/moco/loss.js';
import { resolveTrainConfig, type TrainConfigInput } from '../../../runner/moco/config.js';
import { readState } from '../../../runner/moco/checkpoint.js';
import { syntheticTextures } from '../../../runner/moco/synthetic.js';
import { train, type Checkpoint, type StepMetrics } from '../../../runner/moco/train.js';
import { checkGradients, randomTensor } from './gradcheck.js';

before(async () => {
  await tf.setBackend('cpu');
});

const close = (a: number, b: number, tol = 1e-5, what = '') => assert.ok(Math.abs(a - b) < tol, `${what} ${a} vs ${b}`);

/** NT-Xent written out with plain numbers, anchor by anchor, from SimCLR's definition. */
function ntXentByHand(z1: number[][], z2: number[][], tau: number): number {
  const norm = (v: number[]) => v.map((x) => x / Math.hypot(...v));
  const z = [...z1, ...z2].map(norm);
  const N = z1.length;
  let total = 0;
  for (let i = 0; i < 2 * N; i++) {
    const positive = i < N ? i + N : i - N;
    const s = (j: number) => z[i].reduce((acc, x, d) => acc + x * z[j][d], 0) / tau;
    let denominator = 0;
    for (let k = 0; k < 2 * N; k++) if (k !== i) denominator += Math.exp(s(k));
    total += -Math.log(Math.exp(s(positive)) / denominator);
  }
  return total / (2 * N);
}

test('NT-Xent: a hand-computed case, a plain-number reference, and ln(2N−1) at chance (2N−2 negatives)', () => {
  // Two images, identical views e1, e2; τ = 1. Each anchor: positive logit 1, negatives 0 and 0.
  const eye = [
    [1, 0],
    [0, 1],
  ];
  close(ntXentLoss(tf.tensor2d(eye), tf.tensor2d(eye), 1).dataSync()[0], Math.log((2 + Math.E) / Math.E), 1e-6, 'log((2+e)/e)');

  const z1 = [
    [0.3, -1.2, 0.5],
    [1.1, 0.4, -0.7],
    [-0.2, 0.9, 1.3],
  ];
  const z2 = [
    [0.1, -1.0, 0.8],
    [0.9, -0.3, -0.4],
    [-0.6, 1.4, 0.2],
  ];
  for (const tau of [0.2, 0.5]) close(ntXentLoss(tf.tensor2d(z1), tf.tensor2d(z2), tau).dataSync()[0], ntXentByHand(z1, z2, tau), 1e-4, `τ ${tau}`);

  // All outputs alike: every one of the 2N−1 others ties, so each anchor's loss is ln(2N−1).
  const N = 8;
  const same = tf.ones([N, 4]) as tf.Tensor2D;
  close(ntXentLoss(same, same, 0.2).dataSync()[0], Math.log(2 * N - 1), 1e-5, 'chance');
});

test('BYOL: 2 − 2·cos on a hand-computed case; micro-batch shares add up to the batch mean', () => {
  // cos(p0, z0) = 0 → 2; cos(p1, z1) = 1 → 0 (scale does not matter); cos(p2, z2) = −1 → 4. Mean 2.
  const p = tf.tensor2d([
    [1, 0],
    [2, 2],
    [0, 3],
  ]);
  const z = tf.tensor2d([
    [0, 5],
    [1, 1],
    [0, -1],
  ]);
  close(byolLoss(p, z).dataSync()[0], 2, 1e-6);
  // 45°: 2 − 2·cos(π/4) = 2 − √2.
  close(byolLoss(tf.tensor2d([[1, 0]]), tf.tensor2d([[1, 1]])).dataSync()[0], 2 - Math.SQRT2, 1e-6);

  const q = randomTensor([6, 5], 1) as tf.Tensor2D;
  const t = l2Normalize(randomTensor([6, 5], 2) as tf.Tensor2D);
  const whole = byolPart(q, t, 0).dataSync()[0];
  const shares = [0, 2, 4].map((s) => byolPart(tf.slice(q, [s, 0], [2, -1]), t, s).dataSync()[0]);
  close(shares.reduce((a, b) => a + b, 0), whole, 1e-6, 'shares');
});

test('SimCLR and BYOL losses: analytic gradients match central differences', () => {
  const a = randomTensor([3, 4], 3);
  const b = randomTensor([3, 4], 4);
  checkGradients((x, y) => ntXentLoss(x as tf.Tensor2D, y as tf.Tensor2D, 0.5), [a, b], { eps: 1e-2, tol: 2e-2 });
  checkGradients((x, y) => byolLoss(x as tf.Tensor2D, y as tf.Tensor2D), [a, b], { eps: 1e-2, tol: 2e-2 });
});

const data = { train: syntheticTextures({ size: 32, imageSize: 16, seed: 7 }) };
const tiny = (method: 'simclr' | 'byol' | 'mocov3', extra: TrainConfigInput = {}): TrainConfigInput => ({
  method,
  model: { arch: 'vit_tiny', dim: 16, depth: 2, heads: 2, freezePatchProjection: false },
  moco: { projector: { hiddenDim: 32, outDim: 8 }, predictor: { hiddenDim: 32 } },
  optim: { batch: 8, lr: 1e-3, warmupEpochs: 0.5 },
  epochs: 1,
  checkpointEvery: 100,
  seed: 3,
  ...extra,
});

test('method defaults and the SimCLR constraints', () => {
  const shape = { height: 16, width: 16, size: 32 };
  const simclr = resolveTrainConfig(tiny('simclr'), shape);
  assert.equal(simclr.moco.predictor.enabled, false);
  assert.equal(simclr.moco.temperature, 0.2);
  const byol = resolveTrainConfig(tiny('byol'), shape);
  assert.equal(byol.moco.momentum, 0.996);
  assert.equal(byol.moco.predictor.enabled, true);
  assert.equal(resolveTrainConfig(tiny('mocov3'), shape).moco.momentum, 0.99);
  assert.throws(() => resolveTrainConfig({ ...tiny('simclr'), moco: { predictor: { enabled: true } } }, shape), /predictor/);
  assert.throws(() => resolveTrainConfig({ ...tiny('simclr'), optim: { batch: 8, microBatch: 4 } }, shape), /microBatch 4 must equal optim.batch 8 with method simclr/);
  assert.throws(() => resolveTrainConfig({ ...tiny('mocov3'), method: 'swav' as never }, shape), /method "swav"/);
});

for (const method of ['simclr', 'byol'] as const) {
  test(`${method}: a short run trains (finite loss, per-layer gradient norms) and checkpoints what the method has`, async () => {
    const steps: StepMetrics[] = [];
    const checkpoints: Checkpoint[] = [];
    const result = await train(tiny(method, method === 'byol' ? { optim: { batch: 8, microBatch: 4, lr: 1e-3, warmupEpochs: 0.5 } } : {}), data, {
      onStep: (m) => void steps.push(m),
      onCheckpoint: (c) => void checkpoints.push(c),
    });
    assert.equal(result.steps, 4);
    assert.equal(result.config.method, method);
    for (const m of steps) {
      assert.ok(Number.isFinite(m.loss) && m.loss > 0, `loss ${m.loss}`);
      assert.ok(m.gradNormPatchProjection! > 0 && m.gradNormFirstBlock > 0 && m.gradNormLastBlock > 0 && m.gradNormProjector > 0);
    }
    // BYOL's loss lies in [0, 8] (two directions of 2 − 2cos).
    if (method === 'byol') assert.ok(steps.every((m) => m.loss <= 8));
    const state = readState(checkpoints.at(-1)!.files);
    const names = Object.keys(state.query);
    const momentumNames = Object.keys(state.momentum);
    if (method === 'simclr') {
      assert.equal(momentumNames.length, 0, 'SimCLR has no momentum encoder');
      assert.ok(!names.some((n) => n.startsWith('predictor.')), 'nor a predictor');
      assert.equal(steps[0].gradNormPredictor, null);
    } else {
      assert.ok(momentumNames.length > 0 && names.some((n) => n.startsWith('predictor.')));
      assert.ok(steps[0].gradNormPredictor! > 0);
    }
  });
}
