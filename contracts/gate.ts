/**
 * Quality gates of a promotion, in one place: the rule grammar the CLI and the job spec share, what a
 * probe's evaluation measures (linear top-1; kNN top-1 where the evaluation has one), what "the same
 * protocol" means, and the pure decision. The database side (which evaluations to compare, locking
 * the model) lives in db/modelPromotion.ts and calls only this.
 *
 * A rule is `<metric> <op> <baseline>`, in percentage points:
 *   linear>=production-0.5   linear top-1 at least production's minus half a point
 *   knn>staging              kNN top-1 above the `staging` alias's
 *   linear>=80               an absolute floor: 80 % linear top-1
 * The baseline alias's number is its newest evaluation under the same protocol on the same dataset
 * version as the candidate's probe. When the alias does not exist yet (the first promotion) the rule
 * passes; when it exists but has no such evaluation, the rule fails (probe it first: see the CLI).
 */
import { z } from 'zod';
import { MODEL_ALIAS_SOURCE } from './models.js';

export const GATE_METRICS = ['linear', 'knn'] as const;
export type GateMetric = (typeof GATE_METRICS)[number];

export interface GateRule {
  /** The rule as written, for records and messages. */
  text: string;
  metric: GateMetric;
  op: '>=' | '>';
  /** The alias whose number is the baseline; null for an absolute threshold. */
  alias: string | null;
  /** Points added to the baseline (negative: a tolerance), or the absolute threshold in percent. */
  points: number;
}

// The alias is a model alias (contracts/models.ts): its parts start with letters, so `-0.5` after it is the tolerance.
const NUMBER = '\\d{1,3}(?:\\.\\d{1,4})?';
const RULE = new RegExp(`^\\s*(linear|knn)\\s*(>=|>)\\s*(?:(${MODEL_ALIAS_SOURCE})\\s*(?:([+-])\\s*(${NUMBER}))?|(${NUMBER}))\\s*$`);
export const GATE_RULE_MESSAGE = 'must read like "linear>=production-0.5", "knn>staging" or "linear>=80" (metric linear|knn, op >= or >, an alias with an optional ±points, or a percentage)';

export function parseGateRule(text: string): GateRule | undefined {
  const m = RULE.exec(text);
  if (!m) return undefined;
  const [, metric, op, alias, sign, offset, absolute] = m;
  if (alias) {
    if (alias.length > 32) return undefined;
    const points = offset ? Number(offset) * (sign === '-' ? -1 : 1) : 0;
    return { text: text.trim(), metric: metric as GateMetric, op: op as '>=' | '>', alias, points };
  }
  const value = Number(absolute);
  if (value > 100) return undefined;
  return { text: text.trim(), metric: metric as GateMetric, op: op as '>=' | '>', alias: null, points: value };
}

export const gateRule = z.string().max(100).refine((s) => parseGateRule(s) !== undefined, GATE_RULE_MESSAGE);

/** What a probe measured, as fractions in [0, 1]; absent where the evaluation has no such number. */
export interface GateMetrics {
  linear?: number;
  knn?: number;
}

/** The evaluation fields the gate reads (a row of `evaluations`). */
export interface EvaluationLike {
  kind: string;
  top1: number;
  details: unknown;
}

const finite = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Linear top-1 of a `linear` evaluation; kNN top-1 from a `knn` evaluation or one stored beside the linear result. */
export function gateMetricsOf(ev: EvaluationLike): GateMetrics {
  const d = (ev.details ?? {}) as Record<string, any>;
  const out: GateMetrics = {};
  if (ev.kind === 'linear') out.linear = ev.top1;
  if (ev.kind === 'knn') out.knn = ev.top1;
  const knn = finite(d.knn?.top1) ?? finite(d.knnTop1);
  if (out.knn === undefined && knn !== undefined) out.knn = knn;
  return out;
}

/**
 * The protocol an evaluation was made under: the one the probe stored with its result when there is
 * one (`details.protocol`), else what defined it so far: kind, epochs, learning rate and batch of the
 * probe job. Two evaluations are comparable only when these are equal.
 */
