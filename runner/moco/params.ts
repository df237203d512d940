/**
 * Models are explicit parameter tensors plus pure forward functions (no tf.layers): a set of
 * named tensors is easy to copy into a momentum encoder, average, checkpoint and export.
 */
import * as tf from '@tensorflow/tfjs';

/** Named parameter tensors of one model part. Names follow the reference PyTorch modules. */
export type Params = Record<string, tf.Tensor>;

/** A freshly initialised model part: its tensors and the names that are never trained. */
export interface ParamSet {
  params: Params;
  /** Names of parameters without gradient (fixed sin-cos pos embed, random patch projection). */
  frozen: Set<string>;
}

export function prefixed(prefix: string, p: Params): Params {
  const out: Params = {};
  for (const [k, v] of Object.entries(p)) out[prefix + k] = v;
  return out;
}

export function disposeParams(p: Params): void {
  for (const t of Object.values(p)) t.dispose();
}

/** A deep copy (new tensors), e.g. the momentum encoder at build time. */
export function cloneParams(p: Params): Params {
  const out: Params = {};
  for (const [k, v] of Object.entries(p)) out[k] = tf.clone(v);
  return out;
}

export function countParams(p: Params): number {
  return Object.values(p).reduce((n, t) => n + t.size, 0);
}

/** U(−a, a) / xavier-uniform / PyTorch Linear-default initialisers fed from the JS PRNG. */
export function uniformTensor(draw: (n: number, lo: number, hi: number) => Float32Array, shape: number[], bound: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(draw(n, -bound, bound), shape);
}
