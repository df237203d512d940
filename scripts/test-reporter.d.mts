/** Types of scripts/test-reporter.mjs (the test reporter of `npm test`) for the tests that import it. */
export class FileClock {
  constructor(now?: number);
  seconds: Map<string, number>;
  observe(event: { type: string; data: any }, now?: number): void;
  slowest(n: number, root?: string): string;
}
export function summarize(files: { path: string; totalLineCount: number; coveredLineCount: number }[], root?: string): string;
export default function reporter(source: AsyncIterable<{ type: string; data: any }>): AsyncGenerator<string>;
