import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import * as wasmPackage from '@tensorflow/tfjs-backend-wasm';
import { activateWasm } from '../../../runner/moco/kernels/wasm-threads.js';

// No real backend starts here: `activate` is injected, so only our fallback logic runs.
test('a failed threaded initialisation falls back to one thread, with a note, and leaves no hooks behind', async () => {
  const cpus = os.cpus;
  const calls: { multithread: boolean; cpus: number }[] = [];
  const result = await activateWasm(2, wasmPackage, async (name) => {
    assert.equal(name, 'wasm');
    calls.push({ multithread: tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT'), cpus: os.cpus().length });
    return calls.length > 1; // the threaded attempt fails, the single-threaded one succeeds
  });
  assert.deepEqual(result, { ok: true, note: 'threaded wasm backend failed to initialise' });
  assert.equal(calls[0].multithread, true);
  assert.ok(calls[0].cpus >= 4, 'os.cpus() reports 2·threads while the threaded backend starts');
  assert.equal(calls[1].multithread, false);
  assert.equal(os.cpus, cpus);
  for (const key of ['locateFile', 'mainScriptUrlOrBlob']) assert.equal(Object.getOwnPropertyDescriptor(Object.prototype, key), undefined);
  const config: Record<string, unknown> = {};
  config.locateFile = 'x'; // a plain assignment again
  assert.equal(config.locateFile, 'x');
});
