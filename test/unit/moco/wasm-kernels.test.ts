import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../../runner/moco/backend.js';
import { setWasmKernelsEnabled, wasmKernelsActive } from '../../../runner/moco/kernels/batch-matmul.js';
import { wasmBackendInternals } from '../../../runner/moco/kernels/wasm-module.js';
import { fusedUpdatesActive } from '../../../runner/moco/kernels/heap-kernels.js';
import { nativeKernelsActive } from '../../../runner/moco/kernels/native-ops.js';
import { bmm, gelu } from '../../../runner/moco/ops.js';
import { checkGradients, randomTensor } from './gradcheck.js';
import { runUpdates } from './updateRun.js';

// Two threads whatever the machine: covers the threaded build (shared heap, bmm.shared.wasm) and
// the Node workarounds of kernels/wasm-threads.ts.
process.env.MOCO_WASM_THREADS = '2';
// A native BLAS that cannot be loaded: the wasm kernels must stand alone (the fallback of a machine
// without OpenBLAS), and the backend must say why BLAS is not used.
const MISSING_BLAS = '/nonexistent/libopenblas.so.0';
process.env.MOCO_BLAS_LIBRARY = MISSING_BLAS;
// No C compiler: the native elementwise kernels cannot be built, and the wasm GELU and the composed
// LayerNorm/softmax must stand in (a machine without gcc).
process.env.MOCO_CC = '/nonexistent/cc';

