/**
 * What a sweep's table reads from a run's probe: linear top-1/top-5 from its evaluation row, and the
 * kNN top-1 and the baselines (random init, raw pixels) where the probe stored them (the evaluation's
 * columns and subjects, else its details or the probe job's result). One small module, so a richer probe protocol
 * only changes the lookups here.
 */
import type { SweepRunState } from '../../db/sweeps.js';

export interface ProbeFigures {
  linearTop1: number | null;
  linearTop5: number | null;
  knnTop1: number | null;
  /** As the probe stored them, e.g. { randomInit: { linearTop1, knnTop1 }, rawPixels: {...} }. */
  baselines: Record<string, unknown> | null;
}

const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const obj = (v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, any>) : null);

/** The first number found at any of the given places. */
function first(...values: unknown[]): number | null {
  for (const v of values) if (num(v) !== null) return v as number;
  return null;
}

/** The baselines of a probe that evaluated several subjects (the protocol of issue 9), by name. */
function baselinesFromSubjects(subjects: Record<string, any> | null): Record<string, unknown> | null {
  if (!subjects) return null;
  const names = { random_init: 'randomInit', raw_pixels: 'rawPixels' } as const;
  const out: Record<string, unknown> = {};
  for (const [subject, name] of Object.entries(names)) {
    const s = obj(subjects[subject]);
    if (s) out[name] = { linearTop1: num(s.linear?.top1), knnTop1: num(s.knn?.top1) };
  }
  return Object.keys(out).length ? out : null;
}

export function probeFigures(run: SweepRunState): ProbeFigures {
  const ev = run.evaluation;
  const details = obj(ev?.details) ?? {};
  const result = obj(run.probe?.result) ?? {};
  return {
    linearTop1: first(ev && ev.kind === 'linear' ? ev.top1 : undefined, details.linear?.top1, result.linear?.top1, result.top1),
    linearTop5: first(ev && ev.kind === 'linear' ? ev.top5 : undefined, details.linear?.top5, result.linear?.top5, result.top5),
    knnTop1: first(ev?.knnTop1, details.knn?.top1, details.knnTop1, result.knn?.top1, result.knnTop1),
    baselines: baselinesFromSubjects(obj(ev?.subjects)) ?? obj(details.baselines) ?? obj(result.baselines),
  };
}
