/**
 * Which staged examples go to train and which to val: the format's own split when it gives one
 * (IDX train/t10k, CIFAR data_batch/test_batch, ImageFolder train/ and val/ folders), otherwise a
 * seeded draw of `valFraction` (also when the format gives training data only), stratified per class so every class keeps its share in both.
 */
import { seededRandom, shuffleInPlace } from './random.js';
import { SPLIT_VAL } from './staging.js';

export interface SplitPlan {
  train: Int32Array;
  /** Absent when valFraction is 0 and the format gave no validation data. */
  val?: Int32Array;
  source: 'format' | 'seeded';
}

export function planSplits(labels: Int32Array, hints: Uint8Array, valFraction: number, seed: number): SplitPlan {
  // The format's split counts only when it gives validation data; train-only files get the seeded draw.
  if (hints.some((h) => h === SPLIT_VAL)) {
    const train: number[] = [];
    const val: number[] = [];
    // Examples the format left unassigned (e.g. loose files beside train/ and val/) train.
    for (let i = 0; i < hints.length; i++) (hints[i] === SPLIT_VAL ? val : train).push(i);
    return { train: Int32Array.from(train), val: val.length ? Int32Array.from(val) : undefined, source: 'format' };
  }
  const random = seededRandom(seed);
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const group = byClass.get(labels[i]);
    if (group) group.push(i);
    else byClass.set(labels[i], [i]);
  }
  const isVal = new Uint8Array(labels.length);
  // Classes in label order so that the draw depends only on the data and the seed.
  for (const label of [...byClass.keys()].sort((a, b) => a - b)) {
    const members = Int32Array.from(byClass.get(label)!);
    const take = Math.round(members.length * valFraction);
    shuffleInPlace(members, random);
    for (let k = 0; k < take; k++) isVal[members[k]] = 1;
  }
  const train: number[] = [];
  const val: number[] = [];
  for (let i = 0; i < labels.length; i++) (isVal[i] ? val : train).push(i);
  return { train: Int32Array.from(train), val: val.length ? Int32Array.from(val) : undefined, source: 'seeded' };
}
