/**
 * Instability telemetry: flags a step where the loss or a gradient norm jumps far above its running
 * median (MoCo v3 §4.1: gradient spikes in the patch projection precede loss and kNN dips).
 * Pure bookkeeping on numbers, so the trainer, the runner and a test can all use it.
 *
 * A value v of series s is a spike when, with at least `minHistory` earlier values, v > factor(s) ×
 * median(last `window` values). One event per excursion: until the series falls back below its
 * threshold no second spike is reported, and values above the threshold never enter the median
 * (a long excursion does not raise the bar it is measured against).
 */

export interface Spike {
  step: number;
  series: string;
  value: number;
  median: number;
  factor: number;
}

export interface SpikeOptions {
  /** Values the running median spans. */
  window?: number;
  /** Values needed before anything is judged (the first steps move fast by nature). */
  minHistory?: number;
  /** The factor for a series (by name); the defaults: 1.5 for `loss`, 3 for everything else. */
  factorFor?: (series: string) => number;
}

export const DEFAULT_SPIKE_FACTORS = { loss: 1.5, gradNorm: 3 } as const;

const defaultFactor = (series: string) => (series === 'loss' ? DEFAULT_SPIKE_FACTORS.loss : DEFAULT_SPIKE_FACTORS.gradNorm);

/** The series watched in a step's metrics: the loss and every gradient norm. */
export function watchedSeries(metrics: Record<string, unknown>): [string, number][] {
  return Object.entries(metrics).filter(
    (e): e is [string, number] => (e[0] === 'loss' || e[0].startsWith('gradNorm')) && typeof e[1] === 'number' && Number.isFinite(e[1]),
  );
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export class SpikeDetector {
  private readonly history = new Map<string, number[]>();
  private readonly inExcursion = new Set<string>();
  private readonly window: number;
  private readonly minHistory: number;
  private readonly factorFor: (series: string) => number;

  constructor(o: SpikeOptions = {}) {
    this.window = o.window ?? 50;
    this.minHistory = o.minHistory ?? 20;
    this.factorFor = o.factorFor ?? defaultFactor;
  }

  /** Takes one step's values; returns the spikes that start at this step. */
  observe(step: number, values: Iterable<[string, number]>): Spike[] {
    const spikes: Spike[] = [];
    for (const [series, value] of values) {
      if (!Number.isFinite(value)) continue;
      const past = this.history.get(series) ?? [];
      this.history.set(series, past);
      const factor = this.factorFor(series);
      if (past.length >= this.minHistory) {
        const m = median(past);
        if (value > factor * m) {
          if (!this.inExcursion.has(series)) spikes.push({ step, series, value, median: m, factor });
          this.inExcursion.add(series);
          continue;
        }
      }
      this.inExcursion.delete(series);
      past.push(value);
      if (past.length > this.window) past.shift();
    }
    return spikes;
  }
}
