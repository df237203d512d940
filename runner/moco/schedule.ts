/**
 * Per-step schedules of MoCo v3 (main_moco.py), with t the fractional epoch = step / stepsPerEpoch.
 */

/** lr = base × batch / 256, linear warmup from 0, then a half-cosine to 0 (adjust_learning_rate). */
export function learningRateAt(step: number, o: { lr: number; batch: number; warmupEpochs: number }, stepsPerEpoch: number, epochs: number): number {
  const peak = (o.lr * o.batch) / 256;
  const t = step / stepsPerEpoch;
  if (t < o.warmupEpochs) return (peak * t) / o.warmupEpochs;
  return peak * 0.5 * (1 + Math.cos((Math.PI * (t - o.warmupEpochs)) / (epochs - o.warmupEpochs)));
}

/** m(t) = 1 − ½(1 + cos(πt/epochs))(1 − m0): rises from m0 to 1 (adjust_moco_momentum). */
export function momentumAt(step: number, m: { momentum: number; momentumSchedule: 'cosine' | 'constant' }, stepsPerEpoch: number, epochs: number): number {
  if (m.momentumSchedule === 'constant') return m.momentum;
  const t = step / stepsPerEpoch;
  return 1 - 0.5 * (1 + Math.cos((Math.PI * t) / epochs)) * (1 - m.momentum);
}
