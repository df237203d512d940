import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceSlots, detectGpus, resolveGpuCount, slotEnvironment } from '../../runner/supervisor/deviceSlots.js';

test('GPUs are counted from nvidia-smi -L; none when it is missing or fails', () => {
  const smi = 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n  MIG 1g.10gb Device 0: (UUID: MIG-3)\n';
  assert.equal(detectGpus(() => smi), 2);
  assert.equal(
    detectGpus(() => {
      throw new Error('spawn nvidia-smi ENOENT');
    }),
    0,
  );
  assert.equal(resolveGpuCount('auto', () => 3), 3);
  assert.equal(resolveGpuCount('2', () => 3), 2);
});

test('concurrent runs get different GPUs and a share of the cores; a released slot is reused', () => {
  const slots = new DeviceSlots(2, 2, 8);
  const a = slotEnvironment(slots.acquire(), 1);
  const b = slotEnvironment(slots.acquire(), 1);
  assert.deepEqual([a.env.CUDA_VISIBLE_DEVICES, b.env.CUDA_VISIBLE_DEVICES], ['0', '1']);
  for (const s of [a, b]) {
    assert.equal(s.env.TF_FORCE_GPU_ALLOW_GROWTH, 'true');
    assert.equal(s.env.MOCO_CORES, '4');
  }
  assert.throws(() => slots.acquire(), /all 2 device slots are taken/);
  slots.release({ index: 0, gpu: 0, cores: 4 });
  assert.equal(slotEnvironment(slots.acquire(), 1).env.CUDA_VISIBLE_DEVICES, '0');
});

test('resources.gpus 0 and slots beyond the GPUs see no GPU (CUDA_VISIBLE_DEVICES=-1)', () => {
  const slots = new DeviceSlots(1, 3, 2);
  const first = slots.acquire();
  assert.deepEqual(slotEnvironment(first, 0).device, { slot: 0, gpu: null, cudaVisibleDevices: '-1', cores: 1 });
  assert.equal(slotEnvironment(first, 1).env.CUDA_VISIBLE_DEVICES, '0');
  assert.equal(slotEnvironment(slots.acquire(), 1).env.CUDA_VISIBLE_DEVICES, '-1');
  assert.equal(slotEnvironment(new DeviceSlots(0, 1).acquire(), 1).device.gpu, null);
});
