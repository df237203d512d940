/**
 * Checkpoint files (names from contracts/storageKeys.ts CHECKPOINT_FILES):
 *
 *  - state.safetensors + state.json: everything needed to resume bit-identically: both encoders
 *    (`query/…`, `momentum/…`), the optimizer's moments (`optim/<slot>/…`), and in the JSON the
 *    step, the PRNG state, the data-order position, the optimizer's scalars and the config.
 *  - backbone.safetensors + backbone.json: the query backbone only, under the reference
 *    PyTorch names and layouts (timm VisionTransformer / torchvision ResNet): conv weights OIHW,
 *    Linear weights [out, in], q/k/v fused into `attn.qkv`. A ViT export loads in PyTorch with
 *    `model.load_state_dict(safetensors.torch.load_file(...))` (strict; checked, features
 *    included, by scripts/check_pytorch_export.py and test/integration/pytorch-export.test.ts);
 *    a ResNet export needs `strict=False` (no `num_batches_tracked`, no `fc`). Back into Momentum
 *    with `readBackbone` (the linear probe does).
 */
import * as tf from '@tensorflow/tfjs';
import { isVit, type ModelConfig, type TrainConfig } from './config.js';
import type { Params } from './params.js';
import type { PrngState } from './rng.js';
import type { RunPlan } from './schedule.js';
import { readSafetensors, writeSafetensors, type SafeTensor } from './safetensors.js';
import { vitTokens } from './vit.js';
import { IMAGENET_MEAN, IMAGENET_STD } from './augment.js';

export const STATE_FILE = 'state.safetensors';
export const STATE_META_FILE = 'state.json';
export const BACKBONE_FILE = 'backbone.safetensors';
export const BACKBONE_META_FILE = 'backbone.json';
export type CheckpointFileName = typeof STATE_FILE | typeof STATE_META_FILE | typeof BACKBONE_FILE | typeof BACKBONE_META_FILE;
export type CheckpointFiles = Record<CheckpointFileName, Uint8Array>;
export type BackboneFiles = Pick<CheckpointFiles, typeof BACKBONE_FILE | typeof BACKBONE_META_FILE>;

export interface StateMeta {
  format: 'momentum.moco-v3.state/1';
  /** Completed optimizer steps. */
  step: number;
  /** Fractional epoch reached (step / stepsPerEpoch). */
  epoch: number;
  /** Where the data order stands: epoch index and batch position within its permutation. */
  data: { epoch: number; batchInEpoch: number; stepsPerEpoch: number };
  /** The run's fixed length and warmup; null while a time budget is still being measured. */
  plan?: RunPlan | null;
  rng: { augment: PrngState };
  optimizer: { name: string; scalars: Record<string, number> };
  config: TrainConfig;
  backend: string;
  lastLoss: number | null;
  createdAt: string;
}

export interface BackboneMeta {
  format: 'momentum.moco-v3.backbone/1';
  naming: 'timm-0.4.9-VisionTransformer' | 'torchvision-resnet';
  model: ModelConfig;
  featureDim: number;
  /** How images were fed: RGB, NCHW in PyTorch, scaled to [0,1], then normalised. */
  input: { imageSize: number; mean: number[]; std: number[] };
  step: number;
  epoch: number;
}

