/**
 * `train(config, dataset, hooks)`: the whole MoCo v3 pre-training loop as a plain async function
 * that a CLI, a test or the worker calls. It knows nothing of queues, storage or processes: the
 * caller gets metrics and checkpoint files through hooks, and stops it with an AbortSignal.
 *
 * Determinism: initialisation, data order and augmentation draw from JS PRNGs derived from
 * `seed`; the data order of step s is a pure function of (seed, s); the augmentation stream's
 * state is saved in every checkpoint. A run resumed from step k therefore repeats exactly what an
 * uninterrupted run does (bit for bit on the cpu backend, whose kernels are deterministic).
 */
import * as tf from '@tensorflow/tfjs';
import { twoViews } from './augment.js';
import { backboneFeatureDim } from './backbone.js';
import {
  BACKBONE_FILE,
  BACKBONE_META_FILE,
  STATE_FILE,
  STATE_META_FILE,
  readState,
  writeBackbone,
  writeState,
  type CheckpointFiles,
  type StateMeta,
} from './checkpoint.js';
import { planRun, planWithTotal, resolveTrainConfig, type TrainConfig, type TrainConfigInput } from './config.js';
import type { ImageDataset } from './dataset.js';
import { buildMocoModel, stripPrefix, trainableNames, type MocoModel } from './model.js';
import { createOptimizer, type Optimizer } from './optim.js';
import { countParams, disposeParams } from './params.js';
import { Prng, mixSeed } from './rng.js';
import { learningRateAt, momentumAt, peakLearningRate, stepsForBudget, type RunPlan } from './schedule.js';
import { AUTO_KNN_EVALUATIONS, KnnMonitor, knnInterval } from './monitor.js';
import { stepFor } from './methods/index.js';

export { TrainingDivergedError } from './step.js';
export type { RunPlan } from './schedule.js';

/** Steps a budgeted run measures (after its first, which pays for warm-up) before fixing its length. */
export const BUDGET_CALIBRATION_STEPS = 5;

export interface StepMetrics {
  /** Completed steps (1 after the first). */
  step: number;
  /** Fractional epoch reached. */
  epoch: number;
  loss: number;
  /** Share of queries whose positive key scores highest among the batch's keys (chance 1/batch); null for methods without keys. */
  contrastiveTop1: number | null;
  /** kNN top-1 on the monitor's held-out training images; only on the steps it was measured. */
  knnTop1?: number;
  lr: number;
  momentum: number;
  imagesPerSec: number;
  stepMs: number;
  gradNorm: number;
  /** null when the patch projection is frozen (the default) or the backbone is a ResNet. */
  gradNormPatchProjection: number | null;
  gradNormFirstBlock: number;
  gradNormLastBlock: number;
  gradNormProjector: number;
  /** null without a predictor (SimCLR, or moco.predictor.enabled false). */
  gradNormPredictor: number | null;
}

export type CheckpointReason = 'periodic' | 'aborted' | 'requested' | 'final';

export interface Checkpoint {
  step: number;
  epoch: number;
  reason: CheckpointReason;
  files: CheckpointFiles;
}

export interface TrainHooks {
  /** Checked between steps: when aborted, the trainer checkpoints and returns 'aborted'. */
  signal?: AbortSignal;
  /** Polled between steps; true → checkpoint now (e.g. on SIGTERM), then carry on. */
  shouldCheckpoint?: () => boolean;
  onStep?: (m: StepMetrics) => void | Promise<void>;
  /**
   * The run's length, once fixed: at the start (epochs, maxSteps, or a resumed checkpoint's), or for
   * a time budget after the first steps measured throughput (`measured` then says how).
   */
  onPlan?: (p: RunPlan & { resumed: boolean; measured?: { msPerStep: number; imagesPerSec: number; monitorMs: number; elapsedMs: number; budgetMinutes: number } }) => void | Promise<void>;
  /** kNN monitor results, including the one before the first step (step 0). */
  onMonitor?: (m: { step: number; knnTop1: number; ms: number }) => void | Promise<void>;
  /** Milliseconds, monotonic; the budget is measured with it (tests pass a simulated clock). */
  clock?: () => number;
  /** Every checkpointEvery steps, on abort / request, and at the end. Awaited before going on. */
  onCheckpoint?: (c: Checkpoint) => void | Promise<void>;
  /** The files of a checkpoint of this run to continue from. */
  resumeFrom?: Pick<CheckpointFiles, typeof STATE_FILE | typeof STATE_META_FILE> & Partial<CheckpointFiles>;
  /**
   * Retraining: start from the weights (both encoders) of another run's checkpoint, with a fresh
   * optimizer, step count, schedules and data order. Ignored when `resumeFrom` is given: a resumed
   * retraining run continues from its own checkpoint.
   */
  initFrom?: Pick<CheckpointFiles, typeof STATE_FILE | typeof STATE_META_FILE>;
  log?: (message: string, fields?: Record<string, unknown>) => void;
}

