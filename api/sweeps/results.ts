/** A sweep's results table: one row per setting, with the resolved values that differ between rows. */
import { FIELDS_UNUSED_BY_METHOD, type METHODS } from '../../contracts/jobSpec.js';
import type { SweepRow, SweepRunState } from '../../db/sweeps.js';
import { getPath } from './grid.js';
import { probeFigures, type ProbeFigures } from './probeFigures.js';

export interface ResultRow extends ProbeFigures {
  index: number;
  /** The resolved value of every column for this run. */
  values: Record<string, unknown>;
  pretrainJobId: string | null;
  pretrainState: string;
  probeJobId: string | null;
  probeState: string | null;
  finalLoss: number | null;
  steps: number | null;
  /** Running time of the pretrain job. */
  minutes: number | null;
  /** `spike` events of the pretrain job (loss or a gradient norm far above its running median). */
  spikes: number;
  spiked: boolean;
  error: string | null;
}

export interface ResultsTable {
  columns: string[];
  rows: ResultRow[];
}

type Method = (typeof METHODS)[number];

const minutesBetween = (a: Date | null, b: Date | null) => (a && b ? (b.getTime() - a.getTime()) / 60_000 : null);

/**
 * The value a run trained with at `path`: the trainer's resolved config (the pretrain job's result
 * carries it once the run finished), else the submitted spec.
 */
function resolvedValue(run: SweepRunState, path: string): unknown {
  const config = run.pretrain?.result?.config;
  const method = (getPath(config ?? run.spec, 'method') ?? 'mocov3') as Method;
  // SimCLR's momentum is a default nobody reads: null, not a number that looks like a setting.
  if (FIELDS_UNUSED_BY_METHOD[method]?.includes(path)) return null;
  const fromConfig = config ? getPath(config, path) : undefined;
  return fromConfig !== undefined ? fromConfig : (getPath(run.spec, path) ?? null);
}

export function resultsTable(sweep: SweepRow, runs: SweepRunState[]): ResultsTable {
  const paths = [...new Set(runs.flatMap((r) => Object.keys(r.setting)))];
  const valuesOf = runs.map((r) => Object.fromEntries(paths.map((p) => [p, resolvedValue(r, p)])));
  // Only the columns that differ between rows (a variant setting a value the others have too drops out).
  const columns = paths.filter((p) => new Set(valuesOf.map((v) => JSON.stringify(v[p]))).size > 1 || runs.length === 1);
  const rows = runs.map((run, i): ResultRow => {
    const result = run.pretrain?.result ?? {};
    return {
      index: run.index,
      values: Object.fromEntries(columns.map((c) => [c, valuesOf[i]![c]])),
      pretrainJobId: run.pretrain?.id ?? null,
      pretrainState: run.pretrain?.state ?? (sweep.state === 'running' && !run.error ? 'pending' : 'not submitted'),
      probeJobId: run.probe?.id ?? null,
      probeState: run.probe?.state ?? null,
      ...probeFigures(run),
      finalLoss: typeof result.finalLoss === 'number' ? result.finalLoss : null,
      steps: typeof result.steps === 'number' ? result.steps : null,
      minutes: run.pretrain ? minutesBetween(run.pretrain.startedAt, run.pretrain.finishedAt) : null,
      spikes: run.pretrain?.spikes ?? 0,
      spiked: (run.pretrain?.spikes ?? 0) > 0,
      error: run.error ?? run.pretrain?.error ?? run.probe?.error ?? null,
    };
  });
  return { columns, rows };
}

function csvCell(v: unknown): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'object' ? JSON.stringify(v) : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The table as CSV: the setting's columns, then the figures; baselines flattened to one column each. */
export function resultsCsv(table: ResultsTable): string {
  const baselineKeys = [...new Set(table.rows.flatMap((r) => flatten(r.baselines ?? {}).map(([k]) => k)))];
  const fixed = ['linearTop1', 'linearTop5', 'knnTop1', 'finalLoss', 'steps', 'minutes', 'spikes', 'pretrainState', 'probeState', 'pretrainJobId', 'probeJobId', 'error'] as const;
  const header = ['index', ...table.columns, ...fixed, ...baselineKeys.map((k) => `baselines.${k}`)];
  const lines = table.rows.map((r) => {
    const baselines = Object.fromEntries(flatten(r.baselines ?? {}));
    return [r.index, ...table.columns.map((c) => r.values[c]), ...fixed.map((f) => r[f]), ...baselineKeys.map((k) => baselines[k])].map(csvCell).join(',');
  });
  return [header.map(csvCell).join(','), ...lines].join('\n') + '\n';
}

function flatten(o: Record<string, unknown>, prefix = ''): [string, unknown][] {
  return Object.entries(o).flatMap(([k, v]) =>
    v && typeof v === 'object' && !Array.isArray(v) ? flatten(v as Record<string, unknown>, `${prefix}${k}.`) : [[`${prefix}${k}`, v] as [string, unknown]],
  );
}