const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o, null, 1));
const dec = <T>(b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as T;

function toSafe(t: tf.Tensor): SafeTensor {
  return t.dtype === 'int32' ? { dtype: 'I32', shape: t.shape, data: t.dataSync() as Int32Array } : { dtype: 'F32', shape: t.shape, data: t.dataSync() as Float32Array };
}

function fromSafe(s: SafeTensor): tf.Tensor {
  return tf.tensor(s.data, s.shape, s.dtype === 'I32' ? 'int32' : 'float32');
}

// ---- full training state ----

export function writeState(parts: { query: Params; momentum: Params; optimizerSlots: Params }, meta: StateMeta): Pick<CheckpointFiles, typeof STATE_FILE | typeof STATE_META_FILE> {
  const tensors: Record<string, SafeTensor> = {};
  for (const [n, t] of Object.entries(parts.query)) tensors['query/' + n] = toSafe(t);
  for (const [n, t] of Object.entries(parts.momentum)) tensors['momentum/' + n] = toSafe(t);
  for (const [n, t] of Object.entries(parts.optimizerSlots)) tensors['optim/' + n] = toSafe(t);
  return { [STATE_FILE]: writeSafetensors(tensors, { format: meta.format }), [STATE_META_FILE]: enc(meta) };
}

export function readState(files: Pick<CheckpointFiles, typeof STATE_FILE | typeof STATE_META_FILE>): { meta: StateMeta; query: Params; momentum: Params; optimizerSlots: Params } {
  const meta = dec<StateMeta>(files[STATE_META_FILE]);
  if (meta.format !== 'momentum.moco-v3.state/1') throw new RangeError(`state.json: unknown format ${String(meta.format)}`);
  const { tensors } = readSafetensors(files[STATE_FILE]);
  const out = { meta, query: {} as Params, momentum: {} as Params, optimizerSlots: {} as Params };
  for (const [key, s] of Object.entries(tensors)) {
    const cut = key.indexOf('/');
    const group = key.slice(0, cut);
    const name = key.slice(cut + 1);
    const target = group === 'query' ? out.query : group === 'momentum' ? out.momentum : group === 'optim' ? out.optimizerSlots : null;
    if (!target) throw new RangeError(`state.safetensors: unexpected tensor ${key}`);
    target[name] = fromSafe(s);
  }
  return out;
}

// ---- backbone export with the reference names ----

const OIHW: number[] = [3, 2, 0, 1]; // from HWIO

function vitToReference(p: Params, c: ModelConfig): Params {
  const out: Params = {};
  out['patch_embed.proj.weight'] = tf.transpose(p['patch_embed.proj.weight'], OIHW);
  out['patch_embed.proj.bias'] = p['patch_embed.proj.bias'];
  if (p['cls_token']) out['cls_token'] = p['cls_token'];
  // timm always has a pos_embed parameter; "none" is exported as zeros, which adds nothing.
  out['pos_embed'] = p['pos_embed'] ?? tf.zeros([1, vitTokens(c).tokens, c.dim]);
  for (let i = 0; i < c.depth; i++) {
    const b = `blocks.${i}.`;
    for (const n of ['norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias', 'attn.proj.bias', 'mlp.fc1.bias', 'mlp.fc2.bias']) out[b + n] = p[b + n];
    out[b + 'attn.qkv.weight'] = tf.transpose(tf.concat(['q', 'k', 'v'].map((w) => p[`${b}attn.${w}.weight`]), 1));
    out[b + 'attn.qkv.bias'] = tf.concat(['q', 'k', 'v'].map((w) => p[`${b}attn.${w}.bias`]), 0);
    for (const n of ['attn.proj.weight', 'mlp.fc1.weight', 'mlp.fc2.weight']) out[b + n] = tf.transpose(p[b + n]);
  }
  if (p['norm.weight']) {
    out['norm.weight'] = p['norm.weight'];
    out['norm.bias'] = p['norm.bias'];
  }
  return out;
}

function vitFromReference(r: Params, c: ModelConfig): Params {
  const p: Params = {};
  const need = (n: string) => {
    if (!r[n]) throw new RangeError(`backbone.safetensors lacks ${n}`);
    return r[n];
  };
  p['patch_embed.proj.weight'] = tf.transpose(need('patch_embed.proj.weight'), [2, 3, 1, 0]);
  p['patch_embed.proj.bias'] = need('patch_embed.proj.bias');
  if (c.pooling === 'cls') p['cls_token'] = need('cls_token');
  if (c.posEmbed !== 'none') p['pos_embed'] = need('pos_embed');
  const D = c.dim;
  for (let i = 0; i < c.depth; i++) {
    const b = `blocks.${i}.`;
    for (const n of ['norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias', 'attn.proj.bias', 'mlp.fc1.bias', 'mlp.fc2.bias']) p[b + n] = need(b + n);
    const qkvT = tf.transpose(need(b + 'attn.qkv.weight')); // [D, 3D]
    const qkvB = need(b + 'attn.qkv.bias');
    ['q', 'k', 'v'].forEach((w, j) => {
      p[`${b}attn.${w}.weight`] = tf.slice(qkvT, [0, j * D], [D, D]);
      p[`${b}attn.${w}.bias`] = tf.slice(qkvB, [j * D], [D]);
    });
    for (const n of ['attn.proj.weight', 'mlp.fc1.weight', 'mlp.fc2.weight']) p[b + n] = tf.transpose(need(b + n));
  }
  if (c.pooling !== 'gap_no_ln') {
    p['norm.weight'] = need('norm.weight');
    p['norm.bias'] = need('norm.bias');
  }
  return p;
}

function resnetToReference(p: Params): Params {
  const out: Params = {};
  for (const [n, t] of Object.entries(p)) out[n] = t.rank === 4 ? tf.transpose(t, OIHW) : t;
  return out;
}

function resnetFromReference(r: Params): Params {
  const out: Params = {};
  for (const [n, t] of Object.entries(r)) {
    if (n.endsWith('num_batches_tracked')) continue;
    out[n] = t.rank === 4 ? tf.transpose(t, [2, 3, 1, 0]) : t;
  }
  return out;
}

/** The backbone export of a trained model (backbone params without the `backbone.` prefix). */
export function writeBackbone(backbone: Params, model: ModelConfig, featureDim: number, progress: { step: number; epoch: number }): BackboneFiles {
  const tensors: Record<string, SafeTensor> = {};
  tf.tidy(() => {
    const ref = isVit(model.arch) ? vitToReference(backbone, model) : resnetToReference(backbone);
    for (const [n, t] of Object.entries(ref)) tensors[n] = toSafe(t); // dataSync copies out
  });
  const meta: BackboneMeta = {
    format: 'momentum.moco-v3.backbone/1',
    naming: isVit(model.arch) ? 'timm-0.4.9-VisionTransformer' : 'torchvision-resnet',
    model,
    featureDim,
    input: { imageSize: model.imageSize, mean: [...IMAGENET_MEAN], std: [...IMAGENET_STD] },
    step: progress.step,
    epoch: progress.epoch,
  };
  return { [BACKBONE_FILE]: writeSafetensors(tensors, { format: meta.format, naming: meta.naming }), [BACKBONE_META_FILE]: enc(meta) };
}

/** Loads a backbone export into Momentum's layout: {meta, params} ready for backboneForward. */
export function readBackbone(files: BackboneFiles): { meta: BackboneMeta; params: Params } {
  const meta = dec<BackboneMeta>(files[BACKBONE_META_FILE]);
  if (meta.format !== 'momentum.moco-v3.backbone/1') throw new RangeError(`backbone.json: unknown format ${String(meta.format)}`);
  const { tensors } = readSafetensors(files[BACKBONE_FILE]);
  const ref: Params = {};
  for (const [n, s] of Object.entries(tensors)) ref[n] = fromSafe(s);
  const params = tf.tidy(() => {
    const p = isVit(meta.model.arch) ? vitFromReference(ref, meta.model) : resnetFromReference(ref);
    Object.values(p).forEach((t) => tf.keep(t));
    return p;
  });
  for (const t of Object.values(ref)) if (!Object.values(params).includes(t)) t.dispose();
  return { meta, params };
}
