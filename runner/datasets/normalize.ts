/**
 * Brings every example to the dataset's one shape (height × width × channels, uint8 HWC).
 *
 * The target shape is the declared one (imageSize, channels) or, where undeclared, the first
 * image's. Other sizes are refused under resize 'none' and resized by sharp otherwise ('stretch'
 * fills, 'center-crop' covers then crops the middle). Grayscale images join an RGB dataset by
 * replication (lossless). Raw formats (IDX, CIFAR) are resized bilinearly in JS. An RGB image in a grayscale dataset needs `channels: 1` declared, since
 * that conversion throws colour away.
 */
import sharp from 'sharp';
import type { DatasetVersionOptions } from '../../contracts/datasetSpec.js';
import { DatasetIngestError } from './errors.js';
import { DEFAULT_INGEST_LIMITS, tooLarge, type IngestLimits } from './limits.js';

export interface ImageShape {
  height: number;
  width: number;
  channels: 1 | 3;
}

type NormalizeOptions = Pick<DatasetVersionOptions, 'imageSize' | 'channels' | 'resize'>;

export class PixelNormalizer {
  private shape?: ImageShape;
  /** Where the undeclared parts of the shape came from, for messages. */
  private shapeSource?: string;

  constructor(
    private readonly options: NormalizeOptions,
    private readonly limits: Pick<IngestLimits, 'maxImagePixels' | 'maxImageSide'> = DEFAULT_INGEST_LIMITS,
  ) {}

  get target(): ImageShape | undefined {
    return this.shape;
  }

  /** Decodes PNG/JPEG/WebP/GIF/TIFF bytes and returns pixels in the target shape. */
  async fromEncoded(file: string, bytes: Uint8Array): Promise<Uint8Array> {
    let meta: sharp.Metadata;
    try {
      // The header only (no pixel is decoded): unlimited here, so that the check below can name the size.
      meta = await sharp(bytes, { failOn: 'error', limitInputPixels: false }).metadata();
    } catch (err) {
      throw new DatasetIngestError('undecodable_image', `undecodable image (${(err as Error).message})`, file);
    }
    const width = meta.autoOrient?.width ?? meta.width;
    const height = meta.autoOrient?.height ?? meta.height;
    if (!width || !height) throw new DatasetIngestError('undecodable_image', 'undecodable image (no dimensions)', file);
    // The header's claim, checked before a single pixel is decoded (a pixel bomb is a small file).
    if (width * height > this.limits.maxImagePixels) {
      throw tooLarge('maxImagePixels', `image is ${width}x${height} = ${width * height} pixels, more than ${this.limits.maxImagePixels}`, file);
    }
    const colorChannels = (meta.channels ?? 3) - (meta.hasAlpha ? 1 : 0) >= 3 ? 3 : 1;
    const target = this.targetFor(file, height, width, colorChannels);
    this.checkSize(file, height, width, target);
    this.checkChannels(file, colorChannels, target);

    let pipeline = sharp(bytes, { failOn: 'error', limitInputPixels: this.limits.maxImagePixels }).autoOrient().removeAlpha();
    if (height !== target.height || width !== target.width) pipeline = this.resized(pipeline, target);
    pipeline = target.channels === 1 ? pipeline.grayscale() : pipeline.toColourspace('srgb');
    try {
      const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
      if (info.width !== target.width || info.height !== target.height || info.channels !== target.channels) {
        throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}`);
      }
      return data;
    } catch (err) {
      if (/pixel limit/.test((err as Error).message)) {
        throw tooLarge('maxImagePixels', `image decodes to more than ${this.limits.maxImagePixels} pixels`, file);
      }
      throw new DatasetIngestError('undecodable_image', `undecodable image (${(err as Error).message})`, file);
    }
  }

  /** Pixels already decoded (IDX, CIFAR): copied through when they fit, else converted. */
  async fromRaw(file: string, pixels: Uint8Array, shape: ImageShape): Promise<Uint8Array> {
    const target = this.targetFor(file, shape.height, shape.width, shape.channels);
    this.checkSize(file, shape.height, shape.width, target);
    this.checkChannels(file, shape.channels, target);
    let out = pixels;
    let channels = shape.channels;
    if (channels !== target.channels) {
      out = channels === 1 ? grayToRgb(out) : rgbToGray(out);
      channels = target.channels;
    }
    if (shape.height !== target.height || shape.width !== target.width) {
      // Bilinear in JS: a sharp call per 28×28 image costs ~1 ms of fixed overhead, this ~20 µs.
      out = resizeBilinear(out, { ...shape, channels: target.channels }, target, this.options.resize === 'center-crop');
    }
    return out;
  }

  /** True when raw pixels of this shape pass through unchanged (lets readers skip per-image work). */
  passesThrough(shape: ImageShape): boolean {
    const t = this.shape;
    return !!t && t.height === shape.height && t.width === shape.width && t.channels === shape.channels;
  }

  private targetFor(file: string, height: number, width: number, channels: 1 | 3): ImageShape {
    if (!this.shape) {
      const side = this.options.imageSize;
      const shape: ImageShape = {
        height: side ?? height,
        width: side ?? width,
        channels: this.options.channels ?? channels,
      };
      // Every example of the dataset gets this shape: a huge first image must not set it.
      if (Math.max(shape.height, shape.width) > this.limits.maxImageSide) {
        throw tooLarge(
          'maxImageSide',
          `the dataset's images would be ${shape.width}x${shape.height}, larger than ${this.limits.maxImageSide} px a side; declare a smaller imageSize (with resize "stretch" or "center-crop")`,
          file,
        );
      }
      this.shape = shape;
      this.shapeSource = file;
    }
    return this.shape;
  }

  private checkSize(file: string, height: number, width: number, target: ImageShape): void {
    if (this.options.resize !== 'none' || (height === target.height && width === target.width)) return;
    const why = this.options.imageSize
      ? `the declared imageSize is ${this.options.imageSize}`
      : `earlier images (${this.shapeSource}) are ${target.width}x${target.height}`;
    throw new DatasetIngestError(
      'mixed_sizes',
      `image is ${width}x${height} but ${why}; set resize to "stretch" or "center-crop" to resize images of other sizes`,
      file,
    );
  }

  private checkChannels(file: string, channels: 1 | 3, target: ImageShape): void {
    if (channels === 3 && target.channels === 1 && this.options.channels !== 1) {
      throw new DatasetIngestError(
        'channel_mismatch',
        `image is RGB but earlier images (${this.shapeSource}) are grayscale; declare channels: 1 to convert to grayscale or channels: 3 to keep colour`,
        file,
      );
    }
  }

  private resized(pipeline: sharp.Sharp, target: ImageShape): sharp.Sharp {
    return pipeline.resize(target.width, target.height, {
      fit: this.options.resize === 'center-crop' ? 'cover' : 'fill',
      position: 'centre',
      kernel: 'lanczos3',
    });
  }
}

