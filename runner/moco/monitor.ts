/**
 * Watching it learn: a kNN classifier on the backbone's current features, evaluated every few
 * steps on a fixed labeled subset of the training split (a "bank" of labeled images that vote, and
 * held-out training images that are classified). The MoCo v3 paper monitors pretraining the same
 * way (a kNN on class-token features, App. A). The evaluation split is never read here.
 */
import * as tf from '@tensorflow/tfjs';
import { normalizeImages, pixelsToTensor } from './augment.js';
import { backboneForward } from './backbone.js';
import type { ModelConfig, MonitorConfig } from './config.js';
import type { ImageDataset } from './dataset.js';
import type { Params } from './params.js';
import { knnOnFeatures, type Features } from './probe.js';
import { Prng, mixSeed } from './rng.js';

/** Evaluations over a run when `monitor.knnEvery` is left to the trainer. */
export const AUTO_KNN_EVALUATIONS = 20;

export function knnInterval(m: MonitorConfig, totalSteps: number): number {
  return m.knnEvery ?? Math.max(1, Math.round(totalSteps / AUTO_KNN_EVALUATIONS));
}

interface Subset {
  pixels: Uint8Array;
  labels: Int32Array;
}

export class KnnMonitor {
  private constructor(
    private readonly bank: Subset,
    private readonly queries: Subset,
    private readonly data: Pick<ImageDataset, 'height' | 'width' | 'channels' | 'numClasses'>,
    private readonly m: MonitorConfig,
  ) {}

  /** Reads the fixed subset once (a seeded draw without replacement from the training split). */
  static async open(data: ImageDataset, m: MonitorConfig, seed: number): Promise<KnnMonitor> {
    const order = new Prng(mixSeed(seed, 0x6b6e6e)).permutation(data.size);
    const bank = await data.read(order.subarray(0, m.knnBank));
    const queries = await data.read(order.subarray(m.knnBank, m.knnBank + m.knnQueries));
    return new KnnMonitor(bank, queries, data, m);
  }

  /** kNN top-1 of the held-out training images against the bank, with the backbone as it is now. */
  evaluate(backbone: Params, model: ModelConfig): number {
    const bank = this.features(backbone, model, this.bank);
    const queries = this.features(backbone, model, this.queries);
    return knnOnFeatures(bank, queries, this.data.numClasses, { k: this.m.k, temperature: 0.07, featureBatch: 256 }).top1;
  }

  private features(backbone: Params, model: ModelConfig, s: Subset, batch = 256): Features {
    const { height: h, width: w, channels } = this.data;
    const n = s.labels.length;
    const S = model.imageSize;
    const per = h * w * channels;
    let out = new Float32Array(0);
    let dim = 0;
    for (let start = 0; start < n; start += batch) {
      const b = Math.min(batch, n - start);
      const f = tf.tidy(() => {
        let x = pixelsToTensor(s.pixels.subarray(start * per, (start + b) * per), b, h, w, channels);
        if (h !== S || w !== S) x = tf.image.resizeBilinear(x, [S, S]);
        return backboneForward(backbone, normalizeImages(x), model, false);
      });
      if (start === 0) {
        dim = f.shape[1];
        out = new Float32Array(n * dim);
      }
      out.set(f.dataSync(), start * dim);
      f.dispose();
    }
    return { features: out, labels: s.labels, dim };
  }
}
