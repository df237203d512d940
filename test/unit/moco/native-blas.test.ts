/**
 * The wasm backend's matrix products on the native BLAS (kernels/native-blas.ts): equal to the
 * stock kernels' products, right gradients, and MoCo losses equal to the stock path's to 4
 * decimals over several steps. Skipped, saying why, where no OpenBLAS can be loaded (the fallback
 * itself is tested in wasm-kernels.test.ts).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendInfo } from '../../../runner/moco/backend.js';
import { nativeProductsActive, setWasmKernelsEnabled } from '../../../runner/moco/kernels/batch-matmul.js';
import { resolveTrainConfig } from '../../../runner/moco/config.js';
import { buildMocoModel } from '../../../runner/moco/model.js';
import { createOptimizer } from '../../../runner/moco/optim.js';
import { disposeParams } from '../../../runner/moco/params.js';
import { Prng } from '../../../runner/moco/rng.js';
import { mocoStep } from '../../../runner/moco/step.js';
import { bmm, dense } from '../../../runner/moco/ops.js';
import { checkGradients, randomTensor } from './gradcheck.js';

let info: BackendInfo;
let skip: string | false = false;

before(async () => {
  info = await selectBackend('wasm');
  if (typeof info.blas === 'string') skip = `no native BLAS here: ${info.blas}`;
});

/** The stock wasm kernel's product and the native one, for the same inputs. */
function bothPaths(a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean): [tf.Tensor, tf.Tensor] {
  setWasmKernelsEnabled(false);
  const stock = tf.matMul(a, b, ta, tb);
  setWasmKernelsEnabled(true);
  return [stock, tf.matMul(a, b, ta, tb)];
}

test('the backend reports the native path: kernels, library, threads; one wasm thread beside it', (t) => {
  if (skip) return t.skip(skip);
  assert.equal(info.kernels, 'blas+bmm+gelu');
  const blas = info.blas as { library: string; config: string; threads: number };
  assert.match(blas.library, /openblas/);
  assert.ok(blas.threads >= 1);
  // Unless MOCO_WASM_THREADS says otherwise, the wasm pool stays at one thread: BLAS has the cores.
  if (!process.env.MOCO_WASM_THREADS) assert.equal(info.threads, 1);
});

test('native products equal the stock kernel\'s: every transpose, batched, broadcast, odd sizes', (t) => {
  if (skip) return t.skip(skip);
  const cases: [number[], number[], boolean, boolean][] = [
    [[5, 7], [7, 9], false, false],
    [[7, 5], [7, 9], true, false],
    [[5, 7], [9, 7], false, true],
    [[7, 5], [9, 7], true, true],
    [[130, 67], [67, 129], false, false], // beyond one register block of OpenBLAS's kernels
    [[3, 40, 33], [3, 33, 41], false, false], // batched, each product ≥ BLAS_MIN_BATCHED_MNK
    [[3, 33, 40], [3, 41, 33], true, true],
    [[4, 40, 33], [33, 41], false, false], // one B for every batch entry: one [160, 33] product
    [[1, 40, 33], [4, 33, 41], false, false], // one A for every batch entry
  ];
  for (const [sa, sb, ta, tb] of cases) {
    tf.tidy(() => {
      const [stock, native] = bothPaths(randomTensor(sa, 1), randomTensor(sb, 2), ta, tb);
      assert.deepEqual(native.shape, stock.shape);
      const err = tf.max(tf.abs(tf.sub(stock, native))).dataSync()[0];
      assert.ok(err < 1e-4, `${sa}·${sb} (tA ${ta}, tB ${tb}): max error ${err}`);
    });
  }
});

test('sums and means over leading axes (column sums) on BLAS equal the stock kernels\'', (t) => {
  if (skip) return t.skip(skip);
  const x = randomTensor([37, 5, 6], 8);
  const cases: [string, () => tf.Tensor][] = [
    ['sum 0', () => tf.sum(x, 0)],
    ['sum 0,1 keepDims', () => tf.sum(x, [0, 1], true)],
    ['sum -3', () => tf.sum(x, -3)],
    ['mean 0', () => tf.mean(x, 0)],
    ['mean 0,1', () => tf.mean(x, [1, 0])],
    ['sum 1 (stock)', () => tf.sum(x, 1)],
  ];
  for (const [what, f] of cases) {
    tf.tidy(() => {
      setWasmKernelsEnabled(false);
      const stock = f();
      setWasmKernelsEnabled(true);
      const native = f();
      assert.deepEqual(native.shape, stock.shape, what);
      const err = tf.max(tf.abs(tf.sub(stock, native))).dataSync()[0];
      assert.ok(err < 1e-5, `${what}: max error ${err}`);
    });
  }
  x.dispose();
});

test('dense and bmm have the right gradients on the native products', (t) => {
  if (skip) return t.skip(skip);
  setWasmKernelsEnabled(true);
  assert.ok(nativeProductsActive());
  const x = randomTensor([3, 4], 1), w = randomTensor([4, 5], 2), b = randomTensor([5], 3);
  checkGradients((x, w, b) => dense(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D), [x, w, b]);
  // Products large enough to take the native path in the forward and the backward pass.
  checkGradients((a, b) => bmm(a as tf.Tensor3D, b as tf.Tensor3D), [randomTensor([2, 32, 33], 4, 0.3), randomTensor([2, 33, 32], 5, 0.3)], { tol: 3e-2 });
});

test('MoCo losses on the native path equal the stock kernels\' to 4 decimals over several steps', (t) => {
  if (skip) return t.skip(skip);
  const config = resolveTrainConfig(
    {
      model: { arch: 'vit_tiny', imageSize: 16, patch: 4, dim: 32, depth: 2, heads: 2 },
      moco: { projector: { hiddenDim: 64, outDim: 16 }, predictor: { hiddenDim: 64 } },
      optim: { batch: 16, lr: 1e-3 },
    },
    { height: 16, width: 16, size: 16 },
  );
  const losses = (native: boolean) => {
    setWasmKernelsEnabled(native);
    const model = buildMocoModel(config);
    const optimizer = createOptimizer(config.optim);
    const rng = new Prng(3);
    const view = () => tf.tensor4d(rng.normalArray(16 * 16 * 16 * 3, 0, 1), [16, 16, 16, 3]);
    const [x1, x2] = [view(), view()];
    const out: number[] = [];
    for (let step = 0; step < 4; step++) out.push(mocoStep(model, optimizer, x1, x2, { step, lr: 1e-3, momentum: 0.99 }).loss);
    tf.dispose([x1, x2]);
    disposeParams(model.query);
    disposeParams(model.momentum);
    optimizer.dispose();
    return out;
  };
  const stock = losses(false);
  const native = losses(true);
  assert.ok(nativeProductsActive());
  assert.deepEqual(native.map((l) => l.toFixed(4)), stock.map((l) => l.toFixed(4)), `native ${native} vs stock ${stock}`);
  assert.ok(stock[3] !== stock[0], 'the parameters moved between steps');
});
