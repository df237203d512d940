import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSyntheticDataset, importFashionMnist, fashionMnistIdxArchive, FASHION_MNIST_CLASSES, readAll } from '../../../runner/datasets/index.js';
import { convertUpload } from '../../../runner/datasets/convert.js';
import { datasetVersionOptions } from '../../../contracts/datasetSpec.js';
import { createLogger } from '../../../common/logger.js';

test('the synthetic generator is reproducible from its seed and balanced', async () => {
  const a = generateSyntheticDataset({ numClasses: 4, perClass: 6, size: 16, seed: 9 });
  const b = generateSyntheticDataset({ numClasses: 4, perClass: 6, size: 16, seed: 9 });
  const c = generateSyntheticDataset({ numClasses: 4, perClass: 6, size: 16, seed: 10 });
  assert.deepEqual(a.pixels, b.pixels);
  assert.notDeepEqual(a.pixels, c.pixels);
  assert.equal(a.size, 24);
  assert.deepEqual([0, 1, 2, 3].map((k) => [...a.labels].filter((l) => l === k).length), [6, 6, 6, 6]);
  assert.equal(new Set(a.classNames).size, 4);
});

test('synthetic classes are separable by texture: a nearest-centroid on gradient orientation beats chance', async () => {
  // Feature: histogram of local gradient orientations (colour- and position-free), 8 bins.
  const feature = (px: Uint8Array, size: number) => {
    const h = new Float64Array(8);
    for (let y = 1; y < size - 1; y++) {
      for (let x = 1; x < size - 1; x++) {
        const at = (xx: number, yy: number) => px[(yy * size + xx) * 3] + px[(yy * size + xx) * 3 + 1] + px[(yy * size + xx) * 3 + 2];
        const gx = at(x + 1, y) - at(x - 1, y);
        const gy = at(x, y + 1) - at(x, y - 1);
        const mag = Math.hypot(gx, gy);
        const bin = Math.floor(((Math.atan2(gy, gx) + Math.PI) / Math.PI) * 4) % 8;
        h[bin] += mag;
      }
    }
    const sum = h.reduce((s, v) => s + v, 0) || 1;
    return h.map((v) => v / sum);
  };
  const ds = generateSyntheticDataset({ numClasses: 5, perClass: 40, size: 32, seed: 1 });
  const per = 32 * 32 * 3;
  const feats = Array.from({ length: ds.size }, (_, i) => feature(ds.pixels.subarray(i * per, (i + 1) * per), 32));
  const centroids = Array.from({ length: 5 }, () => new Float64Array(8));
  const half = ds.size / 2;
  for (let i = 0; i < half; i++) feats[i].forEach((v, j) => (centroids[ds.labels[i]][j] += v / (half / 5)));
  let correct = 0;
  for (let i = half; i < ds.size; i++) {
    const d = centroids.map((c) => c.reduce((s, v, j) => s + (v - feats[i][j]) ** 2, 0));
    if (d.indexOf(Math.min(...d)) === ds.labels[i]) correct++;
  }
  assert.ok(correct / half > 0.4, `accuracy ${correct / half} should clearly beat chance (0.2)`);
});

test('Fashion-MNIST from the Debian files: shapes, labels, class names, limits', async () => {
  const { train, val } = await importFashionMnist(undefined, { train: 500, val: 100 });
  assert.deepEqual([train.size, val.size, train.height, train.width, train.channels], [500, 100, 28, 28, 1]);
  assert.deepEqual(train.classNames, FASHION_MNIST_CLASSES);
  assert.ok([...train.labels].every((l) => l >= 0 && l < 10));
  assert.equal(new Set(train.labels).size, 10);
});

test('the Fashion-MNIST IDX archive reads back to the same images (a subset, without services)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ds-fm-'));
  try {
    await writeFile(join(dir, 'fm.tar.gz'), await fashionMnistIdxArchive(undefined, { train: 300, val: 50 }));
    const c = await convertUpload({ path: join(dir, 'fm.tar.gz'), uploadName: 'fm.tar.gz', options: datasetVersionOptions.parse({ format: 'idx' }), workDir: dir, log: createLogger('silent') });
    assert.deepEqual(c.classes, FASHION_MNIST_CLASSES);
    assert.equal(c.plan.source, 'format');
    assert.deepEqual([c.plan.train.length, c.plan.val!.length], [300, 50]);
    const { train } = await importFashionMnist(undefined, { train: 300, val: 0 });
    const staged = new Uint8Array(300 * 784);
    await c.staging.readInto(c.plan.train, staged);
    assert.deepEqual(staged, (await readAll(train)).pixels);
    assert.deepEqual(c.staging.labels.subarray(0, 300), train.labels);
    await c.staging.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
