/**
 * MoCo v3's two asymmetric views (BYOL recipe, main_moco.py), as batched tensor ops on the
 * training backend. Every random parameter (crop boxes, jitter factors, probabilities, blur
 * sigmas) is drawn in JS from the run's Prng, so a resumed run draws the same views.
 *
 * Order: random resized crop (+ horizontal flip, folded into the crop box: flipping commutes with
 * the pointwise colour ops and the symmetric blur), colour jitter, grayscale, Gaussian blur,
 * solarize, normalisation. Known differences from torchvision/PIL, all documented in
 * docs/trainer.md: bilinear resize without antialiasing; hue jitter as a rotation in YIQ space
 * instead of an HSV shift; Gaussian blur as a true Gaussian with σ scaled by imageSize/224
 * (the reference's σ range is for 224-px crops).
 */
import * as tf from '@tensorflow/tfjs';
import type { AugmentConfig } from './config.js';
import type { Prng } from './rng.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

/** uint8 HWC pixels of n images → float [n, h, w, 3] in [0, 1] (grayscale repeated to RGB). */
export function pixelsToTensor(pixels: Uint8Array, n: number, h: number, w: number, channels: 1 | 3): tf.Tensor4D {
  return tf.tidy(() => {
    const x = tf.div(tf.cast(tf.tensor4d(pixels, [n, h, w, channels], 'int32'), 'float32'), 255);
    return (channels === 1 ? tf.tile(x, [1, 1, 1, 3]) : x) as tf.Tensor4D;
  });
}

export function normalizeImages(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => tf.div(tf.sub(x, tf.tensor1d(IMAGENET_MEAN as unknown as number[])), tf.tensor1d(IMAGENET_STD as unknown as number[])));
}

/** torchvision RandomResizedCrop.get_params: (top, left, height, width) in pixels. */
export function randomResizedCropBox(rng: Prng, H: number, W: number, scale: [number, number], ratio: [number, number] = [3 / 4, 4 / 3]): [number, number, number, number] {
  const area = H * W;
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logRatio[0], logRatio[1]));
    const w = Math.round(Math.sqrt(targetArea * aspect));
    const h = Math.round(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= W && h > 0 && h <= H) return [rng.int(H - h + 1), rng.int(W - w + 1), h, w];
  }
  // Fallback: the whole image, its aspect clamped to the ratio range, centred.
  const inRatio = W / H;
  let w = W;
  let h = H;
  if (inRatio < ratio[0]) h = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(h * ratio[1]);
  return [Math.floor((H - h) / 2), Math.floor((W - w) / 2), h, w];
}

/** The random parameters of one view of a batch, drawn in a fixed order. */
export interface ViewParams {
  boxes: Float32Array; // [n, 4] normalised y1, x1, y2, x2 (x1 > x2 = flipped)
  jitter: Float32Array; // [n, 4]: brightness, contrast, saturation, hue (identity when not applied)
  jitterOrder: Int32Array; // [n, 4]: the order of the four jitter ops per image
  gray: Float32Array; // [n]: 1 = to grayscale
  sigma: Float32Array; // [n]: blur σ in output pixels, 0 = no blur
  solarize: Float32Array; // [n]: 1 = solarize
}

