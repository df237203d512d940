/**
 * The backbone export loads in PyTorch: a tiny ViT trained a few steps on the cpu backend, its final
 * checkpoint's backbone.safetensors + backbone.json loaded (strict=True) into the timm 0.4.9
 * VisionTransformer reimplemented by scripts/check_pytorch_export.py, and the features of a fixed
 * batch compared with Momentum's own (readBackbone + backboneForward). Needs Debian's python3-torch
 * at /usr/bin/python3; without it every case is skipped, with the reason.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { train, type Checkpoint } from '../../runner/moco/train.js';
import { syntheticTextures } from '../../runner/moco/synthetic.js';
import { readBackbone, readState, BACKBONE_FILE, BACKBONE_META_FILE, type BackboneFiles, type CheckpointFiles } from '../../runner/moco/checkpoint.js';
import { backboneForward } from '../../runner/moco/backbone.js';
import { readSafetensors, writeSafetensors } from '../../runner/moco/safetensors.js';
import type { ModelConfig, TrainConfigInput } from '../../runner/moco/config.js';
import type { Params } from '../../runner/moco/params.js';
import { Prng } from '../../runner/moco/rng.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCRIPT = join(ROOT, 'scripts', 'check_pytorch_export.py');
const PYTHON = '/usr/bin/python3';
const TOLERANCE = 1e-4;

/** Debian's torch wants OpenBLAS on the library path (else it falls back to the slow reference BLAS). */
function pythonEnv(): NodeJS.ProcessEnv {
  const dpkg = spawnSync('dpkg', ['-L', 'libopenblas0-pthread'], { encoding: 'utf8' });
  const blas = dpkg.status === 0 ? dpkg.stdout.split('\n').find((l) => l.endsWith('/libblas.so.3')) : undefined;
  if (!blas) return process.env;
  const dir = dirname(blas);
  return { ...process.env, LD_LIBRARY_PATH: process.env.LD_LIBRARY_PATH ? `${dir}:${process.env.LD_LIBRARY_PATH}` : dir };
}

let torchMissing: string | null = null;
let env: NodeJS.ProcessEnv = process.env;

before(async () => {
  await tf.setBackend('cpu');
  env = pythonEnv();
  const probe = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8', env });
  if (probe.error || probe.status !== 0) {
    const why = probe.error ? probe.error.message : probe.stderr.trim().split('\n').at(-1);
    torchMissing = `${PYTHON} -c 'import torch' failed (${why}): install Debian's python3-torch to run this check`;
  }
});

const data = { train: syntheticTextures({ size: 16, imageSize: 16, seed: 3 }) };
const B = 5;
const S = 16;

/** A few AdamW steps at a high learning rate, so that biases, norms and the class token move off their init. */
async function trainedCheckpoint(model: TrainConfigInput['model']): Promise<CheckpointFiles> {
  const checkpoints: Checkpoint[] = [];
  await train(
    {
      model: { arch: 'vit_tiny', dim: 16, depth: 2, heads: 2, ...model },
      moco: { projector: { hiddenDim: 32, outDim: 8 }, predictor: { hiddenDim: 32 } },
      optim: { batch: 8, microBatch: 8, lr: 0.5, warmupEpochs: 0 },
      epochs: 2,
      maxSteps: 3,
      checkpointEvery: 1000,
      seed: 5,
    },
    data,
    { onCheckpoint: (c) => void checkpoints.push(c) },
  );
  const last = checkpoints.at(-1);
  assert.ok(last && last.reason === 'final' && last.step === 3, 'a final checkpoint at step 3');
  return last.files;
}

const backboneOf = (files: CheckpointFiles): BackboneFiles => ({ [BACKBONE_FILE]: files[BACKBONE_FILE], [BACKBONE_META_FILE]: files[BACKBONE_META_FILE] });

/** A fixed batch of RGB images in [0, 1]: NHWC for Momentum, NCHW for PyTorch. */
function fixedBatch(): { nhwc: Float32Array; nchw: Float32Array } {
  const rng = new Prng(1234);
  const nhwc = rng.uniformArray(B * S * S * 3, 0, 1);
  const nchw = new Float32Array(nhwc.length);
  for (let b = 0; b < B; b++)
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) for (let c = 0; c < 3; c++) nchw[((b * 3 + c) * S + y) * S + x] = nhwc[((b * S + y) * S + x) * 3 + c];
  return { nhwc, nchw };
}

/** Momentum's features of `params` (Momentum's layout), images normalised with the export meta's mean/std. */
function features(params: Params, model: ModelConfig, input: { mean: number[]; std: number[] }, nhwc: Float32Array): { data: Float32Array; shape: number[] } {
  const out = tf.tidy(() => {
    const x = tf.tensor4d(nhwc, [B, S, S, 3]);
    const normalised = tf.div(tf.sub(x, tf.tensor1d(input.mean)), tf.tensor1d(input.std)) as tf.Tensor4D;
    return backboneForward(params, normalised, model, false);
  });
  const result = { data: out.dataSync() as Float32Array, shape: out.shape };
  out.dispose();
  return result;
}

/**
 * Two references: the model as trained (the query backbone from state.safetensors, which never
 * goes through the export mapping) and the export read back by Momentum (readBackbone). Comparing
 * PyTorch with the first catches a writer bug that readBackbone would undo symmetrically.
 */