export interface TrainResult {
  steps: number;
  finalLoss: number | null;
  stopped: 'completed' | 'aborted';
  epochs: number;
  backend: string;
  config: TrainConfig;
  parameters: { trainable: number; total: number };
  /** Mean images/s over the steps of this call. */
  imagesPerSec: number;
  plan: RunPlan;
}

/** The order of the examples: a seeded permutation per epoch, consumed batch by batch. */
export class DataOrder {
  private cachedEpoch = -1;
  private perm: Int32Array = new Int32Array(0);
  constructor(
    private readonly seed: number,
    private readonly size: number,
    private readonly batch: number,
    readonly stepsPerEpoch: number,
  ) {}
  /** The example indices of step s (0-based). */
  indices(step: number): Int32Array {
    const epoch = Math.floor(step / this.stepsPerEpoch);
    if (epoch !== this.cachedEpoch) {
      this.perm = new Prng(mixSeed(this.seed, 0xda7a, epoch)).permutation(this.size);
      this.cachedEpoch = epoch;
    }
    const at = (step % this.stepsPerEpoch) * this.batch;
    return this.perm.subarray(at, at + this.batch);
  }
}

/** Config sections that must match between a checkpoint and the run resuming it. */
function assertResumable(saved: TrainConfig, now: TrainConfig): void {
  // Checkpoints written before `method` existed are MoCo v3's.
  if ((saved.method ?? 'mocov3') !== now.method) throw new RangeError(`cannot resume: config.method differs from the checkpoint's (${saved.method ?? 'mocov3'})`);
  for (const key of ['model', 'moco', 'optim', 'augment', 'epochs', 'seed'] as const) {
    if (JSON.stringify(saved[key]) !== JSON.stringify(now[key])) {
      throw new RangeError(`cannot resume: config.${key} differs from the checkpoint's (${JSON.stringify(saved[key])})`);
    }
  }
}

/** Copies both encoders' tensors from a checkpoint into the model (which must have the same names). */
function loadEncoders(model: MocoModel, state: ReturnType<typeof readState>, what: string): void {
  for (const [group, target] of [
    ['query', model.query],
    ['momentum', model.momentum],
  ] as const) {
    const loaded = group === 'query' ? state.query : state.momentum;
    for (const name of Object.keys(target)) {
      if (!loaded[name]) throw new RangeError(`cannot ${what}: the checkpoint lacks ${group}/${name}`);
      if (loaded[name].shape.join('x') !== target[name].shape.join('x')) {
        throw new RangeError(`cannot ${what}: ${group}/${name} is [${loaded[name].shape}] in the checkpoint, [${target[name].shape}] here`);
      }
      target[name].dispose();
      target[name] = loaded[name];
    }
  }
}

function restore(model: MocoModel, optimizer: Optimizer, files: NonNullable<TrainHooks['resumeFrom']>): { meta: StateMeta; augmentRng: Prng } {
  const state = readState(files);
  assertResumable(state.meta.config, model.config);
  loadEncoders(model, state, 'resume');
  optimizer.restore(state.optimizerSlots, state.meta.optimizer.scalars);
  return { meta: state.meta, augmentRng: Prng.fromState(state.meta.rng.augment) };
}

