import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './runner/moco/backend.js';
import { setWasmKernelsEnabled } from './runner/moco/kernels/batch-matmul.js';
import { multiHeadAttention } from './runner/moco/ops.js';
await selectBackend('wasm');
for (const [B, T, H, D] of [[64, 65, 3, 192], [256, 17, 4, 64]]) {
  const [q, k, v] = [1, 2, 3].map(() => tf.randomNormal([B * T, D]) as tf.Tensor2D);
  const w = tf.randomNormal([B * T, D]);
  const cases: Record<string, () => unknown> = {
    fwd: () => multiHeadAttention(q, k, v, B, T, H),
    'fwd+bwd': () => tf.grads((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.sum(tf.mul(multiHeadAttention(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, B, T, H), w)))([q, k, v]),
  };
  for (const [name, f] of Object.entries(cases)) {
    const best: Record<string, number> = { blas: Infinity, on: Infinity };
    for (let rep = 0; rep < 6; rep++) for (const kk of ['blas', 'on']) {
      setWasmKernelsEnabled(true, true, true, kk === 'on');
      const t0 = performance.now();
      tf.tidy(() => { f(); });
      best[kk] = Math.min(best[kk], performance.now() - t0);
    }
    console.log(`B${B} T${T} H${H} D${D} ${name}: blas ${best.blas.toFixed(2)} ms, on ${best.on.toFixed(2)} ms`);
  }
}