/**
 * Bilinear resampling of HWC pixels; with `cover`, scales to cover the target and keeps the centre
 * (as sharp's 'cover' fit does). Meant for the small raw formats; decoded images use sharp.
 */
export function resizeBilinear(src: Uint8Array, from: ImageShape, to: ImageShape, cover: boolean): Uint8Array {
  const c = from.channels;
  const out = new Uint8Array(to.height * to.width * c);
  let sx = from.width / to.width;
  let sy = from.height / to.height;
  let ox = 0;
  let oy = 0;
  if (cover) {
    const scale = Math.min(sx, sy);
    ox = (from.width - to.width * scale) / 2;
    oy = (from.height - to.height * scale) / 2;
    sx = sy = scale;
  }
  for (let y = 0; y < to.height; y++) {
    const fy = Math.min(Math.max(oy + (y + 0.5) * sy - 0.5, 0), from.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, from.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < to.width; x++) {
      const fx = Math.min(Math.max(ox + (x + 0.5) * sx - 0.5, 0), from.width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, from.width - 1);
      const wx = fx - x0;
      for (let ch = 0; ch < c; ch++) {
        const a = src[(y0 * from.width + x0) * c + ch];
        const b = src[(y0 * from.width + x1) * c + ch];
        const d = src[(y1 * from.width + x0) * c + ch];
        const e = src[(y1 * from.width + x1) * c + ch];
        out[(y * to.width + x) * c + ch] = Math.round((a * (1 - wx) + b * wx) * (1 - wy) + (d * (1 - wx) + e * wx) * wy);
      }
    }
  }
  return out;
}

function grayToRgb(gray: Uint8Array): Uint8Array {
  const out = new Uint8Array(gray.length * 3);
  for (let i = 0, j = 0; i < gray.length; i++, j += 3) out[j] = out[j + 1] = out[j + 2] = gray[i];
  return out;
}

/** ITU-R BT.601 luma, as sharp's grayscale uses for sRGB input (near enough for training data). */
function rgbToGray(rgb: Uint8Array): Uint8Array {
  const out = new Uint8Array(rgb.length / 3);
  for (let i = 0, j = 0; i < out.length; i++, j += 3) out[i] = Math.round(0.299 * rgb[j] + 0.587 * rgb[j + 1] + 0.114 * rgb[j + 2]);
  return out;
}