export async function train(configInput: TrainConfigInput, dataset: { train: ImageDataset }, hooks: TrainHooks = {}): Promise<TrainResult> {
  const data = dataset.train;
  const clock = hooks.clock ?? (() => performance.now());
  const startedClock = clock();
  const config = resolveTrainConfig(configInput, data);
  const log = hooks.log ?? (() => {});
  // The run's length: epochs cut by maxSteps; a time budget fixes it after measuring the first steps.
  const ceiling = planRun(config, data.size);
  let plan = ceiling;
  let planFixed = config.budget === null;
  const spe = plan.stepsPerEpoch;
  const order = new DataOrder(config.seed, data.size, config.optim.batch, spe);
  const backend = tf.getBackend();

  const model = buildMocoModel(config);
  const trainStep = stepFor(config.method);
  const optimizer = createOptimizer(config.optim);
  let augmentRng = new Prng(mixSeed(config.seed, 0xa06));
  let step = 0;
  let lastLoss: number | null = null;
  if (hooks.resumeFrom) {
    const r = restore(model, optimizer, hooks.resumeFrom);
    step = r.meta.step;
    lastLoss = r.meta.lastLoss;
    augmentRng = r.augmentRng;
    // A resumed run keeps the length its first attempt chose (a budget is not re-measured).
    if (r.meta.plan) {
      plan = r.meta.plan;
      planFixed = true;
    }
    log('resumed', { step, totalSteps: plan.totalSteps });
  } else if (hooks.initFrom) {
    const state = readState(hooks.initFrom);
    // Architecture and heads must match to take the weights over; everything else may change.
    for (const key of ['model'] as const) {
      if (JSON.stringify(state.meta.config[key]) !== JSON.stringify(config[key])) {
        throw new RangeError(`cannot initialise from that checkpoint: config.${key} differs (${JSON.stringify(state.meta.config[key])})`);
      }
    }
    loadEncoders(model, state, 'initialise from that checkpoint');
    Object.values(state.optimizerSlots).forEach((t) => t.dispose());
    log('initialised from checkpoint', { fromStep: state.meta.step });
  }
  const trainable = trainableNames(model).reduce((n, name) => n + model.query[name].size, 0);
  const parameters = { trainable, total: countParams(model.query) };
  log('training', { backend, steps: plan.totalSteps, source: plan.source, budget: config.budget, stepsPerEpoch: spe, ...parameters });
  if (planFixed) await hooks.onPlan?.({ ...plan, resumed: !!hooks.resumeFrom });

  // kNN monitor: on a fixed labeled subset of the training split, with the query backbone as it is.
  const monitor = config.monitor.knn && data.numClasses >= 2 ? await KnnMonitor.open(data, config.monitor, config.seed) : null;
  let monitorMs = 0;
  const measureKnn = () => {
    const t = clock();
    const backbone = stripPrefix(model.query, 'backbone.');
    const knnTop1 = (monitor as KnnMonitor).evaluate(backbone, config.model);
    monitorMs = clock() - t;
    return knnTop1;
  };
  const knnDue = (s: number) => {
    if (monitor === null) return false;
    const every = plan.knnEvery ?? knnInterval(config.monitor, plan.totalSteps);
    return s === plan.totalSteps || (every > 0 && s % every === 0);
  };
  if (monitor && step === 0) {
    const knnTop1 = measureKnn();
    await hooks.onMonitor?.({ step: 0, knnTop1, ms: monitorMs });
    log('knn monitor', { step: 0, knnTop1 });
  }

  const checkpoint = async (reason: CheckpointReason) => {
    if (!hooks.onCheckpoint) return;
    const epoch = step / spe;
    const meta: StateMeta = {
      format: 'momentum.moco-v3.state/1',
      step,
      epoch,
      data: { epoch: Math.floor(step / spe), batchInEpoch: step % spe, stepsPerEpoch: spe },
      plan: planFixed ? plan : null,
      rng: { augment: augmentRng.getState() },
      optimizer: { name: optimizer.name, scalars: optimizer.scalars() },
      config,
      backend,
      lastLoss,
      createdAt: new Date().toISOString(),
    };
    const state = writeState({ query: model.query, momentum: model.momentum, optimizerSlots: optimizer.slots() }, meta);
    const backbone = writeBackbone(stripPrefix(model.query, 'backbone.'), config.model, backboneFeatureDim(config.model), { step, epoch });
    const files: CheckpointFiles = {
      [STATE_FILE]: state[STATE_FILE],
      [STATE_META_FILE]: state[STATE_META_FILE],
      [BACKBONE_FILE]: backbone[BACKBONE_FILE],
      [BACKBONE_META_FILE]: backbone[BACKBONE_META_FILE],
    };
    await hooks.onCheckpoint({ step, epoch, reason, files });
    log('checkpoint', { step, reason });
  };

  const read = (s: number) => {
    const p = data.read(order.indices(s));
    p.catch(() => {}); // a prefetch abandoned on abort must not become an unhandled rejection
    return p;
  };
  let next = step < plan.totalSteps ? read(step) : null;
  const startedAt = performance.now();
  const startStep = step;
  let calibrationStart = 0;
  let calibrationMonitorMs = 0;
  try {
    while (step < plan.totalSteps) {
      // Let the event loop turn (timers, signals, sockets) so a stop request made while the
      // previous step computed is seen now, not after the run.
      await new Promise((resolve) => setImmediate(resolve));
      if (hooks.signal?.aborted) {
        await checkpoint('aborted');
        return result('aborted');
      }
      if (hooks.shouldCheckpoint?.()) await checkpoint('requested');
      const batch = await (next as ReturnType<typeof read>);
      // Prefetch: the next batch is read while this step computes.
      next = step + 1 < plan.totalSteps ? read(step + 1) : null;

      const t0 = performance.now();
      const lr = learningRateAt(step, peakLearningRate(config.optim), plan);
      const momentum = momentumAt(step, config.moco, plan);
      const [x1, x2] = twoViews(batch.pixels, config.optim.batch, data, config.model.imageSize, config.augment, augmentRng);
      let r;
      try {
        r = trainStep(model, optimizer, x1, x2, { step, lr, momentum });
      } finally {
        x1.dispose();
        x2.dispose();
      }
      step += 1;
      lastLoss = r.loss;
      const stepMs = performance.now() - t0;
      if (!planFixed) {
        // Time budget: measure BUDGET_CALIBRATION_STEPS steps after the first, then fix the length.
        if (step === 1) calibrationStart = clock();
        else if (step === 1 + BUDGET_CALIBRATION_STEPS || step === plan.totalSteps) await fixBudgetedPlan();
      }
      let knnTop1: number | undefined;
      if (knnDue(step)) {
        knnTop1 = measureKnn();
        if (!planFixed) calibrationMonitorMs += monitorMs;
        log('knn monitor', { step, knnTop1 });
      }
      await hooks.onStep?.({
        step,
        epoch: step / spe,
        loss: r.loss,
        contrastiveTop1: r.contrastiveTop1 ?? null,
        ...(knnTop1 === undefined ? {} : { knnTop1 }),
        lr,
        momentum,
        imagesPerSec: (config.optim.batch * 1000) / stepMs,
        stepMs,
        gradNorm: r.gradNorm,
        gradNormPatchProjection: r.gradNormPatchProjection,
        gradNormFirstBlock: r.gradNormFirstBlock,
        gradNormLastBlock: r.gradNormLastBlock,
        gradNormProjector: r.gradNormProjector,
        gradNormPredictor: r.gradNormPredictor,
      });
      if (step % config.checkpointEvery === 0 && step < plan.totalSteps) await checkpoint('periodic');
    }
    await checkpoint('final');
    return result('completed');
  } finally {
    disposeParams(model.query);
    disposeParams(model.momentum);
    optimizer.dispose();
  }

  async function fixBudgetedPlan(): Promise<void> {
    const budgetMinutes = (config.budget as { minutes: number }).minutes;
    const now = clock();
    const msPerStep = Math.max(1e-3, (now - calibrationStart - calibrationMonitorMs) / Math.max(1, step - 1));
    const every = config.monitor.knnEvery;
    const budgetMs = budgetMinutes * 60_000;
    // Automatic monitoring spends at most a tenth of what is left of the budget.
    const evaluations = every === null && monitor ? Math.min(AUTO_KNN_EVALUATIONS, Math.floor((0.1 * (budgetMs - (now - startedClock))) / Math.max(1, monitorMs))) : 0;
    const fit = stepsForBudget({
      budgetMs,
      elapsedMs: now - startedClock,
      stepsDone: step,
      msPerStep,
      monitor: monitor ? { ms: monitorMs, every, count: every === null ? evaluations : undefined } : undefined,
    });
    const total = Math.min(fit, ceiling.totalSteps);
    plan = planWithTotal(config, spe, total, total < ceiling.totalSteps ? 'budget' : ceiling.source);
    if (monitor && every === null) plan.knnEvery = evaluations > 0 ? Math.max(1, Math.ceil((total - step) / evaluations)) : 0;
    planFixed = true;
    const measured = { msPerStep, imagesPerSec: (config.optim.batch * 1000) / msPerStep, monitorMs, elapsedMs: now - startedClock, budgetMinutes };
    log('budget sized the run', { totalSteps: plan.totalSteps, warmupSteps: plan.warmupSteps, ...measured });
    await hooks.onPlan?.({ ...plan, resumed: false, measured });
  }

  function result(stopped: TrainResult['stopped']): TrainResult {
    const seconds = (performance.now() - startedAt) / 1000;
    return {
      steps: step,
      finalLoss: lastLoss,
      stopped,
      epochs: step / spe,
      backend,
      config,
      parameters,
      imagesPerSec: seconds > 0 ? ((step - startStep) * config.optim.batch) / seconds : 0,
      plan,
    };
  }
}
