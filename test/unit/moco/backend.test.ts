import { test } from 'node:test';
import assert from 'node:assert/strict';
import { candidatesFor, selectBackend } from '../../../runner/moco/backend.js';

test('auto tries tfjs-node-gpu, then tfjs-node, then wasm, then cpu', () => {
  assert.deepEqual(candidatesFor('auto').map((c) => c.name), ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node', '@tensorflow/tfjs-backend-wasm', 'cpu']);
  assert.deepEqual(candidatesFor('tensorflow').map((c) => c.name), ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']);
});

test('the GPU package is taken when it loads and activates', async () => {
  const loaded: string[] = [];
  const info = await selectBackend('auto', {
    load: async (name) => (loaded.push(name), { version: { 'tfjs-node': '4.22.0' } }),
    activate: async (name) => name === 'tensorflow',
  });
  assert.equal(info.backend, 'tensorflow');
  assert.equal(info.device, 'gpu (CUDA)');
  assert.equal(info.versions['tfjs-node-gpu'], '4.22.0');
  assert.deepEqual(loaded, ['@tensorflow/tfjs-node-gpu']);
});

test('a missing GPU package falls back to tfjs-node, then to wasm', async () => {
  const order: string[] = [];
  const info = await selectBackend('auto', {
    load: async (name) => {
      order.push(name);
      if (name.includes('tfjs-node-gpu')) throw new Error("Cannot find package '@tensorflow/tfjs-node-gpu'");
      return { version: '4.22.0' };
    },
    activate: async (name) => name === 'tensorflow',
  });
  assert.equal(info.device, 'cpu (libtensorflow)');
  assert.deepEqual(order, ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']);
  assert.equal(info.tried[0].ok, false);
  assert.match(info.tried[0].error ?? '', /Cannot find package/);

  // Neither native package here (the real loader): the real wasm backend is chosen.
  const real = await selectBackend('auto');
  assert.equal(real.backend, 'wasm');
  assert.deepEqual(real.tried.map((t) => t.ok), [false, false, true]);
  assert.ok(real.threads >= 1);
  assert.match(real.versions['tfjs-backend-wasm'], /^\d+\.\d+\.\d+$/, 'the wasm package reports its version');
});

test('an explicit preference never falls back silently', async () => {
  await assert.rejects(selectBackend('tensorflow'), /no TensorFlow.js backend for "tensorflow"/);
  const cpu = await selectBackend('cpu');
  assert.equal(cpu.backend, 'cpu');
});
