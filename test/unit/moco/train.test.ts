import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { train, TrainingDivergedError, type Checkpoint, type StepMetrics } from '../../../runner/moco/train.js';
import { syntheticTextures } from '../../../runner/moco/synthetic.js';
import { readState, readBackbone } from '../../../runner/moco/checkpoint.js';
import { resolveTrainConfig, type TrainConfigInput } from '../../../runner/moco/config.js';
import { buildMocoModel } from '../../../runner/moco/model.js';
import { readSafetensors } from '../../../runner/moco/safetensors.js';

before(async () => {
  await tf.setBackend('cpu');
});

const data = { train: syntheticTextures({ size: 32, imageSize: 16, seed: 7 }) };
const config = (over: TrainConfigInput = {}): TrainConfigInput => ({
  model: { arch: 'vit_tiny', dim: 16, depth: 2, heads: 2, ...over.model },
  moco: { projector: { hiddenDim: 32, outDim: 8 }, predictor: { hiddenDim: 32 } },
  optim: { batch: 8, microBatch: 4, lr: 1e-3, warmupEpochs: 0.5, ...over.optim },
  epochs: 2,
  checkpointEvery: 3,
  seed: 11,
  ...(over.maxSteps !== undefined ? { maxSteps: over.maxSteps } : {}),
});

async function run(cfg: TrainConfigInput, hooks: Parameters<typeof train>[2] = {}) {
  const steps: StepMetrics[] = [];
  const checkpoints: Checkpoint[] = [];
  const tensors: number[] = [];
  const result = await train(cfg, data, {
    ...hooks,
    onStep: async (m) => {
      steps.push(m);
      tensors.push(tf.memory().numTensors);
      await hooks.onStep?.(m);
    },
    onCheckpoint: (c) => {
      checkpoints.push(c);
    },
  });
  return { result, steps, checkpoints, tensors };
}

test('a run stopped at step k and resumed from its checkpoint is bit-identical (cpu), tensors stay flat', async () => {
  const full = await run(config());
  assert.equal(full.result.stopped, 'completed');
  assert.equal(full.result.steps, 8);
  assert.deepEqual(full.checkpoints.map((c) => [c.step, c.reason]), [[3, 'periodic'], [6, 'periodic'], [8, 'final']]);
  assert.ok(full.tensors.slice(1).every((n) => n === full.tensors[1]), `numTensors per step: ${full.tensors}`);

  const controller = new AbortController();
  const first = await run(config(), { signal: controller.signal, onStep: (m) => void (m.step === 5 && controller.abort()) });
  assert.equal(first.result.stopped, 'aborted');
  const stop = first.checkpoints.at(-1) as Checkpoint;
  assert.deepEqual([stop.step, stop.reason], [5, 'aborted']);
  assert.equal(readState(stop.files).meta.data.batchInEpoch, 1, 'mid-epoch');

  const resumed = await run(config(), { resumeFrom: stop.files });
  assert.equal(resumed.result.steps, 8);
  assert.deepEqual(resumed.steps.map((s) => s.loss), full.steps.slice(5).map((s) => s.loss));
  const a = readSafetensors(full.checkpoints.at(-1)!.files['state.safetensors']).tensors;
  const b = readSafetensors(resumed.checkpoints.at(-1)!.files['state.safetensors']).tensors;
  assert.deepEqual(Object.keys(b), Object.keys(a));
  for (const name of Object.keys(a)) assert.deepEqual(b[name].data, a[name].data, name);
  assert.ok(Object.keys(a).some((n) => n.startsWith('optim/exp_avg_sq/')), 'optimizer moments are saved');
});

test('shouldCheckpoint checkpoints between steps and training carries on', async () => {
  let polls = 0;
  const r = await run(config({ maxSteps: 3 }), { shouldCheckpoint: () => ++polls === 2 });
  assert.deepEqual(r.checkpoints.map((c) => [c.step, c.reason]), [[1, 'requested'], [3, 'final']]);
});

test('the frozen patch projection never changes; a trained one does and reports its gradient norm', async () => {
  const cfg = config({ maxSteps: 3 });
  const init = buildMocoModel(resolveTrainConfig(cfg, data.train));
  const initial = tf.transpose(init.query['backbone.patch_embed.proj.weight'], [3, 2, 0, 1]).dataSync();
  const frozen = await run(cfg);
  assert.ok(frozen.steps.every((s) => s.gradNormPatchProjection === null && s.gradNormLastBlock > 0));
  const after = readBackbone(frozen.checkpoints.at(-1)!.files);
  assert.deepEqual(tf.transpose(after.params['patch_embed.proj.weight'], [3, 2, 0, 1]).dataSync(), initial);

  const learned = await run(config({ maxSteps: 3, model: { freezePatchProjection: false } }));
  assert.ok(learned.steps.every((s) => (s.gradNormPatchProjection ?? 0) > 0));
  const moved = readBackbone(learned.checkpoints.at(-1)!.files).params['patch_embed.proj.weight'];
  assert.notDeepEqual(tf.transpose(moved, [3, 2, 0, 1]).dataSync(), initial);
});

test('a non-finite loss throws TrainingDivergedError naming the step', async () => {
  await assert.rejects(
    run(config({ optim: { lr: 1e36, warmupEpochs: 0 } })),
    (err: unknown) => err instanceof TrainingDivergedError && /diverged at step \d+/.test(err.message) && err.step >= 1,
  );
});

test('a ResNet-18 with LARS trains a step (conv filter gradients without Conv2DBackpropFilter)', async () => {
  const small = { train: syntheticTextures({ size: 8, imageSize: 8, seed: 2 }) };
  const r = await train(
    // No kNN monitor: a full-width ResNet-18 on the cpu backend spends more on it than on the step.
    { model: { arch: 'resnet18' }, moco: { projector: { hiddenDim: 32, outDim: 8 }, predictor: { hiddenDim: 32 } }, optim: { batch: 4 }, epochs: 1, maxSteps: 1, monitor: { knn: false } },
    small,
  );
  assert.equal(r.steps, 1);
  assert.ok(Number.isFinite(r.finalLoss));
});
