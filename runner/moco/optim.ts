/**
 * AdamW and LARS as the MoCo v3 reference uses them, over named parameter tensors.
 *
 * AdamW (torch.optim.AdamW): decoupled weight decay p ← p − lr·wd·p on every trainable parameter
 * (biases, norms and the class token included, as in the reference), then the Adam update with
 * bias correction. LARS (moco-v3 optimizer.py): parameters with ndim ≤ 1 get neither weight decay
 * nor the trust ratio; others g ← g + wd·p, g ← g · η‖p‖/‖g‖ (1 if either norm is 0), then
 * momentum μ ← 0.9μ + g, p ← p − lr·μ. Frozen parameters never reach an optimizer.
 */
import * as tf from '@tensorflow/tfjs';
import type { OptimConfig } from './config.js';
import { adamwFused, fusedUpdatesActive } from './kernels/heap-kernels.js';
import type { Params } from './params.js';

export interface Optimizer {
  readonly name: 'adamw' | 'lars';
  /** Applies one update: returns the new parameters and disposes the old ones. */
  apply(params: Params, grads: Params, lr: number): Params;
  /** Slot tensors to checkpoint, named `<slot>/<param>`, and the scalar state. */
  slots(): Params;
  scalars(): Record<string, number>;
  restore(slots: Params, scalars: Record<string, number>): void;
  dispose(): void;
}

export function createOptimizer(o: OptimConfig): Optimizer {
  return o.name === 'adamw' ? new AdamW(o.betas, o.eps, o.weightDecay) : new Lars(o.weightDecay);
}

abstract class SlotOptimizer {
  protected state: Record<string, Params> = {};
  constructor(protected readonly slotNames: string[]) {
    for (const s of slotNames) this.state[s] = {};
  }
  /** Call outside tf.tidy: a slot created inside one would be disposed with it. */
  protected slot(s: string, name: string, like: tf.Tensor): tf.Tensor {
    return (this.state[s][name] ??= tf.zerosLike(like));
  }
  protected setSlot(s: string, name: string, t: tf.Tensor): void {
    this.state[s][name]?.dispose();
    this.state[s][name] = t;
  }
  slots(): Params {
    const out: Params = {};
    for (const s of this.slotNames) for (const [n, t] of Object.entries(this.state[s])) out[`${s}/${n}`] = t;
    return out;
  }
  protected restoreSlots(slots: Params): void {
    this.dispose();
    for (const s of this.slotNames) this.state[s] = {};
    for (const [key, t] of Object.entries(slots)) {
      const cut = key.indexOf('/');
      this.state[key.slice(0, cut)][key.slice(cut + 1)] = t;
    }
  }
  dispose(): void {
    for (const s of this.slotNames) for (const t of Object.values(this.state[s])) t.dispose();
  }
}

class AdamW extends SlotOptimizer implements Optimizer {
  readonly name = 'adamw' as const;
  private t = 0;
  constructor(
    private readonly betas: [number, number],
    private readonly eps: number,
    private readonly weightDecay: number,
  ) {
    super(['exp_avg', 'exp_avg_sq']);
  }
  apply(params: Params, grads: Params, lr: number): Params {
    this.t += 1;
    const [b1, b2] = this.betas;
    const bc1 = 1 - Math.pow(b1, this.t);
    const bc2Sqrt = Math.sqrt(1 - Math.pow(b2, this.t));
    const out: Params = {};
    for (const [name, p] of Object.entries(params)) {
      const g = grads[name];
      const m0 = this.slot('exp_avg', name, p);
      const v0 = this.slot('exp_avg_sq', name, p);
      // On wasm one fused pass (kernels/heap-kernels.ts) does the same float32 steps.
      const fused = fusedUpdatesActive();
      const [m, v, next] = fused ? adamwFused(p, g, m0, v0, { lr, beta1: b1, beta2: b2, bc1, bc2Sqrt, eps: this.eps, weightDecay: this.weightDecay }) : tf.tidy(() => {
        const m = tf.add(tf.mul(m0, b1), tf.mul(g, 1 - b1));
        const v = tf.add(tf.mul(v0, b2), tf.mul(tf.square(g), 1 - b2));
        const decayed = tf.mul(p, 1 - lr * this.weightDecay);
        const denom = tf.add(tf.div(tf.sqrt(v), bc2Sqrt), this.eps);
        return [m, v, tf.sub(decayed, tf.mul(tf.div(m, denom), lr / bc1))];
      });
      this.setSlot('exp_avg', name, m);
      this.setSlot('exp_avg_sq', name, v);
      p.dispose();
      out[name] = next;
    }
    return out;
  }
  scalars() {
    return { step: this.t };
  }
  restore(slots: Params, scalars: Record<string, number>) {
    this.restoreSlots(slots);
    this.t = scalars.step ?? 0;
  }
}