before(async () => {
  const info = await selectBackend('wasm');
  assert.equal(info.kernels, 'bmm+gelu');
  assert.match(info.native as string, /^no C compiler \(tried \/nonexistent\/cc/);
  assert.equal(nativeKernelsActive(), false, 'LayerNorm and softmax stay composed');
  assert.equal(typeof info.blas, 'string');
  assert.match(info.blas as string, /^no native BLAS: /);
  assert.ok((info.blas as string).includes(MISSING_BLAS), info.blas as string);
  assert.equal(info.threads, 2, JSON.stringify(info.tried));
  assert.ok((tf.engine().backend as unknown as { wasm: { HEAPF32: Float32Array } }).wasm.HEAPF32.buffer instanceof SharedArrayBuffer);
});

/** The stock tfjs kernel's result and ours, for the same inputs. */
function bothPaths(a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean): [tf.Tensor, tf.Tensor] {
  setWasmKernelsEnabled(false);
  const stock = tf.matMul(a, b, ta, tb);
  setWasmKernelsEnabled(true);
  return [stock, tf.matMul(a, b, ta, tb)];
}

test('our BatchMatMul matches the stock wasm kernel: every transpose, broadcast batch, odd sizes', () => {
  const cases: [number[], number[], boolean, boolean][] = [
    [[3, 5, 7], [3, 7, 9], false, false],
    [[3, 7, 5], [3, 7, 9], true, false],
    [[3, 5, 7], [3, 9, 7], false, true],
    [[3, 7, 5], [3, 9, 7], true, true],
    [[1, 5, 7], [4, 7, 17], false, false],
    [[2, 5, 7], [1, 17, 7], false, true],
    [[6, 13], [6, 20], true, false], // 2-D transposed: ours too
    [[2, 3, 9, 8], [2, 3, 9, 8], false, true], // rank 4
    [[12, 65, 64], [12, 64, 65], false, false], // attention-sized: 8-wide blocks + column tail
  ];
  for (const [sa, sb, ta, tb] of cases) {
    tf.tidy(() => {
      const [stock, ours] = bothPaths(randomTensor(sa, 1), randomTensor(sb, 2), ta, tb);
      assert.deepEqual(ours.shape, stock.shape);
      const err = tf.max(tf.abs(tf.sub(stock, ours))).dataSync()[0];
      assert.ok(err < 1e-4, `${sa}·${sb} (tA ${ta}, tB ${tb}): max error ${err}`);
    });
  }
});

test('bmm has the right gradient on our kernel (transposed products in the backward pass)', () => {
  assert.ok(wasmKernelsActive());
  checkGradients((a, b) => bmm(a as tf.Tensor3D, b as tf.Tensor3D), [randomTensor([2, 5, 4], 4), randomTensor([2, 4, 9], 5)]);
});

test('fused GELU matches the composed one (values and gradients), odd sizes included', () => {
  for (const n of [1, 3, 4, 7, 1001]) {
    tf.tidy(() => {
      const x = randomTensor([n], n, 3);
      const dyWeights = randomTensor([n], n + 1);
      const run = (on: boolean) => {
        setWasmKernelsEnabled(on);
        const { value, grads } = tf.valueAndGrads((x: tf.Tensor) => tf.sum(tf.mul(gelu(x), dyWeights)))([x]);
        return [gelu(x), value, grads[0]];
      };
      const stock = run(false), ours = run(true);
      stock.forEach((s, i) => {
        const err = tf.max(tf.abs(tf.sub(s, ours[i]))).dataSync()[0];
        assert.ok(err < 2e-6 * Math.max(1, Math.sqrt(n)), `n ${n}, output ${i}: max error ${err}`);
      });
    });
  }
  // Far tails: GELU(x) → x for x ≫ 0 and → 0 for x ≪ 0, gradient → 1 and 0, no NaN.
  const far = tf.tensor1d([-30, -9, -4.5, 4.5, 9, 30]);
  const close = (got: ArrayLike<number>, want: number[]) => want.forEach((w, i) => assert.ok(Math.abs(got[i] - w) < 1e-4, `${got[i]} vs ${w}`));
  close(gelu(far).dataSync(), [0, 0, 0, 4.5, 9, 30]);
  close(tf.grad((x: tf.Tensor) => tf.sum(gelu(x)))(far).dataSync(), [0, 0, 0, 1, 1, 1]);
  far.dispose();
});

test('gelu on our fused kernel passes the numerical gradient check', () => {
  assert.ok(wasmKernelsActive());
  checkGradients((x) => gelu(x), [randomTensor([2, 5], 12, 2)]);
});

test('our kernels leak neither tensors nor heap (the bmm scratch buffer is freed)', () => {
  const a = randomTensor([4, 9, 8], 6), b = randomTensor([4, 10, 8], 7);
  tf.matMul(a, b, false, true).dispose(); // first call instantiates the module
  const tensors = tf.memory().numTensors;
  const dataIds = tf.engine().backend.numDataIds();
  for (let i = 0; i < 5; i++) tf.matMul(a, b, false, true).dispose();
  for (let i = 0; i < 5; i++) tf.grad((x: tf.Tensor) => tf.sum(gelu(x)))(a).dispose();
  assert.equal(tf.memory().numTensors, tensors);
  assert.equal(tf.engine().backend.numDataIds(), dataIds);
  tf.dispose([a, b]);
});

test('a backend without the expected internals is refused with a reason (stock kernels then)', () => {
  assert.match(String(wasmBackendInternals({})), /no Emscripten module/);
  assert.match(String(wasmBackendInternals({ wasm: { asm: {} } })), /not a WebAssembly.Memory/);
  assert.equal(typeof wasmBackendInternals(tf.engine().backend), 'object');
});

test('fused AdamW and momentum average equal the composed ops bit for bit; Identity shares data', () => {
  const composed = runUpdates(false, fusedUpdatesActive);
  assert.deepEqual(runUpdates(true, fusedUpdatesActive), composed);
  // Identity (tfjs clones saved tensors through it, with our kernels on) adds a reference, not a copy.
  const w = randomTensor([7, 33], 20);
  const dataIds = tf.engine().backend.numDataIds();
  const c = tf.clone(w);
  assert.equal(tf.engine().backend.numDataIds(), dataIds);
  assert.deepEqual(Array.from(c.dataSync()), Array.from(w.dataSync()));
  c.dispose();
  assert.equal(w.isDisposed, false);
  assert.equal(w.dataSync().length, 7 * 33);
  w.dispose();
});
