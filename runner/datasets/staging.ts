/**
 * A local scratch file of normalized examples, in arrival order, with their labels and the split
 * the format assigned (if any) kept in memory. Readers append here while streaming the upload; the
 * shard writer then reads the examples back split by split. Pixels never all sit in memory.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { formatBytes, tooLarge } from './limits.js';

export const SPLIT_UNASSIGNED = 0;
export const SPLIT_TRAIN = 1;
export const SPLIT_VAL = 2;
export type SplitHint = typeof SPLIT_UNASSIGNED | typeof SPLIT_TRAIN | typeof SPLIT_VAL;

const FLUSH_BYTES = 4 * 1024 * 1024;

export class StagingFile {
  private fh?: FileHandle;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private written = 0;
  private labelStore = new Int32Array(1024);
  private hintStore = new Uint8Array(1024);
  private n = 0;
  private bytesPerExample = 0;

  private constructor(
    readonly path: string,
    private readonly maxBytes: number,
  ) {}

  /** `maxBytes`: the most pixel bytes the dataset may stage (limit maxStagedBytes). */
  static async create(path: string, maxBytes = Infinity): Promise<StagingFile> {
    const s = new StagingFile(path, maxBytes);
    s.fh = await open(path, 'w+');
    return s;
  }

  get count(): number {
    return this.n;
  }
  get labels(): Int32Array {
    return this.labelStore.subarray(0, this.n);
  }
  get hints(): Uint8Array {
    return this.hintStore.subarray(0, this.n);
  }

  /** Appends one example (or several of the same shape, back to back, when `count` > 1). */
  async append(pixels: Uint8Array, label: number, hint: SplitHint, count = 1): Promise<void> {
    const per = pixels.byteLength / count;
    if (this.bytesPerExample === 0) this.bytesPerExample = per;
    else if (per !== this.bytesPerExample) throw new Error(`staging holds ${this.bytesPerExample}-byte examples, got ${per}`);
    if (this.written + this.pendingBytes + pixels.byteLength > this.maxBytes) {
      throw tooLarge('maxStagedBytes', `the decoded images add up to more than ${formatBytes(this.maxBytes)} (${this.n} images of ${per} bytes so far)`);
    }
    this.grow(this.n + count);
    this.labelStore.fill(label, this.n, this.n + count);
    this.hintStore.fill(hint, this.n, this.n + count);
    this.n += count;
    this.pending.push(pixels);
    this.pendingBytes += pixels.byteLength;
    if (this.pendingBytes >= FLUSH_BYTES) await this.flush();
  }

  /** Overwrites labels of the last `labels.length` examples appended (IDX labels arrive apart). */
  setLabels(start: number, labels: ArrayLike<number>): void {
    for (let i = 0; i < labels.length; i++) this.labelStore[start + i] = labels[i];
  }

  remapLabels(map: Int32Array): void {
    for (let i = 0; i < this.n; i++) if (this.labelStore[i] >= 0) this.labelStore[i] = map[this.labelStore[i]];
  }

  async flush(): Promise<void> {
    if (!this.pendingBytes) return;
    const chunk = Buffer.concat(this.pending, this.pendingBytes);
    await this.fh!.write(chunk, 0, chunk.length, this.written);
    this.written += chunk.length;
    this.pending = [];
    this.pendingBytes = 0;
  }

  /**
   * Copies the examples at ascending `indices` into `out` back to back. Reads in large blocks, so a
   * split that is mostly contiguous (the usual case) costs a few big reads.
   */
  async readInto(indices: ArrayLike<number>, out: Uint8Array): Promise<void> {
    await this.flush();
    const per = this.bytesPerExample;
    const blockExamples = Math.max(1, Math.floor(FLUSH_BYTES / per));
    let block = Buffer.alloc(0);
    let blockStart = -1;
    for (let i = 0; i < indices.length; i++) {
      const j = indices[i];
      if (blockStart < 0 || j < blockStart || j >= blockStart + blockExamples) {
        blockStart = j;
        const len = Math.min(blockExamples, this.n - j) * per;
        if (block.length < len) block = Buffer.alloc(len);
        await this.fh!.read(block, 0, len, j * per);
      }
      const from = (j - blockStart) * per;
      out.set(block.subarray(from, from + per), i * per);
    }
  }

  async dispose(): Promise<void> {
    await this.fh?.close().catch(() => {});
    this.fh = undefined;
    await rm(this.path, { force: true });
  }

  private grow(need: number): void {
    if (need <= this.labelStore.length) return;
    let size = this.labelStore.length;
    while (size < need) size *= 2;
    const labels = new Int32Array(size);
    labels.set(this.labelStore);
    const hints = new Uint8Array(size);
    hints.set(this.hintStore);
    this.labelStore = labels;
    this.hintStore = hints;
  }
}
