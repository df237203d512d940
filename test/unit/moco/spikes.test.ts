import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpikeDetector, watchedSeries } from '../../../runner/moco/spikes.js';

/** A noisy but steady series around `level` (deterministic). */
const steady = (n: number, level: number) => Array.from({ length: n }, (_, i) => level * (1 + 0.1 * Math.sin(i * 1.7)));

test('a synthetic series: one spike per excursion, at its first step, against the running median', () => {
  const detector = new SpikeDetector();
  const norm = steady(100, 2);
  const loss = steady(100, 4);
  norm[40] = 9; // one-step spike: 4.5× the median
  norm[70] = norm[71] = norm[72] = 12; // a three-step excursion: one event
  loss[80] = 7; // 1.75× the loss median
  loss[90] = 5.2; // 1.3×: within the loss band
  norm[10] = 50; // too early: fewer than 20 values seen
  const spikes = [];
  for (let step = 0; step < 100; step++) spikes.push(...detector.observe(step + 1, [['gradNormPatchProjection', norm[step]], ['loss', loss[step]]]));
  assert.deepEqual(
    spikes.map((s) => [s.step, s.series]),
    [
      [41, 'gradNormPatchProjection'],
      [71, 'gradNormPatchProjection'],
      [81, 'loss'],
    ],
  );
  const first = spikes[0];
  assert.equal(first.factor, 3);
  assert.ok(Math.abs(first.median - 2) < 0.2, `median ${first.median}`);
  assert.equal(first.value, 9);
  assert.equal(spikes[2].factor, 1.5);
});

test('a slow drift is not a spike; a series that steps up for good raises no second event', () => {
  const detector = new SpikeDetector();
  const spikes = [];
  for (let step = 1; step <= 200; step++) spikes.push(...detector.observe(step, [['gradNorm', 1 + step * 0.02]]));
  assert.deepEqual(spikes, [], 'a 5x rise over 200 steps moves with its median');
  const jump = new SpikeDetector();
  const events = [];
  for (let step = 1; step <= 60; step++) events.push(...jump.observe(step, [['gradNorm', step <= 30 ? 1 : 10]]));
  assert.equal(events.length, 1);
  assert.equal(events[0].step, 31);
});

test('watched series: the loss and every gradient norm, finite numbers only', () => {
  assert.deepEqual(watchedSeries({ step: 3, loss: 1, lr: 0.1, gradNorm: 2, gradNormPatchProjection: null, gradNormLastBlock: NaN, gradNormFirstBlock: 4 }), [
    ['loss', 1],
    ['gradNorm', 2],
    ['gradNormFirstBlock', 4],
  ]);
});
