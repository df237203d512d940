/**
 * The wasm backend's matrix products on the native BLAS (kernels/native-blas.ts) and the native
 * elementwise kernels (kernels/native-ops.ts: LayerNorm, scaled softmax, GELU, the bias inside the
 * product): equal to the stock kernels' results, right gradients (numerical checks), and MoCo
 * losses equal to the stock path's to 4 decimals over several steps. Skipped, saying why, where
 * no OpenBLAS can be loaded or no native kernels built (the fallback itself is tested in
 * wasm-kernels.test.ts).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendInfo } from '../../../runner/moco/backend.js';
import { fusedDenseActive, nativeProductsActive, setWasmKernelsEnabled } from '../../../runner/moco/kernels/batch-matmul.js';
import { nativeKernelsActive, nativeUpdates, setNativeKernelsEnabled, setNativeThreads } from '../../../runner/moco/kernels/native-ops.js';
import { fusedUpdatesActive } from '../../../runner/moco/kernels/heap-kernels.js';
import { resolveTrainConfig } from '../../../runner/moco/config.js';
import { buildMocoModel } from '../../../runner/moco/model.js';
import { createOptimizer } from '../../../runner/moco/optim.js';
import { disposeParams } from '../../../runner/moco/params.js';
import { Prng } from '../../../runner/moco/rng.js';
import { mocoStep } from '../../../runner/moco/step.js';
import { attentionWeights, bmm, dense, gelu, layerNorm, multiHeadAttention, scaledSoftmax } from '../../../runner/moco/ops.js';
import { checkGradients, randomTensor } from './gradcheck.js';
import { runUpdates } from './updateRun.js';

let info: BackendInfo;
let skip: string | false = false;
let skipNative: string | false = false;

before(async () => {
  info = await selectBackend('wasm');
  if (typeof info.blas === 'string') skip = `no native BLAS here: ${info.blas}`;
  // Skipped only where nothing could build them; a compiler that fails on our source is a failure.
  if (typeof info.native === 'string') {
    if (!/^(no C compiler|koffi cannot load|off )/.test(info.native)) assert.fail(`the native kernels did not build: ${info.native}`);
    skipNative = `no native kernels here: ${info.native}`;
  }
});

/** The largest absolute difference of two tensors. */
const maxDiff = (p: tf.Tensor, q: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(p, q))).dataSync()[0]);

/** f with our wasm kernels and BLAS but not the native elementwise kernels ('blas'), and with everything ('on'). */
function beforeAndAfter<T>(f: () => T): [T, T] {
  setWasmKernelsEnabled(true, true, true, false);
  const before = f();
  setWasmKernelsEnabled(true);
  return [before, f()];
}

/** The stock wasm kernel's product and the native one, for the same inputs. */
function bothPaths(a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean): [tf.Tensor, tf.Tensor] {
  setWasmKernelsEnabled(false);
  const stock = tf.matMul(a, b, ta, tb);
  setWasmKernelsEnabled(true);
  return [stock, tf.matMul(a, b, ta, tb)];
}

test('the backend reports the native path: kernels, library, threads; one wasm thread beside it', (t) => {
  if (skip) return t.skip(skip);
  assert.equal(info.kernels, typeof info.native === 'string' ? 'blas+bmm+gelu' : 'blas+native+bmm+gelu');
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
    [[2, 130, 97], [2, 97, 129], false, false], // batched, each product ≥ BLAS_MIN_BATCHED_MNK
    [[2, 97, 130], [2, 129, 97], true, true],
    [[4, 40, 33], [33, 41], false, false], // one B for every batch entry: one [160, 33] product
    [[1, 130, 97], [3, 97, 129], false, false], // one A for every batch entry
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
  checkGradients((a, b) => bmm(a as tf.Tensor3D, b as tf.Tensor3D), [randomTensor([2, 5, 4], 4), randomTensor([2, 4, 9], 5)]);
  // Products large enough to take the native path in the forward and the backward pass (too
  // many elements for central differences): the same gradients as on the stock kernels.
  const [a, b2] = [randomTensor([2, 130, 97], 6, 0.3), randomTensor([2, 97, 129], 7, 0.3)];
  const weights = randomTensor([2, 130, 129], 8);
  const gradsOn = (native: boolean) => {
    setWasmKernelsEnabled(native);
    return tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(bmm(p as tf.Tensor3D, q as tf.Tensor3D), weights)))([a, b2]);
  };
  const stock = gradsOn(false), native = gradsOn(true);
  stock.forEach((g, i) => {
    const err = tf.max(tf.abs(tf.sub(g, native[i]))).dataSync()[0];
    assert.ok(err < 1e-3, `gradient ${i}: max error ${err}`);
  });
  tf.dispose([a, b2, weights, ...stock, ...native]);
});

