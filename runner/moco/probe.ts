/**
 * Evaluation of a backbone export: the linear probe of main_lincls.py and a cosine kNN.
 *
 * Both run the frozen backbone in inference mode once per example ("extract features once"):
 * images are scaled to the backbone's input size, normalised, and mapped to the pooled output
 * (class token after the final LayerNorm for the default ViT). The probe then trains only a
 * linear layer on the stored features, which is fast. Unlike main_lincls.py there is no
 * crop/flip augmentation of the probe's training images (it would need a backbone pass per
 * epoch); docs/trainer.md says so.
 */
import * as tf from '@tensorflow/tfjs';
import { normalizeImages, pixelsToTensor } from './augment.js';
import { readoutFeatures } from './backbone.js';
import { readBackbone, type BackboneFiles } from './checkpoint.js';
import type { ImageDataset } from './dataset.js';
import { disposeParams, type Params } from './params.js';
import type { ModelConfig } from './config.js';
import { Prng, mixSeed } from './rng.js';
import { l2Normalize } from './loss.js';

export interface Features {
  features: Float32Array; // [n, dim]
  labels: Int32Array;
  dim: number;
}

export interface EvalHooks {
  signal?: AbortSignal;
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /** Probe progress: after every epoch of the linear layer. */
  onEpoch?: (e: { epoch: number; loss: number; lr: number }) => void | Promise<void>;
}

function throwIfAborted(signal?: AbortSignal) {
  if (signal?.aborted) throw signal.reason ?? new Error('aborted');
}

/** Backbone features of every example of `data`, in inference mode, `batch` images at a time. */
export async function extractFeatures(
  backbone: { params: Params; model: ModelConfig },
  data: ImageDataset,
  opts: { batch?: number; signal?: AbortSignal; lastBlocks?: number } = {},
): Promise<Features> {
  const batch = opts.batch ?? 64;
  const S = backbone.model.imageSize;
  let dim = 0;
  const chunks: Float32Array[] = [];
  const labels = new Int32Array(data.size);
  for (let start = 0; start < data.size; start += batch) {
    throwIfAborted(opts.signal);
    const n = Math.min(batch, data.size - start);
    const { pixels, labels: l } = await data.read(Array.from({ length: n }, (_, i) => start + i));
    labels.set(l, start);
    const f = tf.tidy(() => {
      let x = pixelsToTensor(pixels, n, data.height, data.width, data.channels);
      if (data.height !== S || data.width !== S) x = tf.image.resizeBilinear(x, [S, S]);
      return readoutFeatures(backbone.params, normalizeImages(x), backbone.model, opts.lastBlocks ?? 1);
    });
    dim = f.shape[1];
    chunks.push(f.dataSync() as Float32Array);
    f.dispose();
  }
  const features = new Float32Array(data.size * dim);
  let at = 0;
  for (const c of chunks) {
    features.set(c, at);
    at += c.length;
  }
  return { features, labels, dim };
}

export interface ProbeConfig {
  epochs: number;
  /** Base lr: the run uses lr × batch / 256 (SGD, momentum 0.9, no weight decay, cosine per epoch). */
  lr: number;
  batch: number;
  seed: number;
  /** Images per backbone pass while extracting features. */
  featureBatch: number;
}

export interface EvalResult {
  top1: number;
  top5: number;
  trainExamples: number;
  valExamples: number;
  featureDim: number;
  numClasses: number;
}

export interface ProbeResult extends EvalResult {
  /** Accuracy of the linear layer on its own training features. */
  trainTop1: number;
  trainTop5: number;
  epochs: number;
  finalLoss: number;
}

export function topK(scores: Float32Array, labels: Int32Array, classes: number): { top1: number; top5: number } {
  const n = labels.length;
  const k = Math.min(5, classes);
  let hit1 = 0;
  let hit5 = 0;
  for (let i = 0; i < n; i++) {
    const row = scores.subarray(i * classes, (i + 1) * classes);
    const target = row[labels[i]];
    let higher = 0;
    for (let c = 0; c < classes; c++) if (row[c] > target || (row[c] === target && c < labels[i])) higher++;
    if (higher === 0) hit1++;
    if (higher < k) hit5++;
  }
  return { top1: hit1 / n, top5: hit5 / n };
}

async function loadBoth(backboneFiles: BackboneFiles, data: { train: ImageDataset; val: ImageDataset }, batch: number, hooks: EvalHooks) {
  const { meta, params } = readBackbone(backboneFiles);
  try {
    const backbone = { params, model: meta.model };
    const train = await extractFeatures(backbone, data.train, { batch, signal: hooks.signal });
    const val = await extractFeatures(backbone, data.val, { batch, signal: hooks.signal });
    hooks.log?.('features extracted', { train: data.train.size, val: data.val.size, dim: train.dim });
    return { train, val };
  } finally {
    disposeParams(params);
  }
}

/** main_lincls.py on frozen features: a linear layer (weight N(0, 0.01), bias 0) trained with SGD. */
export async function linearProbe(
  backboneFiles: BackboneFiles,
  data: { train: ImageDataset; val: ImageDataset },
  probe: Partial<ProbeConfig> = {},
  hooks: EvalHooks = {},
): Promise<ProbeResult> {
  const c: ProbeConfig = { epochs: 10, lr: 0.1, batch: 256, seed: 0, featureBatch: 64, ...probe };
  const classes = data.train.numClasses;
  if (classes < 2) throw new RangeError('the linear probe needs a labelled training set with at least 2 classes');
  const { train, val } = await loadBoth(backboneFiles, data, c.featureBatch, hooks);
  return trainLinear(train, val, classes, c, hooks);
}

