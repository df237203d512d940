import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { resolveTrainConfig, resolveTrainConfigWithSources, smallImagePatch, type TrainConfigInput } from '../../../runner/moco/config.js';
import { buildMocoModel, momentumUpdate, stripPrefix } from '../../../runner/moco/model.js';
import { backboneForward } from '../../../runner/moco/backbone.js';
import { readBackbone, writeBackbone } from '../../../runner/moco/checkpoint.js';
import { sincosPositionEmbedding, vitTokens } from '../../../runner/moco/vit.js';
import { readSafetensors, writeSafetensors } from '../../../runner/moco/safetensors.js';
import { randomTensor } from './gradcheck.js';

before(async () => {
  await tf.setBackend('cpu');
});

const shape = { height: 16, width: 16, size: 64 };
const tiny = (over: TrainConfigInput['model'] = {}): TrainConfigInput => ({
  model: { arch: 'vit_tiny', dim: 16, depth: 2, heads: 2, ...over },
  moco: { projector: { hiddenDim: 32, outDim: 8 }, predictor: { hiddenDim: 32 } },
  optim: { batch: 8 },
});

test('sin-cos position embedding matches the reference values (D=384, 14×14)', () => {
  // The reference's pos_embed has the class-token slot first: its token 15 is patch 14 (r=1, c=0).
  const patches = sincosPositionEmbedding(14, 14, 384);
  const pe = new Float32Array(197 * 384);
  pe.set(patches, 384);
  assert.ok(Math.abs(pe[15 * 384 + 0] - 0.8415) < 1e-4, `${pe[15 * 384]}`);
  assert.equal(pe[15 * 384 + 192], 0);
  assert.ok(Math.abs(pe[15 * 384 + 96] - Math.cos(1)) < 1e-6, 'cos(row·ω0)');
  assert.equal(pe[15 * 384 + 288], 1, 'cos(column 0)');
});

test('presets, small-image patch and reference defaults resolve from arch and dataset', () => {
  const c = resolveTrainConfig({ model: { arch: 'vit_small' } }, { height: 224, width: 224, size: 1000 });
  assert.deepEqual([c.model.dim, c.model.depth, c.model.heads, c.model.patch, c.model.imageSize], [384, 12, 12, 16, 224]);
  assert.equal(c.moco.temperature, 0.2);
  assert.equal(c.moco.projector.layers, 3);
  assert.equal(c.moco.projector.hiddenDim, 4096);
  assert.equal(c.optim.name, 'adamw');
  assert.equal(c.optim.lr, 1.5e-4);
  assert.deepEqual([c.augment.cropMinScale, c.augment.blurProb, c.augment.grayscaleProb, c.augment.colorJitter], [0.08, [1, 0.1], 0.2, [0.4, 0.4, 0.2, 0.1]]);
  const r = resolveTrainConfig({ model: { arch: 'resnet50' }, epochs: 100 }, { height: 224, width: 224, size: 1000 });
  assert.deepEqual([r.moco.temperature, r.moco.projector.layers, r.optim.name, r.optim.lr, r.optim.weightDecay, r.optim.warmupFraction], [1, 2, 'lars', 0.6, 1e-6, 0.1]);
  assert.throws(() => resolveTrainConfig({ model: { arch: 'vit_tiny', patch: 5 } }, shape), /model.patch 5 must divide/);
});

test('small grayscale images get the small-image recipe, every value with its source; explicit fields win', () => {
  const fmnist = { height: 28, width: 28, size: 60000, channels: 1 as const, numClasses: 10 };
  const { config: c, sources } = resolveTrainConfigWithSources({ model: { arch: 'vit_tiny' } }, fmnist);
  assert.deepEqual([c.model.imageSize, c.model.patch], [28, 4], 'native resolution, 49 tokens');
  assert.deepEqual([c.augment.cropMinScale, c.augment.blurProb, c.augment.grayscaleProb, c.augment.colorJitter], [0.3, [0, 0], 0, [0.4, 0.4, 0, 0]]);
  assert.deepEqual([c.optim.lr, c.optim.batch, c.moco.projector.hiddenDim], [1.5e-3, 256, 1024]);
  assert.equal(c.monitor.knn, true, 'labeled data: kNN monitor on');
  assert.equal(sources['model.arch'], 'user');
  assert.equal(sources['model.patch'], 'dataset-size default');
  assert.equal(sources['augment.cropMinScale'], 'dataset-size default');
  assert.equal(sources['augment.colorJitter'], 'dataset default');
  assert.equal(sources['model.dim'], 'architecture default');
  assert.equal(sources['moco.momentum'], 'reference default');
  const simclr = resolveTrainConfigWithSources({ method: 'simclr', model: { arch: 'vit_tiny' } }, fmnist).sources;
  assert.deepEqual([simclr['moco.momentum'], simclr['moco.predictor.hiddenDim'], simclr['moco.temperature']], ['unused by the method', 'unused by the method', 'architecture default'], 'SimCLR: no momentum encoder, no predictor');
  const explicit = resolveTrainConfigWithSources({ model: { arch: 'vit_tiny', patch: 7 }, augment: { cropMinScale: 0.08, blurProb: [1, 0.1] }, optim: { lr: 1e-4 } }, fmnist);
  assert.deepEqual([explicit.config.model.patch, explicit.config.augment.cropMinScale, explicit.config.augment.blurProb, explicit.config.optim.lr], [7, 0.08, [1, 0.1], 1e-4]);
  assert.equal(explicit.sources['augment.cropMinScale'], 'user');
  assert.equal(resolveTrainConfig({}, { height: 32, width: 32, size: 1000, channels: 3 }).augment.colorJitter[2], 0.2, 'colour images keep saturation jitter');
  assert.equal(smallImagePatch(32), 4);
  assert.equal(smallImagePatch(64), 8);
});

