/**
 * The optimizer and momentum-average updates on fixed tensors, for the tests that hold our fused
 * kernels (wasm-kernels.test.ts) and the native ones (native-blas.test.ts) equal to the composed
 * tfjs ops bit for bit: three AdamW steps with weight decay, then one momentum average.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { setWasmKernelsEnabled } from '../../../runner/moco/kernels/batch-matmul.js';
import { resolveTrainConfig } from '../../../runner/moco/config.js';
import { momentumUpdate, type MocoModel } from '../../../runner/moco/model.js';
import { createOptimizer } from '../../../runner/moco/optim.js';
import { randomTensor } from './gradcheck.js';

export interface UpdateResults {
  w: number[];
  b: number[];
  ema: number[];
  slots: Record<string, number[]>;
}

/**
 * Runs the updates with our kernels on or off (`setWasmKernelsEnabled(kernels)`); `active` says
 * whether the path under test is then in use, and must say exactly `kernels`. Same inputs each call.
 */
export function runUpdates(kernels: boolean, active: () => boolean): UpdateResults {
  const params = { w: randomTensor([7, 33], 20), b: randomTensor([33], 21) };
  const grads = [0, 1, 2].map((s) => ({ w: randomTensor([7, 33], 30 + s), b: randomTensor([33], 40 + s) }));
  setWasmKernelsEnabled(kernels);
  assert.equal(active(), kernels);
  const opt = createOptimizer({ ...resolveTrainConfig({ optim: { batch: 8 } }, { height: 8, width: 8, size: 8 }).optim, weightDecay: 0.1 });
  let p: Record<string, tf.Tensor> = { w: tf.clone(params.w), b: tf.clone(params.b) };
  for (const g of grads) p = opt.apply(p, g, 1e-2);
  const slots = Object.fromEntries(Object.entries(opt.slots()).map(([k, t]) => [k, Array.from(t.dataSync())]));
  const model = { momentum: { w: tf.clone(params.w) }, query: { w: p.w } } as unknown as MocoModel;
  momentumUpdate(model, 0.99);
  const out = { w: Array.from(p.w.dataSync()), b: Array.from(p.b.dataSync()), ema: Array.from(model.momentum.w.dataSync()), slots };
  tf.dispose([p.w, p.b, model.momentum.w, params.w, params.b, ...grads.flatMap((g) => [g.w, g.b])]);
  opt.dispose();
  return out;
}