test('the backend reports the native kernels: the library built for this CPU and the compiler', (t) => {
  if (skipNative) return t.skip(skipNative);
  const native = info.native as { library: string; compiler: string; built: string };
  assert.match(native.library, /moco_native-[0-9a-f]{16}\.so$/);
  assert.ok(native.compiler.length > 0);
  assert.ok(['now', 'cached'].includes(native.built));
});

test('native LayerNorm, scaled softmax, attention, GELU and dense+bias equal the composed ops, forward and gradients', (t) => {
  if (skip) return t.skip(skip);
  if (skipNative) return t.skip(skipNative);
  // Odd sizes: vector tails in every loop.
  const x = randomTensor([37, 29], 1, 2) as tf.Tensor2D, w = randomTensor([29], 2) as tf.Tensor1D, b = randomTensor([29], 3) as tf.Tensor1D;
  const s = randomTensor([3, 11, 13], 4, 3) as tf.Tensor3D;
  const W = randomTensor([29, 17], 5) as tf.Tensor2D, bias = randomTensor([17], 6) as tf.Tensor1D;
  const q = randomTensor([4, 9, 8], 7) as tf.Tensor3D, kT = randomTensor([4, 8, 9], 8) as tf.Tensor3D;
  const [qa, ka, va] = [9, 10, 11].map((seed) => randomTensor([21, 16], seed, 2) as tf.Tensor2D);
  const cases: [string, () => tf.Tensor[], number][] = [
    ['layerNorm', () => [layerNorm(x, w, b, 1e-6)], 1e-5],
    ['layerNorm grads', () => tf.grads((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(layerNorm(x as tf.Tensor2D, w as tf.Tensor1D, b as tf.Tensor1D), tf.sin(x))))([x, w, b]), 1e-4],
    ['scaledSoftmax', () => [scaledSoftmax(s, 0.37)], 1e-6],
    ['scaledSoftmax grad', () => [tf.grad((s: tf.Tensor) => tf.sum(tf.mul(scaledSoftmax(s as tf.Tensor3D, 0.37), tf.cos(s))))(s)], 1e-5],
    ['attentionWeights grads', () => tf.grads((q: tf.Tensor, k: tf.Tensor) => tf.sum(tf.mul(attentionWeights(q as tf.Tensor3D, k as tf.Tensor3D, 0.35), tf.range(0, 4 * 9 * 9).reshape([4, 9, 9]).sin())))([q, kT]), 1e-5],
    ['gelu', () => [gelu(x)], 1e-6],
    ['gelu grad', () => [tf.grad((x: tf.Tensor) => tf.sum(tf.mul(gelu(x), tf.sin(x))))(x)], 1e-5],
    ['dense + bias', () => [dense(x, W, bias)], 1e-5],
    // 3 images of 7 tokens, 2 heads of 8: the native kernel reads heads in place, the composed path transposes.
    ['multiHeadAttention', () => [multiHeadAttention(qa, ka, va, 3, 7, 2)], 1e-5],
    ['multiHeadAttention grads', () => tf.grads((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.sum(tf.mul(multiHeadAttention(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, 3, 7, 2), tf.sin(q))))([qa, ka, va]), 1e-5],
    // dh a multiple of 16: the vector kernels (dh 16 and 80: one block of 4 vectors and a rest), 19 tokens (padded to 32).
    ...([[2, 16], [1, 80]] as const).map(([H, dh]): [string, () => tf.Tensor[], number] => [
      `multiHeadAttention grads, dh ${dh}`,
      () => {
        const [q, k, v] = [12, 13, 14].map((seed) => randomTensor([2 * 19, H * dh], seed, 0.5));
        return tf.grads((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.sum(tf.mul(multiHeadAttention(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, 2, 19, H), tf.sin(q))))([q, k, v]).concat(multiHeadAttention(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, 2, 19, H));
      },
      1e-5,
    ]),
  ];
  for (const [what, f, tol] of cases) {
    const [stock, native] = beforeAndAfter(() => tf.tidy(f));
    assert.ok(nativeKernelsActive() && fusedDenseActive());
    stock.forEach((g, i) => {
      assert.deepEqual(native[i].shape, g.shape, what);
      const err = maxDiff(g, native[i]);
      assert.ok(err < tol, `${what} [${i}]: max difference ${err}`);
    });
    tf.dispose([...stock, ...native]);
  }
  tf.dispose([x, w, b, s, W, bias, q, kT, qa, ka, va]);
});

test('dense + bias on BLAS without the native kernels (the bias broadcast by a rank-1 product) equals the composed ops', (t) => {
  if (skip) return t.skip(skip);
  const x = randomTensor([37, 29], 1) as tf.Tensor2D, W = randomTensor([29, 17], 5) as tf.Tensor2D, bias = randomTensor([17], 6) as tf.Tensor1D;
  const [stock, fused] = beforeAndAfter(() => {
    setNativeKernelsEnabled(false); // BLAS and the fused dense, but no native library: the machine without a compiler
    return dense(x, W, bias);
  });
  assert.ok(fusedDenseActive() && !nativeKernelsActive());
  assert.ok(maxDiff(stock, fused) < 1e-5);
  setWasmKernelsEnabled(true);
  tf.dispose([x, W, bias, stock, fused]);
});

test('the native kernels have the right gradients (central differences)', (t) => {
  if (skip) return t.skip(skip);
  if (skipNative) return t.skip(skipNative);
  setWasmKernelsEnabled(true);
  assert.ok(nativeKernelsActive());
  checkGradients((x, w, b) => layerNorm(x as tf.Tensor2D, w as tf.Tensor1D, b as tf.Tensor1D, 1e-6), [randomTensor([5, 7], 1), randomTensor([7], 2), randomTensor([7], 3)]);
  checkGradients((s) => scaledSoftmax(s as tf.Tensor3D, 0.5), [randomTensor([2, 3, 5], 4)]);
  checkGradients((q, k) => attentionWeights(q as tf.Tensor3D, k as tf.Tensor3D, 0.5), [randomTensor([2, 3, 4], 5), randomTensor([2, 4, 3], 6)]);
  checkGradients((x) => gelu(x), [randomTensor([3, 7], 7)]);
  checkGradients((q, k, v) => multiHeadAttention(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, 2, 3, 2), [randomTensor([6, 4], 11), randomTensor([6, 4], 12), randomTensor([6, 4], 13)]);
  checkGradients((q, k, v) => multiHeadAttention(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, 1, 3, 1), [randomTensor([3, 16], 14), randomTensor([3, 16], 15), randomTensor([3, 16], 16)]);
  checkGradients((x, w, b) => dense(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D), [randomTensor([3, 4], 8), randomTensor([4, 5], 9), randomTensor([5], 10)]);
});

test('the native kernels give the same bits on one thread and on several', (t) => {
  if (skipNative) return t.skip(skipNative);
  setWasmKernelsEnabled(true);
  // Large enough to split: GELU and LayerNorm in chunks of 65536 elements, attention by image×head.
  const x = randomTensor([700, 192], 1) as tf.Tensor2D, w = randomTensor([192], 2) as tf.Tensor1D, b = randomTensor([192], 3) as tf.Tensor1D;
  const [q, k, v] = [4, 5, 6].map((seed) => randomTensor([16 * 33, 128], seed) as tf.Tensor2D);
  const run = (threads: number) => {
    setNativeThreads(threads);
    return tf.tidy(() => {
      const [dq, dk, dv] = tf.grads((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.sum(tf.mul(multiHeadAttention(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, 16, 33, 2), tf.sin(q))))([q, k, v]);
      const geluGrad = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(gelu(x), tf.sin(x))))(x);
      return [layerNorm(x, w, b), gelu(x), geluGrad, multiHeadAttention(q, k, v, 16, 33, 2), dq, dk, dv].map((t) => Array.from(t.dataSync()));
    });
  };
  const one = run(1);
  const several = run(3);
  one.forEach((values, i) => assert.deepEqual(several[i], values, `output ${i}`));
  // …and the chunks cover every element: the same values as the composed ops.
  setWasmKernelsEnabled(true, true, true, false);
  const composed = run(1);
  setWasmKernelsEnabled(true);
  setNativeThreads((info.native as { threads: number }).threads);
  composed.forEach((values, i) => assert.ok(values.every((c, j) => Math.abs(c - one[i][j]) < 1e-4), `output ${i} differs from the composed ops`));
  tf.dispose([x, w, b, q, k, v]);
});

test('the native kernels leak no tensors (the kept mean, 1/σ and softmax are released with the step)', (t) => {
  if (skipNative) return t.skip(skipNative);
  setWasmKernelsEnabled(true);
  const x = randomTensor([2 * 5, 32], 1) as tf.Tensor2D, w = randomTensor([32], 2) as tf.Tensor1D, b = randomTensor([32], 3) as tf.Tensor1D;
  const before = tf.memory().numTensors;
  tf.tidy(() => {
    const f = (x: tf.Tensor) => {
      const h = layerNorm(x as tf.Tensor2D, w, b);
      return tf.sum(gelu(multiHeadAttention(h, h, h, 2, 5, 2)));
    };
    f(x); // forward only (the momentum encoder)
    tf.grad(f)(x);
  });
  assert.equal(tf.memory().numTensors, before);
  tf.dispose([x, w, b]);
});

test('native AdamW and momentum average equal the composed ops bit for bit', (t) => {
  if (skipNative) return t.skip(skipNative);
  const active = () => fusedUpdatesActive() && nativeUpdates() !== null;
  assert.deepEqual(runUpdates(true, active), runUpdates(false, active));
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
  if (!skipNative) assert.ok(nativeKernelsActive() && fusedDenseActive(), 'the native elementwise kernels ran too');
  assert.deepEqual(native.map((l) => l.toFixed(4)), stock.map((l) => l.toFixed(4)), `native ${native} vs stock ${stock}`);
  assert.ok(stock[3] !== stock[0], 'the parameters moved between steps');
});
