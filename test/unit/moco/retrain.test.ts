import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { train, type Checkpoint } from '../../../runner/moco/train.js';
import { syntheticTextures } from '../../../runner/moco/synthetic.js';
import { readState } from '../../../runner/moco/checkpoint.js';
import type { TrainConfigInput } from '../../../runner/moco/config.js';

before(async () => {
  await tf.setBackend('cpu');
});

const data = { train: syntheticTextures({ size: 32, imageSize: 16, seed: 3 }) };
const config = (over: Partial<TrainConfigInput> = {}): TrainConfigInput => ({
  model: { arch: 'vit_tiny', dim: 16, depth: 1, heads: 2 },
  moco: { projector: { hiddenDim: 32, outDim: 8 }, predictor: { hiddenDim: 32 } },
  optim: { batch: 8, lr: 1e-3, warmupEpochs: 0 },
  epochs: 1,
  checkpointEvery: 100,
  seed: 5,
  ...over,
});

async function finalCheckpoint(cfg: TrainConfigInput, hooks: Parameters<typeof train>[2] = {}): Promise<Checkpoint> {
  let last: Checkpoint | undefined;
  await train(cfg, data, { ...hooks, onCheckpoint: (c) => void (last = c) });
  return last!;
}

test('initFrom starts from another run’s weights with a fresh step count and optimizer', async () => {
  const source = await finalCheckpoint(config());
  const sourceState = readState(source.files);

  // One step of the new run: its step count and optimizer start from zero, not from the source's.
  const started = await finalCheckpoint(config({ epochs: 2, maxSteps: 1, seed: 9 }), {
    initFrom: source.files,
    onStep: () => {},
  });
  const startedState = readState(started.files);
  assert.equal(startedState.meta.step, 1);
  assert.equal(sourceState.meta.optimizer.scalars.step, 4);
  assert.equal(startedState.meta.optimizer.scalars.step, 1, 'a fresh optimizer has taken one step');

  // One step from the source weights differs from one step from a fresh initialisation.
  const fresh = readState((await finalCheckpoint(config({ epochs: 2, maxSteps: 1, seed: 9 }))).files);
  const name = 'backbone.blocks.0.attn.proj.weight';
  const near = tf.sub(startedState.query[name], sourceState.query[name]).abs().max().dataSync()[0];
  const far = tf.sub(fresh.query[name], sourceState.query[name]).abs().max().dataSync()[0];
  assert.ok(near < far, `one step from the source stays near it (${near}) compared with a fresh start (${far})`);
});

test('initFrom refuses a checkpoint of another architecture, naming the difference', async () => {
  const source = await finalCheckpoint(config({ maxSteps: 1 }));
  await assert.rejects(
    train(config({ model: { arch: 'vit_tiny', dim: 24, depth: 1, heads: 2 }, maxSteps: 1 }), data, { initFrom: source.files }),
    /cannot initialise from that checkpoint: config.model differs/,
  );
});
