/**
 * The MoCo v3 model: a query encoder (backbone → projector → predictor) and a momentum encoder
 * (backbone → projector) that follows it by an exponential moving average.
 *
 * Parameter names: `backbone.*` (the reference model's own names), `projector.*`, `predictor.*`.
 * The momentum encoder holds its own copy of every trained backbone/projector tensor; frozen
 * ones (fixed position embedding, random patch projection) are shared, since they are identical
 * in both encoders by construction and never change.
 */
import * as tf from '@tensorflow/tfjs';
import { backboneFeatureDim, backboneForward, initBackbone } from './backbone.js';
import { isVit, type TrainConfig } from './config.js';
import { initMlp, mlpForward, type MlpShape } from './heads.js';
import { emaFused, fusedUpdatesActive } from './kernels/heap-kernels.js';
import { cloneParams, prefixed, type Params } from './params.js';
import { Prng, mixSeed } from './rng.js';

export interface MocoModel {
  readonly config: TrainConfig;
  /** Query encoder: backbone.*, projector.*, predictor.* (trained and frozen tensors). */
  query: Params;
  /** Momentum encoder: the trained backbone.* and projector.* tensors only (none for SimCLR). */
  momentum: Params;
  /** Full names of tensors that are never trained. */
  readonly frozen: Set<string>;
  /** Backbone BatchNorm running statistics (ResNet): `backbone.*running_*`, updated, not trained. */
  readonly buffers: Set<string>;
}

export function projectorShape(c: TrainConfig): MlpShape {
  const p = c.moco.projector;
  return { layers: p.layers, inDim: backboneFeatureDim(c.model), hiddenDim: p.hiddenDim, outDim: p.outDim, lastBn: true };
}

export function predictorShape(c: TrainConfig): MlpShape {
  const p = c.moco.predictor;
  const out = c.moco.projector.outDim;
  // ResNet's predictor has no last BN in the reference; ViT's has one.
  return { layers: p.layers, inDim: out, hiddenDim: p.hiddenDim, outDim: out, lastBn: isVit(c.model.arch) };
}

/** Builds both encoders from the run's seed (the same seed gives the same model on every backend). */
export function buildMocoModel(config: TrainConfig): MocoModel {
  const rng = new Prng(mixSeed(config.seed, 0x1e17));
  const backbone = initBackbone(config.model, rng);
  const query: Params = { ...prefixed('backbone.', backbone.params), ...initMlp(projectorShape(config), 'projector.', rng) };
  if (config.moco.predictor.enabled) Object.assign(query, initMlp(predictorShape(config), 'predictor.', rng));
  const frozen = new Set([...backbone.frozen].filter((n) => !/running_/.test(n)).map((n) => 'backbone.' + n));
  const buffers = new Set([...backbone.frozen].filter((n) => /running_/.test(n)).map((n) => 'backbone.' + n));
  // SimCLR has no momentum encoder: both views go through the query encoder.
  const momentum = config.method === 'simclr' ? {} : cloneParams(pick(query, (n) => !n.startsWith('predictor.') && !frozen.has(n) && !buffers.has(n)));
  return { config, query, momentum, frozen, buffers };
}

/**
 * The backbone exactly as a run with this seed starts (before its first step): the probe's
 * random-init baseline. The frozen random patch projection is the same one the run kept.
 */
export function initialBackbone(model: TrainConfig['model'], seed: number): Params {
  return initBackbone(model, new Prng(mixSeed(seed, 0x1e17))).params;
}

export function pick(p: Params, keep: (name: string) => boolean): Params {
  const out: Params = {};
  for (const [k, v] of Object.entries(p)) if (keep(k)) out[k] = v;
  return out;
}

/** The names the optimizer updates, in a fixed order. */
export function trainableNames(model: MocoModel): string[] {
  return Object.keys(model.query).filter((n) => !model.frozen.has(n) && !model.buffers.has(n));
}

export function stripPrefix(p: Params, prefix: string): Params {
  const out: Params = {};
  for (const [k, v] of Object.entries(p)) if (k.startsWith(prefix)) out[k.slice(prefix.length)] = v;
  return out;
}

/** q = predictor(projector(backbone(x))), or projector(backbone(x)) without a predictor. */
export function queryForward(model: MocoModel, p: Params, images: tf.Tensor4D, bnStats?: Params): tf.Tensor2D {
  const c = model.config;
  const features = backboneForward(stripPrefix(p, 'backbone.'), images, c.model, true, bnStats);
  const z = mlpForward(p, 'projector.', projectorShape(c), features);
  return c.moco.predictor.enabled ? mlpForward(p, 'predictor.', predictorShape(c), z) : z;
}

/** k = momentum projector(momentum backbone(x)); no gradient flows here. */
export function keyForward(model: MocoModel, images: tf.Tensor4D): tf.Tensor2D {
  const c = model.config;
  const p: Params = { ...pick(model.query, (n) => model.frozen.has(n) || model.buffers.has(n)), ...model.momentum };
  const features = backboneForward(stripPrefix(p, 'backbone.'), images, c.model, true);
  return mlpForward(p, 'projector.', projectorShape(c), features);
}

/** θ_k ← m·θ_k + (1 − m)·θ_q for every momentum tensor (BN buffers are not averaged). */
export function momentumUpdate(model: MocoModel, m: number): void {
  const fused = fusedUpdatesActive(); // one pass per tensor on wasm (kernels/heap-kernels.ts)
  for (const [name, k] of Object.entries(model.momentum)) {
    const q = model.query[name];
    model.momentum[name] = fused ? emaFused(k, q, m) : tf.tidy(() => tf.add(tf.mul(k, m), tf.mul(q, 1 - m)));
    k.dispose();
  }
}
