/**
 * Runs up to `width` async conversions at once (sharp decodes on libuv's thread pool) while handing
 * their results on in submission order, so the staged order equals the archive order.
 */
export class OrderedWindow<T> {
  private queue: Promise<T>[] = [];

  constructor(
    private readonly width: number,
    private readonly sink: (value: T) => Promise<void>,
  ) {}

  async push(work: Promise<T>): Promise<void> {
    // A failure is surfaced when its turn comes; until then it must not count as unhandled.
    work.catch(() => {});
    this.queue.push(work);
    while (this.queue.length >= this.width) await this.sink(await this.queue.shift()!);
  }

  async drain(): Promise<void> {
    while (this.queue.length) await this.sink(await this.queue.shift()!);
  }
}
