/** Numerical gradient checking for the custom ops: central differences in float32 on the cpu backend. */
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { Prng } from '../../../runner/moco/rng.js';

export function randomTensor(shape: number[], seed: number, scale = 1): tf.Tensor {
  const r = new Prng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(r.normalArray(n, 0, scale), shape);
}

/**
 * Checks the analytic gradient of L = Σ f(inputs) ⊙ R (R a fixed random tensor) against central
 * differences for every element of every input (inputs are small).
 */
export function checkGradients(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], opts: { eps?: number; tol?: number } = {}) {
  const eps = opts.eps ?? 1e-2;
  const tol = opts.tol ?? 2e-2;
  const out = tf.tidy(() => f(...inputs));
  const weights = randomTensor(out.shape, 99);
  out.dispose();
  const loss = (...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), weights)) as tf.Scalar;
  const analytic = tf.tidy(() => tf.grads(loss)(inputs)).map((g) => g.dataSync());
  inputs.forEach((input, which) => {
    const base = input.dataSync().slice();
    for (let i = 0; i < base.length; i++) {
      const at = (delta: number) =>
        tf.tidy(() => {
          const v = base.slice();
          v[i] += delta;
          const xs = inputs.map((x, j) => (j === which ? tf.tensor(v, x.shape) : x));
          return loss(...xs).dataSync()[0];
        });
      const numeric = (at(eps) - at(-eps)) / (2 * eps);
      const a = analytic[which][i];
      const err = Math.abs(a - numeric) / Math.max(1, Math.abs(numeric));
      assert.ok(err < tol, `input ${which} element ${i}: analytic ${a} vs numeric ${numeric}`);
    }
  });
  weights.dispose();
}