class Lars extends SlotOptimizer implements Optimizer {
  readonly name = 'lars' as const;
  constructor(
    private readonly weightDecay: number,
    private readonly momentum = 0.9,
    private readonly trustCoefficient = 0.001,
  ) {
    super(['mu']);
  }
  apply(params: Params, grads: Params, lr: number): Params {
    const out: Params = {};
    for (const [name, p] of Object.entries(params)) {
      const g = grads[name];
      const mu0 = this.slot('mu', name, p);
      const [mu, next] = tf.tidy(() => {
        let dp: tf.Tensor = g;
        if (p.rank > 1) {
          dp = tf.add(dp, tf.mul(p, this.weightDecay));
          const pNorm = tf.norm(p);
          const dNorm = tf.norm(dp);
          const ratio = tf.where(
            tf.logicalAnd(tf.greater(pNorm, 0), tf.greater(dNorm, 0)),
            tf.div(tf.mul(pNorm, this.trustCoefficient), dNorm),
            tf.onesLike(pNorm),
          );
          dp = tf.mul(dp, ratio);
        }
        const mu = tf.add(tf.mul(mu0, this.momentum), dp);
        return [mu, tf.sub(p, tf.mul(mu, lr))];
      });
      this.setSlot('mu', name, mu);
      p.dispose();
      out[name] = next;
    }
    return out;
  }
  scalars() {
    return {};
  }
  restore(slots: Params) {
    this.restoreSlots(slots);
  }
}

/** Global L2 norm of a set of gradients. */
export function globalNorm(grads: Params, names?: string[]): number {
  const list = (names ?? Object.keys(grads)).filter((n) => grads[n]);
  if (list.length === 0) return 0;
  const norm = tf.tidy(() => tf.sqrt(tf.addN(list.map((n) => tf.sum(tf.square(grads[n]))))));
  const value = norm.dataSync()[0];
  norm.dispose();
  return value;
}

/**
 * The global L2 norms of several groups of gradients (each a list of names; empty groups give 0),
 * with every tensor's sum of squares computed once and one read-back for all: the same float32
 * operations per group as `globalNorm`, so the same values.
 */
export function globalNorms<K extends string>(grads: Params, groups: Record<K, string[]>): Record<K, number> {
  const keys = Object.keys(groups) as K[];
  const lists = keys.map((k) => groups[k].filter((n) => grads[n]));
  const used = [...new Set(lists.flat())];
  const values = used.length === 0 ? new Float32Array(0) : tf.tidy(() => {
    const sq = new Map(used.map((n) => [n, tf.sum(tf.square(grads[n]))]));
    const norms = lists.filter((l) => l.length > 0).map((l) => tf.sqrt(tf.addN(l.map((n) => sq.get(n)!))));
    return tf.stack(norms);
  });
  const read = values instanceof tf.Tensor ? values.dataSync() : values;
  if (values instanceof tf.Tensor) values.dispose();
  let next = 0;
  return Object.fromEntries(keys.map((k, i) => [k, lists[i].length ? read[next++] : 0])) as Record<K, number>;
}

/** torch.nn.utils.clip_grad_norm_: scale every gradient by max/(norm + 1e-6) when norm > max. */
export function clipByGlobalNorm(grads: Params, maxNorm: number, norm: number): Params {
  const scale = maxNorm / (norm + 1e-6);
  if (scale >= 1) return grads;
  const out: Params = {};
  for (const [n, g] of Object.entries(grads)) {
    out[n] = tf.mul(g, scale);
    g.dispose();
  }
  return out;
}
