/**
 * The linear probe and the kNN evaluation on hand-made features whose accuracy is known in advance,
 * so a wrong top-1/top-5 count, a broken optimizer step or a kNN voting for the wrong neighbours
 * shows as a wrong number (the end-to-end tests only see "better than random").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { knnOnFeatures, trainLinear, type Features } from '../../../runner/moco/probe.js';
import { Prng } from '../../../runner/moco/rng.js';

const CLASSES = 8;
const DIM = 8;

/** Features from rows of per-class weights: row `mix` gives weight mix[c] to unit direction c. */
function features(rows: { mix: Record<number, number>; label: number }[], noise = 0, seed = 1): Features {
  const rng = new Prng(seed);
  const f = new Float32Array(rows.length * DIM);
  rows.forEach((r, i) => {
    for (let d = 0; d < DIM; d++) f[i * DIM + d] = (r.mix[d] ?? 0) + (noise ? (rng.next() * 2 - 1) * noise : 0);
  });
  return { features: f, labels: Int32Array.from(rows.map((r) => r.label)), dim: DIM };
}

const mod = (c: number) => ((c % CLASSES) + CLASSES) % CLASSES;

test('linear probe: known top-1 and top-5 on hand-made features (clean, second choice, far off)', async () => {
  // Training: 20 noisy examples per class around 3·e_c.
  const train = features(Array.from({ length: CLASSES * 20 }, (_, i) => ({ mix: { [i % CLASSES]: 3 }, label: i % CLASSES })), 0.3);
  const rows: { mix: Record<number, number>; label: number }[] = [];
  for (let c = 0; c < CLASSES; c++) {
    // 5 clean examples: right at top-1.
    for (let i = 0; i < 5; i++) rows.push({ mix: { [c]: 3 }, label: c });
    // Mostly class c, partly the labelled class c+1: its label ranks second (a top-5 hit, a top-1 miss).
    rows.push({ mix: { [c]: 3, [mod(c + 1)]: 2 }, label: mod(c + 1) });
    // Class c plus five others, labelled a seventh: six classes outrank the label (a miss at top-5 too).
    rows.push({ mix: { [c]: 3, [mod(c + 1)]: 1.5, [mod(c + 2)]: 1.5, [mod(c + 3)]: 1.5, [mod(c + 4)]: 1.5, [mod(c + 5)]: 1.5 }, label: mod(c + 6) });
  }
  const val = features(rows);
  const result = await trainLinear(train, val, CLASSES, { epochs: 30, lr: 2, batch: 32, seed: 0, featureBatch: 64 });
  assert.equal(result.trainTop1, 1, 'separable training features are learnt exactly');
  assert.equal(result.top1, 40 / 56);
  assert.equal(result.top5, 48 / 56);
  assert.ok(result.finalLoss < 0.1, `final loss ${result.finalLoss}`);
  assert.deepEqual([result.trainExamples, result.valExamples, result.featureDim, result.numClasses], [160, 56, DIM, CLASSES]);
});

test('linear probe: labels unrelated to the features stay near chance on held-out data', async () => {
  const rng = new Prng(7);
  const noiseRows = (n: number) => Array.from({ length: n }, () => ({ mix: Object.fromEntries(Array.from({ length: DIM }, (_, d) => [d, rng.next()])), label: Math.floor(rng.next() * CLASSES) }));
  const result = await trainLinear(features(noiseRows(160)), features(noiseRows(400)), CLASSES, { epochs: 10, lr: 1, batch: 32, seed: 0, featureBatch: 64 });
  assert.ok(result.top1 < 0.25, `top-1 ${result.top1} (chance 0.125)`);
});

test('kNN: votes weighted by exp(cosine / T) rank each label where it was built to rank', () => {
  // One training example per class, along e_c: a query's score for class c is exp(cos(q, e_c) / T).
  const train = features(Array.from({ length: CLASSES }, (_, c) => ({ mix: { [c]: 1 }, label: c })));
  // Each query has decreasing similarity to classes (0.9, 0.8, … 0.2 in a rotated order) and a label
  // placed at a chosen rank in that order.
  const ranks = [0, 0, 0, 0, 1, 2, 4, 5, 6, 7];
  const similarities = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2];
  const val = features(ranks.map((rank, i) => {
    const order = Array.from({ length: CLASSES }, (_, j) => mod(i + j)); // order[r] = the class ranked r
    return { mix: Object.fromEntries(order.map((cls, r) => [cls, similarities[r]!])), label: order[rank]! };
  }));
  const all = knnOnFeatures(train, val, CLASSES, { k: CLASSES, temperature: 0.07, featureBatch: 64 });
  assert.equal(all.top1, 4 / 10);
  assert.equal(all.top5, 7 / 10);
  // With k = 1 only the nearest class votes: top-1 is unchanged.
  const nearest = knnOnFeatures(train, val, CLASSES, { k: 1, temperature: 0.07, featureBatch: 64 });
  assert.equal(nearest.top1, 4 / 10);
  assert.equal(nearest.k, 1);
});
