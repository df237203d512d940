/** Types of scripts/test-reporter.mjs (the test reporter of `npm test`) for the tests that import it. */
export interface FileCoverage {
  path: string;
  totalLineCount: number;
  coveredLineCount: number;
  lines?: { line: number; count: number }[];
}
export interface LaneCoverage {
  path: string;
  lines: { line: number; count: number }[];
}
export class FileClock {
  seconds: Map<string, number>;
  observe(event: { type: string; data: any }): void;
  slowest(n: number, root?: string): string;
}
export function slowestFiles(seconds: Map<string, number>, n: number, root?: string): string;
export class Counts {
  static NAMES: string[];
  values: Record<string, number>;
  observe(event: { type: string; data: any }): void;
}
export function ownSourceCoverage(files: FileCoverage[], root?: string): LaneCoverage[];
export function mergeCoverage(runs: LaneCoverage[][]): FileCoverage[];
export function summarize(files: FileCoverage[], root?: string): string;
export default function reporter(source: AsyncIterable<{ type: string; data: any }>): AsyncGenerator<string>;