export function probeProtocolOf(ev: EvaluationLike, probeSpec: unknown): Record<string, unknown> {
  const d = (ev.details ?? {}) as Record<string, unknown>;
  if (d.protocol && typeof d.protocol === 'object') return d.protocol as Record<string, unknown>;
  const s = (probeSpec ?? {}) as Record<string, unknown>;
  return { kind: ev.kind, epochs: s.epochs ?? null, lr: s.lr ?? null, batch: s.batch ?? null };
}

/** Key-order-independent JSON, so that equal protocols compare equal. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : 1));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export const sameProtocol = (a: Record<string, unknown>, b: Record<string, unknown>): boolean => canonicalJson(a) === canonicalJson(b);

/** A baseline alias as the decision sees it. */
export type Baseline =
  /** The alias does not exist yet. */
  | { kind: 'absent' }
  /** It exists, but its version has no evaluation under the same protocol on the same dataset version. */
  | { kind: 'incomparable'; version: number }
  | { kind: 'measured'; version: number; metrics: GateMetrics; evaluationId: string };

export interface RuleOutcome {
  rule: string;
  metric: GateMetric;
  passed: boolean;
  /** The candidate's number (fraction), null when its probe has none. */
  candidate: number | null;
  /** The baseline alias's number (fraction); null for an absolute rule or when there is none. */
  baseline: number | null;
  baselineVersion: number | null;
  /** What the candidate had to reach (fraction); null when nothing could be compared. */
  threshold: number | null;
  reason: string;
}

export interface GateDecision {
  passed: boolean;
  rules: RuleOutcome[];
}

const pct = (v: number) => `${(100 * v).toFixed(2)} %`;
// Thresholds are sums of decimal fractions: compare with a margin far below any probe's resolution.
const EPSILON = 1e-9;

export function decideGate(rules: readonly GateRule[], candidate: GateMetrics, baselines: Readonly<Record<string, Baseline>>): GateDecision {
  const outcomes = rules.map((rule): RuleOutcome => {
    const value = candidate[rule.metric];
    const base = { rule: rule.text, metric: rule.metric, candidate: value ?? null, baseline: null, baselineVersion: null, threshold: null };
    if (value === undefined) return { ...base, passed: false, reason: `the candidate's probe reported no ${rule.metric} top-1` };
    let threshold: number;
    let baseline: number | null = null;
    let baselineVersion: number | null = null;
    if (rule.alias === null) {
      threshold = rule.points / 100;
    } else {
      const b = baselines[rule.alias] ?? { kind: 'absent' };
      if (b.kind === 'absent') return { ...base, passed: true, reason: `the model has no \`${rule.alias}\` yet: nothing to compare with` };
      baselineVersion = b.version;
      const theirs = b.kind === 'measured' ? b.metrics[rule.metric] : undefined;
      if (theirs === undefined) {
        return {
          ...base,
          baselineVersion,
          passed: false,
          reason: `\`${rule.alias}\` (v${b.version}) has no ${rule.metric} top-1 under the same protocol on the same dataset version; probe it first`,
        };
      }
      baseline = theirs;
      threshold = theirs + rule.points / 100;
    }
    const passed = rule.op === '>=' ? value >= threshold - EPSILON : value > threshold + EPSILON;
    const against = rule.alias === null ? 'the floor' : `\`${rule.alias}\` v${baselineVersion} (${pct(baseline!)})${rule.points ? ` ${rule.points > 0 ? '+' : '−'} ${Math.abs(rule.points)} points` : ''}`;
    const reason = `${rule.metric} top-1 ${pct(value)} ${passed ? 'meets' : 'misses'} ${rule.op} ${pct(threshold)}, ${against}`;
    return { ...base, baseline, baselineVersion, threshold, passed, reason };
  });
  return { passed: outcomes.every((o) => o.passed), rules: outcomes };
}
