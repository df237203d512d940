/**
 * Schedules that end where the run ends: with maxSteps or a time budget, the last step runs at the
 * lr floor with momentum 1; a budget is sized from the measured (here simulated) throughput and a
 * resumed run keeps the step count its first attempt chose.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { train, BUDGET_CALIBRATION_STEPS, type Checkpoint, type RunPlan, type StepMetrics } from '../../../runner/moco/train.js';
import { syntheticTextures } from '../../../runner/moco/synthetic.js';
import { readState } from '../../../runner/moco/checkpoint.js';
import { stepsForBudget } from '../../../runner/moco/schedule.js';
import type { TrainConfigInput } from '../../../runner/moco/config.js';

before(async () => {
  await tf.setBackend('cpu');
});

const data = { train: syntheticTextures({ size: 32, imageSize: 16, seed: 3 }) };
const config = (over: TrainConfigInput = {}): TrainConfigInput => ({
  model: { arch: 'vit_tiny', dim: 16, depth: 1, heads: 2 },
  moco: { projector: { hiddenDim: 16, outDim: 8 }, predictor: { hiddenDim: 16 } },
  optim: { batch: 8, lr: 1e-3 },
  monitor: { knn: false },
  epochs: 100,
  checkpointEvery: 1000,
  seed: 5,
  ...over,
});

/** A clock that only moves when a step ends: each step "takes" msPerStep. */
function simulatedClock(msPerStep: number) {
  let now = 0;
  return { clock: () => now, tick: () => void (now += msPerStep) };
}

test('with maxSteps the last step runs at the lr floor with momentum 1, warmup a share of the run', async () => {
  const steps: StepMetrics[] = [];
  const plans: RunPlan[] = [];
  const r = await train(config({ maxSteps: 7 }), data, { onStep: (m) => void steps.push(m), onPlan: (p) => void plans.push(p) });
  assert.equal(r.steps, 7);
  assert.deepEqual(
    plans.map((p) => [p.totalSteps, p.source]),
    [[7, 'maxSteps']],
  );
  const last = steps.at(-1) as StepMetrics;
  assert.equal(last.lr, 0);
  assert.equal(last.momentum, 1);
  assert.ok(steps[0].momentum < 1 && steps.some((s) => s.lr > 0));
  assert.ok(steps.every((s) => s.contrastiveTop1 !== null && s.contrastiveTop1 >= 0 && s.contrastiveTop1 <= 1));
});

test('stepsForBudget: the steps done plus what fits in the rest of the budget, monitor cost included', () => {
  assert.equal(stepsForBudget({ budgetMs: 60_000, elapsedMs: 10_000, stepsDone: 6, msPerStep: 1000, margin: 0 }), 56);
  assert.equal(stepsForBudget({ budgetMs: 60_000, elapsedMs: 10_000, stepsDone: 6, msPerStep: 1000, margin: 0, monitor: { ms: 5000, every: 5 } }), 31);
  assert.equal(stepsForBudget({ budgetMs: 60_000, elapsedMs: 10_000, stepsDone: 6, msPerStep: 1000, margin: 0, monitor: { ms: 1000, every: null, count: 10 } }), 46);
  assert.equal(stepsForBudget({ budgetMs: 60_000, elapsedMs: 70_000, stepsDone: 6, msPerStep: 1000 }), 6, 'over budget: stop now');
});

test('a time budget is sized from the measured throughput; the schedules end at that step; a resume keeps the count', async () => {
  // 0.5 minute at a simulated 2 s per step (the clock moves as each step is reported): when step 6
  // ends, 5 steps have taken 10 s and 20 s × 0.97 (margin) fit 9 more: 15 steps.
  const sim = simulatedClock(2000);
  const plans: (RunPlan & { measured?: { msPerStep: number } })[] = [];
  const steps: StepMetrics[] = [];
  const checkpoints: Checkpoint[] = [];
  const controller = new AbortController();
  const cfg = config({ budget: { minutes: 0.5 } });
  const first = await train(cfg, data, {
    clock: sim.clock,
    signal: controller.signal,
    onPlan: (p) => void plans.push(p),
    onStep: (m) => {
      sim.tick();
      steps.push(m);
      if (m.step === 10) controller.abort();
    },
    onCheckpoint: (c) => void checkpoints.push(c),
  });
  assert.equal(first.stopped, 'aborted');
  assert.equal(plans.length, 1);
  assert.equal(plans[0].source, 'budget');
  assert.equal(plans[0].measured?.msPerStep, 2000);
  assert.equal(plans[0].totalSteps, 1 + BUDGET_CALIBRATION_STEPS + 9);
  const saved = readState((checkpoints.at(-1) as Checkpoint).files).meta;
  assert.equal(saved.step, 10);
  assert.equal(saved.plan?.totalSteps, 15, 'the chosen count is in the checkpoint');

  // The resumed attempt is ten times faster: it must not re-measure and stretch the run.
  const fast = simulatedClock(200);
  const resumedPlans: (RunPlan & { resumed: boolean })[] = [];
  const rest: StepMetrics[] = [];
  const resumed = await train(cfg, data, {
    clock: fast.clock,
    resumeFrom: (checkpoints.at(-1) as Checkpoint).files,
    onPlan: (p) => void resumedPlans.push(p),
    onStep: (m) => {
      fast.tick();
      rest.push(m);
    },
  });
  assert.equal(resumed.steps, 15);
  assert.deepEqual(
    resumedPlans.map((p) => [p.totalSteps, p.source, p.resumed]),
    [[15, 'budget', true]],
  );
  const last = rest.at(-1) as StepMetrics;
  assert.equal(last.step, 15);
  assert.equal(last.lr, 0, 'lr at its floor at the budget-sized last step');
  assert.equal(last.momentum, 1);
});
