import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './runner/moco/backend.js';
import { setWasmKernelsEnabled } from './runner/moco/kernels/batch-matmul.js';
import { layerNorm, gelu, attentionWeights, dense } from './runner/moco/ops.js';
await selectBackend('wasm');
const r = (s: number[]) => tf.randomNormal(s);
const x = r([4160, 192]) as tf.Tensor2D, w = r([192]) as tf.Tensor1D, b = r([192]) as tf.Tensor1D;
const W = r([192, 192]) as tf.Tensor2D, W4 = r([192, 768]) as tf.Tensor2D, b4 = r([768]) as tf.Tensor1D;
const h = r([4160, 768]);
const q = r([192, 65, 64]) as tf.Tensor3D, kT = r([192, 64, 65]) as tf.Tensor3D;
const cases: Record<string, () => tf.Tensor> = {
  'dense 192x192 +b': () => dense(x, W, b),
  'dense 192x768 +b': () => dense(x, W4, b4),
  'layerNorm [4160,192]': () => layerNorm(x, w, b),
  'layerNorm fwd+bwd': () => tf.grads((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.sum(layerNorm(x as tf.Tensor2D, w as tf.Tensor1D, b as tf.Tensor1D)))([x, w, b])[0],
  'gelu [4160,768]': () => gelu(h),
  'gelu fwd+bwd': () => tf.grad((h: tf.Tensor) => tf.sum(gelu(h)))(h),
  'attention weights': () => attentionWeights(q, kT, 0.125),
  'attention fwd+bwd': () => tf.grads((q: tf.Tensor, k: tf.Tensor) => tf.sum(attentionWeights(q as tf.Tensor3D, k as tf.Tensor3D, 0.125)))([q, kT])[0],
};
for (const [name, f] of Object.entries(cases)) {
  const best: Record<string, number> = { blas: Infinity, on: Infinity };
  for (let rep = 0; rep < 8; rep++) for (const k of ['blas', 'on']) {
    setWasmKernelsEnabled(true, true, true, k === 'on');
    const t0 = performance.now();
    tf.tidy(() => { f(); });
    best[k] = Math.min(best[k], performance.now() - t0);
  }
  console.log(`${name}: blas ${best.blas.toFixed(2)} ms, on ${best.on.toFixed(2)} ms`);
}