export function drawViewParams(rng: Prng, n: number, H: number, W: number, outSize: number, a: AugmentConfig, view: 0 | 1): ViewParams {
  const p: ViewParams = {
    boxes: new Float32Array(n * 4),
    jitter: new Float32Array(n * 4),
    jitterOrder: new Int32Array(n * 4),
    gray: new Float32Array(n),
    sigma: new Float32Array(n),
    solarize: new Float32Array(n),
  };
  const sigmaScale = outSize / 224;
  for (let i = 0; i < n; i++) {
    const [top, left, h, w] = randomResizedCropBox(rng, H, W, [a.cropMinScale, 1]);
    const y1 = top / Math.max(H - 1, 1);
    const y2 = (top + h - 1) / Math.max(H - 1, 1);
    let x1 = left / Math.max(W - 1, 1);
    let x2 = (left + w - 1) / Math.max(W - 1, 1);
    if (rng.bernoulli(a.flipProb)) [x1, x2] = [x2, x1];
    p.boxes.set([y1, x1, y2, x2], i * 4);
    // ColorJitter(brightness, contrast, saturation, hue) = a.colorJitter (reference 0.4, 0.4, 0.2, 0.1),
    // p = colorJitterProb, ops in a random order per image.
    if (rng.bernoulli(a.colorJitterProb)) {
      const [b, c, s, h] = a.colorJitter;
      p.jitter.set([rng.uniform(1 - b, 1 + b), rng.uniform(1 - c, 1 + c), rng.uniform(1 - s, 1 + s), rng.uniform(-h, h)], i * 4);
      p.jitterOrder.set(rng.permutation(4), i * 4);
    } else {
      p.jitter.set([1, 1, 1, 0], i * 4);
      p.jitterOrder.set([0, 1, 2, 3], i * 4);
    }
    p.gray[i] = rng.bernoulli(a.grayscaleProb) ? 1 : 0;
    p.sigma[i] = rng.bernoulli(a.blurProb[view]) ? rng.uniform(0.1, 2.0) * sigmaScale : 0;
    p.solarize[i] = rng.bernoulli(a.solarizeProb[view]) ? 1 : 0;
  }
  return p;
}

const LUMA = [0.299, 0.587, 0.114];

function grayscale(x: tf.Tensor4D): tf.Tensor4D {
  return tf.sum(tf.mul(x, tf.tensor1d(LUMA)), 3, true) as tf.Tensor4D;
}

/** Per-image [n,1,1,1] factors, one per jitter op: identity unless op `op` sits in slot `slot`. */
function slotFactors(p: ViewParams, n: number, op: number, slot: number, identity: number): tf.Tensor4D {
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = p.jitterOrder[i * 4 + slot] === op ? p.jitter[i * 4 + op] : identity;
  return tf.tensor4d(f, [n, 1, 1, 1]);
}

/** Hue rotation by 2π·h in YIQ space, as per-image 3×3 matrices [n, 3, 3] acting on row vectors. */
function hueMatrices(hues: Float32Array): tf.Tensor3D {
  const toYiq = [
    [0.299, 0.587, 0.114],
    [0.596, -0.274, -0.322],
    [0.211, -0.523, 0.312],
  ];
  const toRgb = [
    [1, 0.956, 0.621],
    [1, -0.272, -0.647],
    [1, -1.106, 1.703],
  ];
  const out = new Float32Array(hues.length * 9);
  hues.forEach((h, i) => {
    const c = Math.cos(2 * Math.PI * h);
    const s = Math.sin(2 * Math.PI * h);
    const rot = [
      [1, 0, 0],
      [0, c, -s],
      [0, s, c],
    ];
    // column-vector form M = toRgb · rot · toYiq; stored transposed for x[row] · Mᵀ
    const m = mat3(toRgb, mat3(rot, toYiq));
    for (let r = 0; r < 3; r++) for (let col = 0; col < 3; col++) out[i * 9 + r * 3 + col] = m[col][r];
  });
  return tf.tensor3d(out, [hues.length, 3, 3]);
}

function mat3(a: number[][], b: number[][]): number[][] {
  return a.map((row) => [0, 1, 2].map((j) => row[0] * b[0][j] + row[1] * b[1][j] + row[2] * b[2][j]));
}

function colorJitter(x: tf.Tensor4D, p: ViewParams): tf.Tensor4D {
  const [n, h, w] = x.shape;
  const clamp = (t: tf.Tensor) => tf.clipByValue(t, 0, 1) as tf.Tensor4D;
  // Grayscale data jitters no saturation (factor 1 everywhere): skip the no-op.
  const anySaturation = p.jitter.some((v, j) => j % 4 === 2 && v !== 1);
  for (let slot = 0; slot < 4; slot++) {
    x = clamp(tf.mul(x, slotFactors(p, n, 0, slot, 1))); // brightness
    const contrast = slotFactors(p, n, 1, slot, 1);
    const meanGray = tf.mean(grayscale(x), [1, 2, 3], true);
    x = clamp(tf.add(tf.mul(x, contrast), tf.mul(meanGray, tf.sub(1, contrast))));
    if (anySaturation) {
      const saturation = slotFactors(p, n, 2, slot, 1);
      x = clamp(tf.add(tf.mul(x, saturation), tf.mul(grayscale(x), tf.sub(1, saturation))));
    }
    const hues = new Float32Array(n);
    let anyHue = false;
    for (let i = 0; i < n; i++) {
      if (p.jitterOrder[i * 4 + slot] === 3 && p.jitter[i * 4 + 3] !== 0) {
        hues[i] = p.jitter[i * 4 + 3];
        anyHue = true;
      }
    }
    if (anyHue) x = clamp(tf.reshape(tf.matMul(tf.reshape(x, [n, h * w, 3]), hueMatrices(hues)), [n, h, w, 3]));
  }
  return x;
}

