/**
 * Per-step schedules of MoCo v3 (main_moco.py `adjust_learning_rate`, `adjust_moco_momentum`),
 * stretched over the steps the run will actually take. The reference spans `epochs`; a run cut by
 * `maxSteps` or by a time budget would otherwise stop with the learning rate still high and the
 * momentum short of 1. Here both end exactly at the last step: lr at its floor (0), momentum at 1.
 */

/** How long a run is, fixed before (or, with a time budget, early in) training. */
export interface RunPlan {
  /** Optimizer steps the run takes in all (over every resume). */
  totalSteps: number;
  /** Steps of linear warmup (from 0 to the peak lr). */
  warmupSteps: number;
  stepsPerEpoch: number;
  /** What fixed totalSteps: the epochs, `maxSteps`, or the time budget sized from throughput. */
  source: 'epochs' | 'maxSteps' | 'budget';
  /** Steps between kNN monitor evaluations when a budget chose them (0: only at the end). */
  knnEvery?: number;
}

/** Fraction of the run spent going from 0 to 1 (last step = 1). */
function progress(step: number, first: number, last: number): number {
  if (last <= first) return 1;
  return Math.min(1, Math.max(0, (step - first) / (last - first)));
}

/** lr = peak · step / warmup during warmup, then a half-cosine from the peak to 0 at the last step. */
export function learningRateAt(step: number, peakLr: number, plan: Pick<RunPlan, 'totalSteps' | 'warmupSteps'>): number {
  if (step < plan.warmupSteps) return (peakLr * step) / plan.warmupSteps;
  return peakLr * 0.5 * (1 + Math.cos(Math.PI * progress(step, plan.warmupSteps, plan.totalSteps - 1)));
}

/** m = 1 − ½(1 + cos(π·p))(1 − m0), p from 0 at the first step to 1 at the last: m0 → 1. */
export function momentumAt(step: number, m: { momentum: number; momentumSchedule: 'cosine' | 'constant' }, plan: Pick<RunPlan, 'totalSteps'>): number {
  if (m.momentumSchedule === 'constant') return m.momentum;
  return 1 - 0.5 * (1 + Math.cos(Math.PI * progress(step, 0, plan.totalSteps - 1))) * (1 - m.momentum);
}

/** The peak learning rate of the linear scaling rule: base × batch / 256. */
export function peakLearningRate(o: { lr: number; batch: number }): number {
  return (o.lr * o.batch) / 256;
}

/**
 * Sizes a time-budgeted run from its own measured throughput: the steps already done, plus as many
 * more as fit in what is left of the budget at the measured cost per step (monitor evaluations
 * included). A small margin keeps checkpoints and jitter inside the budget.
 */
export function stepsForBudget(m: {
  budgetMs: number;
  elapsedMs: number;
  stepsDone: number;
  msPerStep: number;
  /** Time of one monitor evaluation, and how many more the run will do (or one per `every` steps). */
  monitor?: { ms: number; every: number | null; count?: number };
  margin?: number;
}): number {
  const left = (m.budgetMs - m.elapsedMs) * (1 - (m.margin ?? 0.03));
  if (left <= 0) return Math.max(1, m.stepsDone);
  const mon = m.monitor;
  let more: number;
  if (!mon || mon.ms <= 0) more = left / m.msPerStep;
  else if (mon.every) more = left / (m.msPerStep + mon.ms / mon.every);
  else more = (left - (mon.count ?? 0) * mon.ms) / m.msPerStep;
  return Math.max(1, m.stepsDone + Math.max(0, Math.floor(more)));
}
