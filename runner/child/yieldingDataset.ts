/**
 * An ImageDataset that lets the event loop turn before every read. The trainer's loop can run for
 * minutes on promises that resolve at once (shards already in memory, synchronous hooks) without
 * ever reaching the event loop, and then the parent's `stop` message, delivered as an I/O event,
 * would wait until the next checkpoint's file writes. One setImmediate per batch costs microseconds.
 */
import type { ImageDataset } from '../moco/dataset.js';

export function yieldingDataset<D extends ImageDataset>(inner: D): ImageDataset {
  return {
    get size() {
      return inner.size;
    },
    height: inner.height,
    width: inner.width,
    channels: inner.channels,
    numClasses: inner.numClasses,
    classNames: inner.classNames,
    async read(indices) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      return inner.read(indices);
    },
  };
}