/** Gaussian blur with a per-image σ: a separable depthwise conv with images folded into channels. */
function gaussianBlur(x: tf.Tensor4D, sigmas: Float32Array): tf.Tensor4D {
  const [n, h, w] = x.shape;
  const maxSigma = Math.max(...sigmas);
  if (maxSigma === 0) return x;
  const radius = Math.max(1, Math.min(Math.ceil(3 * maxSigma), Math.floor(Math.min(h, w) / 2) - 1));
  const k = 2 * radius + 1;
  const taps = new Float32Array(k * n * 3); // [k, n·3]: one 1-D kernel per image and channel
  for (let i = 0; i < n; i++) {
    const s = sigmas[i];
    const weights = new Float32Array(k);
    if (s === 0) weights[radius] = 1;
    else {
      let total = 0;
      for (let t = -radius; t <= radius; t++) total += weights[t + radius] = Math.exp(-(t * t) / (2 * s * s));
      for (let t = 0; t < k; t++) weights[t] /= total;
    }
    for (let t = 0; t < k; t++) for (let c = 0; c < 3; c++) taps[t * n * 3 + i * 3 + c] = weights[t];
  }
  const folded = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, w, n * 3]) as tf.Tensor4D;
  const padded = tf.mirrorPad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], 'reflect');
  const vertical = tf.depthwiseConv2d(padded, tf.tensor4d(taps, [k, 1, n * 3, 1]), 1, 'valid');
  const both = tf.depthwiseConv2d(vertical, tf.tensor4d(taps, [1, k, n * 3, 1]), 1, 'valid');
  return tf.transpose(tf.reshape(both, [h, w, n, 3]), [2, 0, 1, 3]) as tf.Tensor4D;
}

/** Applies one view's parameters to images [n, H, W, 3] in [0, 1]; returns normalised [n, S, S, 3]. */
export function applyView(images: tf.Tensor4D, p: ViewParams, outSize: number): tf.Tensor4D {
  return tf.tidy(() => {
    const n = images.shape[0];
    const boxInd = tf.tensor1d(Array.from({ length: n }, (_, i) => i), 'int32');
    let x = tf.image.cropAndResize(images, tf.tensor2d(p.boxes, [n, 4]), boxInd, [outSize, outSize], 'bilinear');
    x = colorJitter(x, p);
    const gray = tf.tensor4d(p.gray, [n, 1, 1, 1]);
    x = tf.add(tf.mul(x, tf.sub(1, gray)), tf.mul(grayscale(x), gray)) as tf.Tensor4D;
    x = gaussianBlur(x, p.sigma);
    // PIL solarize(threshold 128): pixels ≥ 128 are inverted.
    const sol = tf.logicalAnd(tf.greater(tf.tensor4d(p.solarize, [n, 1, 1, 1]), 0.5), tf.greaterEqual(x, 128 / 255));
    x = tf.where(sol, tf.sub(1, x), x) as tf.Tensor4D;
    return normalizeImages(x);
  });
}

/** The two asymmetric views of a batch of uint8 images. */
export function twoViews(
  pixels: Uint8Array,
  n: number,
  shape: { height: number; width: number; channels: 1 | 3 },
  outSize: number,
  a: AugmentConfig,
  rng: Prng,
): [tf.Tensor4D, tf.Tensor4D] {
  const p1 = drawViewParams(rng, n, shape.height, shape.width, outSize, a, 0);
  const p2 = drawViewParams(rng, n, shape.height, shape.width, outSize, a, 1);
  const images = pixelsToTensor(pixels, n, shape.height, shape.width, shape.channels);
  const views: [tf.Tensor4D, tf.Tensor4D] = [applyView(images, p1, outSize), applyView(images, p2, outSize)];
  images.dispose();
  return views;
}
