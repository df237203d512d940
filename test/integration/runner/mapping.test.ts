/**
 * Pure pieces of the runner, no services: the job spec → trainer config mapping (defaults that
 * depend on the architecture and the dataset), the outcome of a run from how its child ended, the
 * retry backoff and the metric flattening.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pretrainSpec, probeSpec } from '../../../contracts/jobSpec.js';
import type { DatasetManifest } from '../../../contracts/datasetSpec.js';
import { buildProbeConfig, buildTrainConfig } from '../../../runner/trainConfig.js';
import { outcomeOfChild } from '../../../runner/supervisor/outcomes.js';
import { retryDelayMs } from '../../../runner/supervisor/jobAttempt.js';
import { metricPoints } from '../../../runner/supervisor/metricsWriter.js';

const manifest = (side: number, train = 1000): DatasetManifest => ({
  manifestVersion: 1,
  format: 'idx',
  height: side,
  width: side,
  channels: 1,
  classes: ['a', 'b'],
  splits: { train: { count: train, classCounts: [train / 2, train / 2], shards: [] }, val: { count: 100, classCounts: [50, 50], shards: [] } },
  source: { key: 'k', bytes: 1, sha256: 'x' },
  createdAt: '2026-01-01T00:00:00Z',
});
const spec = (extra: Record<string, unknown> = {}) => pretrainSpec.parse({ type: 'pretrain', dataset: 'd', optim: { batch: 64 }, ...extra });

test('ViT defaults: τ 0.2, AdamW wd 0.1, 3 projector layers; small images: lr 1.5e-3, patch 4, native size, mild crops', () => {
  const c = buildTrainConfig(spec({ model: { arch: 'vit_small' } }), manifest(28));
  assert.equal(c.moco.temperature, 0.2);
  assert.deepEqual([c.optim.name, c.optim.lr, c.optim.weightDecay], ['adamw', 1.5e-3, 0.1]);
  assert.deepEqual([c.augment.cropMinScale, c.augment.blurProb, c.augment.grayscaleProb, c.augment.colorJitter], [0.3, [0, 0], 0, [0.4, 0.4, 0, 0]]);
  assert.equal(c.moco.projector.layers, 3);
  assert.deepEqual([c.model.imageSize, c.model.patch, c.model.dim, c.model.heads], [28, 4, 384, 12]);
  assert.equal(buildTrainConfig(spec({ model: { arch: 'vit_base', imageSize: 16 } }), manifest(28)).model.imageSize, 16);
});

test('ResNet defaults: τ 1.0, LARS lr 0.6 wd 1e-6, 2 projector layers; the user\'s values win', () => {
  const c = buildTrainConfig(spec({ model: { arch: 'resnet18' } }), manifest(32));
  assert.equal(c.moco.temperature, 1.0);
  assert.deepEqual([c.optim.name, c.optim.lr, c.optim.weightDecay], ['lars', 0.6, 1e-6]);
  assert.equal(c.moco.projector.layers, 2);
  const own = buildTrainConfig(spec({ model: { arch: 'resnet18' }, moco: { temperature: 0.5 }, optim: { batch: 64, name: 'adamw', lr: 1e-3 } }), manifest(32));
  assert.deepEqual([own.moco.temperature, own.optim.name, own.optim.lr], [0.5, 'adamw', 1e-3]);
});

test('what cannot train is refused with the field named', () => {
  assert.throws(() => buildTrainConfig(spec({ model: { imageSize: 64 } }), manifest(28)), /model.imageSize 64 is larger than the dataset's 28×28/);
  assert.throws(() => buildTrainConfig(spec(), manifest(28, 10)), /fewer than optim.batch 64/);
  assert.throws(() => buildTrainConfig(spec({ model: { patch: 5 } }), manifest(28)), /model.patch 5 must divide model.imageSize 28/);
});

test('the probe batch never exceeds the training split', () => {
  const p = probeSpec.parse({ type: 'probe', source: { job: '00000000-0000-4000-8000-000000000000' }, batch: 4096 });
  const c = buildProbeConfig(p, manifest(28, 1000));
  assert.deepEqual([c.epochs, c.batch, c.seed, c.lrCandidates, c.baselines, c.readout.lastBlocks], [10, 1000, 0, [0.01, 0.1, 1], true, 1]);
  const fixed = buildProbeConfig(probeSpec.parse({ type: 'probe', source: { job: '00000000-0000-4000-8000-000000000000' }, lr: 0.5, baselines: false }), manifest(28, 1000));
  assert.deepEqual([fixed.lrCandidates, fixed.baselines], [[0.5], false], 'an explicit lr is the only candidate');
});

test('how a run ended, from its child and the reason it was asked to stop', () => {
  const crash = { kind: 'crashed', message: 'training process was killed by SIGKILL without a result' } as const;
  assert.deepEqual(outcomeOfChild({ kind: 'stopped' }, 'cancel', 'v2'), { kind: 'canceled', reason: 'canceled on request; v2' });
  assert.deepEqual(outcomeOfChild({ kind: 'stopped' }, 'preempt', 'v2'), { kind: 'preempted', reason: 'runner shutting down; v2' });
  assert.equal(outcomeOfChild(crash, 'preempt', 'v2').kind, 'preempted', 'killed at the end of the grace period: still requeued');
  assert.deepEqual(outcomeOfChild(crash, undefined, 'v2'), { kind: 'failed', reason: crash.message, retryable: true });
  assert.deepEqual(outcomeOfChild({ kind: 'failed', message: 'diverged', retryable: false }, undefined, ''), { kind: 'failed', reason: 'diverged', retryable: false });
  assert.equal(outcomeOfChild({ kind: 'stopped' }, 'max-runtime', 'v2').kind, 'failed');
});

test('retry backoff doubles from 2 s and stops at a minute', () => {
  assert.deepEqual([1, 2, 3, 4, 10].map(retryDelayMs), [2000, 4000, 8000, 16000, 60000]);
});

test('step metrics flatten to named points; non-numbers and non-finite values are left out', () => {
  const points = metricPoints({ step: 7, loss: 1.5, lr: 0.1, gradNormPatchProjection: null, nested: { a: 2, b: NaN }, note: 'x' });
  assert.deepEqual(points, [
    { step: 7, name: 'loss', value: 1.5 },
    { step: 7, name: 'lr', value: 0.1 },
    { step: 7, name: 'nested.a', value: 2 },
  ]);
});