function momentumFeatures(files: CheckpointFiles, nhwc: Float32Array) {
  const { meta, params } = readBackbone(backboneOf(files));
  const state = readState(files);
  const trained: Params = {};
  for (const [n, t] of Object.entries(state.query)) if (n.startsWith('backbone.')) trained[n.slice('backbone.'.length)] = t;
  const result = { trained: features(trained, state.meta.config.model, meta.input, nhwc), readBack: features(params, meta.model, meta.input, nhwc) };
  for (const p of [params, state.query, state.momentum, state.optimizerSlots]) Object.values(p).forEach((t) => t.dispose());
  return result;
}

function runScript(files: BackboneFiles, nchw: Float32Array) {
  const dir = mkdtempSync(join(tmpdir(), 'momentum-pt-export-'));
  try {
    writeFileSync(join(dir, BACKBONE_FILE), files[BACKBONE_FILE]);
    writeFileSync(join(dir, BACKBONE_META_FILE), files[BACKBONE_META_FILE]);
    writeFileSync(join(dir, 'input.f32'), new Uint8Array(nchw.buffer, nchw.byteOffset, nchw.byteLength));
    const args = [SCRIPT, '--weights', join(dir, BACKBONE_FILE), '--meta', join(dir, BACKBONE_META_FILE), '--input', join(dir, 'input.f32'), '--batch', String(B), '--out', join(dir, 'features.json')];
    const r = spawnSync(PYTHON, args, { encoding: 'utf8', env, timeout: 120_000 });
    const features = r.status === 0 ? (JSON.parse(readFileSync(join(dir, 'features.json'), 'utf8')) as { shape: number[]; features: number[] }) : null;
    return { status: r.status, stderr: r.stderr, features };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function maxAbs(t: { data: Float32Array | Int32Array }): number {
  let m = 0;
  for (const v of t.data) m = Math.max(m, Math.abs(v));
  return m;
}

const cases: { name: string; model: TrainConfigInput['model']; trained: string[] }[] = [
  { name: "pooling 'cls', sin-cos position embedding, frozen patch projection (the reference)", model: {}, trained: ['cls_token', 'blocks.1.attn.qkv.bias', 'norm.bias'] },
  {
    name: "pooling 'gap', learned position embedding, trained patch projection",
    model: { pooling: 'gap', posEmbed: 'learned', freezePatchProjection: false },
    trained: ['patch_embed.proj.bias', 'blocks.0.attn.qkv.bias', 'norm.bias'],
  },
  { name: "pooling 'gap_no_ln', no position embedding", model: { pooling: 'gap_no_ln', posEmbed: 'none' }, trained: ['blocks.0.attn.qkv.bias', 'blocks.1.mlp.fc2.bias'] },
];

for (const c of cases) {
  test(`the backbone export loads in PyTorch (strict) and gives Momentum's features: ${c.name}`, async (t) => {
    if (torchMissing) return t.skip(torchMissing);
    const checkpoint = await trainedCheckpoint(c.model);
    const files = backboneOf(checkpoint);
    // The comparison only means something if biases and the class token have moved off zero.
    const tensors = readSafetensors(files[BACKBONE_FILE]).tensors;
    for (const n of c.trained) assert.ok(maxAbs(tensors[n]) > 1e-3, `${n} was trained (max |x| ${maxAbs(tensors[n])})`);

    const { nhwc, nchw } = fixedBatch();
    const ours = momentumFeatures(checkpoint, nhwc);
    const py = runScript(files, nchw);
    assert.equal(py.status, 0, `check_pytorch_export.py failed:\n${py.stderr}`);
    assert.deepEqual(py.features!.shape, ours.trained.shape);
    assert.ok(maxAbs({ data: ours.trained.data }) > 1e-2, 'features are not trivially zero');
    const diff = maxAbsDiff(ours.trained.data, py.features!.features);
    const diffReadBack = maxAbsDiff(ours.readBack.data, py.features!.features);
    t.diagnostic(`max abs difference PyTorch vs trained model ${diff.toExponential(3)}, vs Momentum's readBackbone ${diffReadBack.toExponential(3)}, over ${py.features!.features.length} features (${py.stderr.trim()})`);
    assert.ok(diff <= TOLERANCE, `PyTorch vs the trained model: max abs difference ${diff} > ${TOLERANCE}`);
    assert.ok(diffReadBack <= TOLERANCE, `PyTorch vs Momentum's readBackbone: max abs difference ${diffReadBack} > ${TOLERANCE}`);
  });
}

test('the PyTorch check is strict: a missing or extra tensor fails the load', async (t) => {
  if (torchMissing) return t.skip(torchMissing);
  const files = backboneOf(await trainedCheckpoint({}));
  const { nchw } = fixedBatch();
  const { tensors, metadata } = readSafetensors(files[BACKBONE_FILE]);
  const without = { ...tensors };
  delete without['blocks.1.mlp.fc1.bias'];
  const missing = runScript({ ...files, [BACKBONE_FILE]: writeSafetensors(without, metadata) }, nchw);
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /Missing key\(s\) in state_dict: "blocks\.1\.mlp\.fc1\.bias"/);
  const extra = runScript({ ...files, [BACKBONE_FILE]: writeSafetensors({ ...tensors, 'head.weight': tensors['norm.weight'] }, metadata) }, nchw);
  assert.notEqual(extra.status, 0);
  assert.match(extra.stderr, /Unexpected key\(s\) in state_dict: "head\.weight"/);
});