/** Trains and evaluates the linear layer on extracted features (exposed for tests and reuse). */
export async function trainLinear(train: Features, val: Features, classes: number, c: ProbeConfig, hooks: EvalHooks = {}): Promise<ProbeResult> {
  const D = train.dim;
  const rng = new Prng(mixSeed(c.seed, 0x11ea));
  let w = tf.tensor2d(rng.normalArray(D * classes, 0, 0.01), [D, classes]);
  let b = tf.zeros([classes]) as tf.Tensor1D;
  let mw = tf.zerosLike(w);
  let mb = tf.zerosLike(b);
  const X = tf.tensor2d(train.features, [train.labels.length, D]);
  const n = train.labels.length;
  const batch = Math.min(c.batch, n);
  const peakLr = (c.lr * batch) / 256;
  let finalLoss = NaN;
  try {
    for (let epoch = 0; epoch < c.epochs; epoch++) {
      throwIfAborted(hooks.signal);
      const lr = peakLr * 0.5 * (1 + Math.cos((Math.PI * epoch) / c.epochs));
      const perm = rng.permutation(n);
      let lossSum = 0;
      for (let s = 0; s < n; s += batch) {
        const idx = perm.subarray(s, Math.min(s + batch, n));
        const yIdx = Int32Array.from(idx, (i) => train.labels[i]);
        const { value, grads } = tf.tidy(() => {
          const xb = tf.gather(X, tf.tensor1d(idx, 'int32'));
          const yb = tf.oneHot(tf.tensor1d(yIdx, 'int32'), classes);
          return tf.valueAndGrads((wt: tf.Tensor, bt: tf.Tensor) => tf.losses.softmaxCrossEntropy(yb, tf.add(tf.matMul(xb, wt), bt)) as tf.Scalar)([w, b]);
        });
        lossSum += value.dataSync()[0] * idx.length;
        // SGD with momentum as PyTorch: buf ← 0.9·buf + g; p ← p − lr·buf
        const next = tf.tidy(() => {
          const nmw = tf.add(tf.mul(mw, 0.9), grads[0]);
          const nmb = tf.add(tf.mul(mb, 0.9), grads[1]);
          return [nmw, nmb, tf.sub(w, tf.mul(nmw, lr)), tf.sub(b, tf.mul(nmb, lr))];
        });
        [value, ...grads, mw, mb, w, b].forEach((t) => t.dispose());
        [mw, mb, w, b] = next as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor1D];
      }
      finalLoss = lossSum / n;
      await hooks.onEpoch?.({ epoch: epoch + 1, loss: finalLoss, lr });
    }
    const scoresOf = (f: Features) => tf.tidy(() => tf.add(tf.matMul(tf.tensor2d(f.features, [f.labels.length, D]), w), b).dataSync() as Float32Array);
    const valAcc = topK(scoresOf(val), val.labels, classes);
    const trainAcc = topK(scoresOf(train), train.labels, classes);
    return { ...valAcc, trainTop1: trainAcc.top1, trainTop5: trainAcc.top5, epochs: c.epochs, finalLoss, trainExamples: n, valExamples: val.labels.length, featureDim: D, numClasses: classes };
  } finally {
    [X, w, b, mw, mb].forEach((t) => t.dispose());
  }
}

export interface KnnConfig {
  /** Neighbours that vote. */
  k: number;
  /** Votes are weighted by exp(similarity / temperature) (InstDisc / DINO's kNN). */
  temperature: number;
  featureBatch: number;
}

/** Cosine kNN classification of val features against train features. */
export async function knnEvaluate(
  backboneFiles: BackboneFiles,
  data: { train: ImageDataset; val: ImageDataset },
  knn: Partial<KnnConfig> = {},
  hooks: EvalHooks = {},
): Promise<EvalResult & { k: number }> {
  const c: KnnConfig = { k: 20, temperature: 0.07, featureBatch: 64, ...knn };
  const { train, val } = await loadBoth(backboneFiles, data, c.featureBatch, hooks);
  return knnOnFeatures(train, val, data.train.numClasses, c);
}

export function knnOnFeatures(train: Features, val: Features, classes: number, c: KnnConfig): EvalResult & { k: number } {
  const k = Math.min(c.k, train.labels.length);
  const D = train.dim;
  const nVal = val.labels.length;
  const scores = new Float32Array(nVal * classes);
  const trainT = tf.tidy(() => tf.transpose(l2Normalize(tf.tensor2d(train.features, [train.labels.length, D]))));
  try {
    for (let s = 0; s < nVal; s += 256) {
      const n = Math.min(256, nVal - s);
      const [sims, idx] = tf.tidy(() => {
        const q = l2Normalize(tf.tensor2d(val.features.subarray(s * D, (s + n) * D), [n, D]));
        const { values, indices } = tf.topk(tf.matMul(q, trainT), k);
        return [values.dataSync() as Float32Array, indices.dataSync() as Int32Array];
      });
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < k; j++) {
          scores[(s + i) * classes + train.labels[idx[i * k + j]]] += Math.exp(sims[i * k + j] / c.temperature);
        }
      }
    }
  } finally {
    trainT.dispose();
  }
  return { ...topK(scores, val.labels, classes), k, trainExamples: train.labels.length, valExamples: nVal, featureDim: D, numClasses: classes };
}
