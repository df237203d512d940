/**
 * What the trainer reads: a random-access set of same-sized uint8 images with optional labels.
 * Implementations: in memory (tests, generated data), and shards streamed from S3 with a local
 * cache (runner/datasets). The trainer never knows which.
 */
export interface ImageDataset {
  /** Number of examples. */
  readonly size: number;
  readonly height: number;
  readonly width: number;
  /** 1 (grayscale) or 3 (RGB); the trainer expands grayscale to 3 channels. */
  readonly channels: 1 | 3;
  /** 0 when unlabeled. */
  readonly numClasses: number;
  readonly classNames?: readonly string[];
  /**
   * The examples at `indices`, in that order: pixels as HWC uint8, row-major, `indices.length *
   * height * width * channels` bytes; labels -1 when unlabeled.
   */
  read(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; labels: Int32Array }>;
}

/** An ImageDataset over arrays already in memory. */
export class InMemoryImageDataset implements ImageDataset {
  readonly size: number;
  constructor(
    readonly pixels: Uint8Array,
    readonly labels: Int32Array,
    readonly height: number,
    readonly width: number,
    readonly channels: 1 | 3,
    readonly numClasses: number,
    readonly classNames?: readonly string[],
  ) {
    this.size = labels.length;
    const per = height * width * channels;
    if (pixels.length !== per * this.size) {
      throw new Error(`pixels hold ${pixels.length} bytes, expected ${this.size} × ${per}`);
    }
  }

  async read(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; labels: Int32Array }> {
    const per = this.height * this.width * this.channels;
    const pixels = new Uint8Array(indices.length * per);
    const labels = new Int32Array(indices.length);
    for (let i = 0; i < indices.length; i++) {
      const j = indices[i];
      if (j < 0 || j >= this.size || !Number.isInteger(j)) throw new RangeError(`index ${j} outside 0..${this.size - 1}`);
      pixels.set(this.pixels.subarray(j * per, (j + 1) * per), i * per);
      labels[i] = this.labels[j];
    }
    return { pixels, labels };
  }

  /** The examples at `indices` as a new in-memory dataset (a split, a subset). */
  subset(indices: ArrayLike<number>): InMemoryImageDataset {
    const per = this.height * this.width * this.channels;
    const pixels = new Uint8Array(indices.length * per);
    const labels = new Int32Array(indices.length);
    for (let i = 0; i < indices.length; i++) {
      pixels.set(this.pixels.subarray(indices[i] * per, (indices[i] + 1) * per), i * per);
      labels[i] = this.labels[indices[i]];
    }
    return new InMemoryImageDataset(pixels, labels, this.height, this.width, this.channels, this.numClasses, this.classNames);
  }
}
