/**
 * The backbone behind one interface, whichever the architecture: ViT (vit.ts) or ResNet
 * (resnet.ts). Features are what the heads and the probe consume.
 */
import type * as tf from '@tensorflow/tfjs';
import { isVit, type ModelConfig } from './config.js';
import type { ParamSet, Params } from './params.js';
import type { Prng } from './rng.js';
import { initResnet, resnetFeatureDim, resnetForward } from './resnet.js';
import { initVit, vitForward } from './vit.js';

export function initBackbone(c: ModelConfig, rng: Prng): ParamSet {
  return isVit(c.arch) ? initVit(c, rng) : initResnet(c, rng);
}

export function backboneFeatureDim(c: ModelConfig): number {
  return isVit(c.arch) ? c.dim : resnetFeatureDim(c);
}

/**
 * images [B, S, S, 3] normalised → features [B, F]. `training` selects BatchNorm's batch
 * statistics (ResNet; ViT has no BN); `bnStats`, when given, receives the updated running
 * statistics of a training forward, as PyTorch's BN updates its buffers in train mode.
 */
export function backboneForward(p: Params, images: tf.Tensor4D, c: ModelConfig, training: boolean, bnStats?: Params): tf.Tensor2D {
  return isVit(c.arch) ? vitForward(p, images, c) : resnetForward(p, images, c, training, bnStats);
}

/**
 * Features for evaluation (inference mode): the backbone output, or for a ViT with a class token
 * the class tokens of the last `lastBlocks` blocks concatenated (DINO's readout). Returns the
 * readout actually used (1 where several blocks do not apply).
 */
export function readoutFeatures(p: Params, images: tf.Tensor4D, c: ModelConfig, lastBlocks = 1): tf.Tensor2D {
  return isVit(c.arch) ? vitForward(p, images, c, lastBlocks) : resnetForward(p, images, c, false);
}

export function effectiveReadout(c: ModelConfig, lastBlocks: number): number {
  return isVit(c.arch) && c.pooling === 'cls' ? Math.max(1, Math.min(lastBlocks, c.depth)) : 1;
}