test('reference initialisation: class-token slot of pos_embed is zero, frozen patch projection shared', () => {
  const m = buildMocoModel(resolveTrainConfig(tiny(), shape));
  const pe = m.query['backbone.pos_embed'].dataSync();
  assert.ok(pe.slice(0, 16).every((v) => v === 0));
  assert.ok(m.frozen.has('backbone.patch_embed.proj.weight') && m.frozen.has('backbone.pos_embed'));
  assert.equal(m.momentum['backbone.patch_embed.proj.weight'], undefined, 'frozen tensors are shared, not averaged');
  const qkv = m.query['backbone.blocks.0.attn.q.weight'].dataSync();
  const bound = Math.sqrt(3 / 16);
  assert.ok(qkv.every((v) => Math.abs(v) <= bound) && Math.max(...qkv.map(Math.abs)) > 0.8 * bound);
  assert.ok(m.query['backbone.cls_token'].dataSync().every((v) => Math.abs(v) < 1e-5));
  assert.deepEqual(m.query['projector.0.weight'].shape, [16, 32]);
  assert.equal(m.query['projector.6.weight'].shape[1], 8);
  assert.equal(m.query['projector.7.weight'], undefined, 'the last BN has no affine');
});

test('momentum encoder follows θk ← m·θk + (1−m)·θq', () => {
  const m = buildMocoModel(resolveTrainConfig(tiny(), shape));
  const name = 'backbone.blocks.1.mlp.fc1.weight';
  const q = m.query[name];
  m.query[name] = tf.add(q, 1);
  q.dispose();
  const before = m.momentum[name].dataSync().slice();
  const qv = m.query[name].dataSync();
  momentumUpdate(m, 0.9);
  const after = m.momentum[name].dataSync();
  for (let i = 0; i < 20; i++) assert.ok(Math.abs(after[i] - (0.9 * before[i] + 0.1 * qv[i])) < 1e-6);
});

test('every pooling and position embedding runs; the export loads back to the same features', () => {
  const x = randomTensor([2, 16, 16, 3], 5) as tf.Tensor4D;
  for (const [pooling, posEmbed] of [['cls', 'sincos'], ['gap', 'learned'], ['gap_no_ln', 'none']] as const) {
    const c = resolveTrainConfig(tiny({ pooling, posEmbed }), shape);
    assert.equal(vitTokens(c.model).tokens, pooling === 'cls' ? 17 : 16);
    const m = buildMocoModel(c);
    const backbone = stripPrefix(m.query, 'backbone.');
    const f = backboneForward(backbone, x, c.model, false);
    assert.deepEqual(f.shape, [2, 16]);
    const files = writeBackbone(backbone, c.model, 16, { step: 0, epoch: 0 });
    const { tensors } = readSafetensors(files['backbone.safetensors']);
    assert.deepEqual(tensors['patch_embed.proj.weight'].shape, [16, 3, 4, 4], 'OIHW as PyTorch');
    assert.deepEqual(tensors['blocks.0.attn.qkv.weight'].shape, [48, 16], '[out, in] as PyTorch');
    assert.deepEqual(tensors['pos_embed'].shape, [1, vitTokens(c.model).tokens, 16]);
    const loaded = readBackbone(files);
    const g = backboneForward(loaded.params, x, loaded.meta.model, false);
    assert.deepEqual(Array.from(g.dataSync()), Array.from(f.dataSync()));
  }
});

test('ResNet-18 (small stem) runs, exports OIHW with torchvision names, and loads back', () => {
  const c = resolveTrainConfig({ model: { arch: 'resnet18', imageSize: 8 }, optim: { batch: 4 } }, { height: 8, width: 8, size: 8 });
  const m = buildMocoModel(c);
  const backbone = stripPrefix(m.query, 'backbone.');
  const x = randomTensor([2, 8, 8, 3], 6) as tf.Tensor4D;
  const f = backboneForward(backbone, x, c.model, false);
  assert.deepEqual(f.shape, [2, 512]);
  const files = writeBackbone(backbone, c.model, 512, { step: 0, epoch: 0 });
  const { tensors } = readSafetensors(files['backbone.safetensors']);
  assert.deepEqual(tensors['conv1.weight'].shape, [64, 3, 3, 3]);
  assert.deepEqual(tensors['layer2.0.downsample.0.weight'].shape, [128, 64, 1, 1]);
  assert.ok(tensors['layer1.0.bn2.weight'].data.every((v) => v === 0), 'zero_init_residual');
  const loaded = readBackbone(files);
  assert.deepEqual(Array.from(backboneForward(loaded.params, x, c.model, false).dataSync()), Array.from(f.dataSync()));
});

test('safetensors round-trips and has the documented layout', () => {
  const bytes = writeSafetensors({ b: { dtype: 'I32', shape: [2], data: Int32Array.from([1, -2]) }, a: { dtype: 'F32', shape: [1, 2], data: Float32Array.from([0.5, -1]) } }, { k: 'v' });
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  assert.deepEqual(header.a, { dtype: 'F32', shape: [1, 2], data_offsets: [0, 8] });
  assert.equal((8 + headerLength) % 8, 0);
  const r = readSafetensors(bytes);
  assert.deepEqual(Array.from(r.tensors.a.data), [0.5, -1]);
  assert.deepEqual(Array.from(r.tensors.b.data), [1, -2]);
  assert.deepEqual(r.metadata, { k: 'v' });
  assert.throws(() => readSafetensors(bytes.subarray(0, 12)), /header length/);
});
