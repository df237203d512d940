/**
 * The probe protocol: the lr is chosen on held-out TRAINING features (the evaluation split cannot
 * steer it), features are standardized, and one evaluation carries the model and both baselines
 * (random init of the same architecture and seed, raw pixels) under the same protocol.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { DEFAULT_PROTOCOL, evaluateBackbone, evaluateFeatures, selectLearningRate, type EvalProtocol } from '../../../runner/moco/evaluate.js';
import type { Features } from '../../../runner/moco/probe.js';
import { Prng } from '../../../runner/moco/rng.js';
import { syntheticTextures } from '../../../runner/moco/synthetic.js';
import { buildMocoModel, stripPrefix } from '../../../runner/moco/model.js';
import { resolveTrainConfig } from '../../../runner/moco/config.js';
import { writeBackbone } from '../../../runner/moco/checkpoint.js';
import { disposeParams } from '../../../runner/moco/params.js';

before(async () => {
  await tf.setBackend('cpu');
});

/** Gaussian blobs: class c centred at a random point, dims of wildly different scales. */
function blobs(n: number, dim: number, classes: number, seed: number): Features {
  const fixed = new Prng(100); // the same classes in every split
  const centres = Array.from({ length: classes }, () => Array.from({ length: dim }, () => fixed.normal()));
  const rng = new Prng(seed);
  const scale = Array.from({ length: dim }, (_, d) => 10 ** ((d % 4) - 1));
  const features = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % classes;
    for (let d = 0; d < dim; d++) features[i * dim + d] = (centres[labels[i]][d] + 1.2 * rng.normal()) * scale[d];
  }
  return { features, labels, dim };
}

const protocol: EvalProtocol = { ...DEFAULT_PROTOCOL, seed: 3, epochs: 4, batch: 64, lrCandidates: [0.001, 0.1, 3] };

test('the probe lr is chosen on held-out training features: poisoned evaluation labels and NaN features change nothing', async () => {
  const train = blobs(600, 12, 4, 1);
  const clean = blobs(200, 12, 4, 2);
  const chosen = await selectLearningRate(train, 4, protocol);
  assert.equal(chosen.scores.length, 3);
  assert.ok(chosen.scores.every((s) => s.heldOutTop1 >= 0 && s.heldOutTop1 <= 1));

  const a = await evaluateFeatures(train, clean, 4, protocol);
  const wrongLabels: Features = { ...clean, labels: clean.labels.map((l) => (l + 1) % 4) };
  const nanFeatures: Features = { ...clean, features: clean.features.map(() => NaN) };
  for (const poisoned of [wrongLabels, nanFeatures]) {
    const b = await evaluateFeatures(train, poisoned, 4, protocol);
    assert.equal(b.linear.selectedLr, a.linear.selectedLr);
    assert.deepEqual(b.linear.lrSelection, a.linear.lrSelection);
    assert.equal(b.linear.trainTop1, a.linear.trainTop1, 'the classifier never saw the evaluation split');
  }
  assert.ok(a.linear.top1 > 0.6, `clean top-1 ${a.linear.top1}`);
  const scored = await evaluateFeatures(train, wrongLabels, 4, protocol);
  assert.ok(scored.linear.top1 < 0.5, 'the poisoned split is what gets scored, after the choice');
});

test('a probe evaluation carries the model and both baselines under one protocol, readout of several blocks', async () => {
  const all = syntheticTextures({ size: 96, imageSize: 8, numClasses: 4, channels: 1, seed: 4 });
  const data = { train: all.subset(Array.from({ length: 64 }, (_, i) => i)), val: all.subset(Array.from({ length: 32 }, (_, i) => 64 + i)) };
  const cfg = resolveTrainConfig({ model: { arch: 'vit_tiny', dim: 8, depth: 2, heads: 2, patch: 4 }, moco: { projector: { hiddenDim: 8 }, predictor: { hiddenDim: 8 } }, optim: { batch: 8 }, seed: 9 }, data.train);
  const m = buildMocoModel(cfg);
  // A "trained" backbone: the initial one with its last block's MLP changed.
  const backbone = stripPrefix(m.query, 'backbone.');
  const w = backbone['blocks.1.mlp.fc2.weight'];
  backbone['blocks.1.mlp.fc2.weight'] = tf.mul(w, 3);
  const files = writeBackbone(backbone, cfg.model, 8, { step: 1, epoch: 1 });
  backbone['blocks.1.mlp.fc2.weight'].dispose();
  backbone['blocks.1.mlp.fc2.weight'] = w;
  disposeParams(m.query);
  disposeParams(m.momentum);

  const r = await evaluateBackbone(files, data, { ...protocol, seed: 9, readout: { lastBlocks: 4 } });
  assert.deepEqual(Object.keys(r.subjects).sort(), ['model', 'random_init', 'raw_pixels']);
  assert.equal(r.protocol.readout.lastBlocks, 2, 'capped at the depth');
  assert.equal(r.subjects.model.featureDim, 16, 'two class tokens of 8');
  assert.equal(r.subjects.random_init?.featureDim, 16);
  assert.equal(r.subjects.raw_pixels?.featureDim, 64);
  assert.notDeepEqual(r.subjects.random_init, r.subjects.model, 'the baseline is not the model');
  for (const s of Object.values(r.subjects)) {
    assert.ok(s && s.linear.top1 >= 0 && s.linear.top5 >= s.linear.top1 && s.knn.top1 >= 0);
  }
  const without = await evaluateBackbone(files, data, { ...protocol, seed: 9, baselines: false, lrCandidates: [0.1] });
  assert.deepEqual(Object.keys(without.subjects), ['model']);
});
