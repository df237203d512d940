/**
 * A tiny generated image set for tests and local runs without data: each class is a texture
 * (stripes at one of several orientations and frequencies) in a random colour, phase and
 * brightness, with pixel noise. The class survives MoCo's augmentations (crops, colour jitter),
 * so self-supervised features can learn it, while colour and phase are nuisances.
 * (runner/datasets/ has the product's dataset generator; this one keeps the trainer standalone.)
 */
import { InMemoryImageDataset } from './dataset.js';
import { Prng } from './rng.js';

export interface SyntheticOptions {
  size: number;
  imageSize: number;
  numClasses?: number;
  channels?: 1 | 3;
  seed?: number;
}

export function syntheticTextures(o: SyntheticOptions): InMemoryImageDataset {
  const classes = o.numClasses ?? 4;
  const channels = o.channels ?? 3;
  const S = o.imageSize;
  const rng = new Prng(o.seed ?? 1);
  const pixels = new Uint8Array(o.size * S * S * channels);
  const labels = new Int32Array(o.size);
  for (let i = 0; i < o.size; i++) {
    const label = i % classes;
    labels[i] = label;
    const angle = (Math.PI * (label % 4)) / 4 + rng.uniform(-0.15, 0.15);
    const freq = ((2 * Math.PI) / S) * (2 + 2 * Math.floor(label / 4)) * rng.uniform(0.9, 1.1);
    const phase = rng.uniform(0, 2 * Math.PI);
    const colorA = [rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0, 1)];
    const colorB = [rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0, 1)];
    const [ca, sa] = [Math.cos(angle), Math.sin(angle)];
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const t = 0.5 + 0.5 * Math.sin(freq * (x * ca + y * sa) + phase);
        for (let c = 0; c < channels; c++) {
          const v = channels === 1 ? t : colorA[c] * t + colorB[c] * (1 - t);
          const noisy = v + 0.08 * rng.normal();
          pixels[((i * S + y) * S + x) * channels + c] = Math.max(0, Math.min(255, Math.round(noisy * 255)));
        }
      }
    }
  }
  return new InMemoryImageDataset(pixels, labels, S, S, channels, classes);
}
