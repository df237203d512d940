/**
 * Picks the TensorFlow.js backend of a run, in DESIGN's order of preference: `tensorflow`
 * (tfjs-node-gpu, then tfjs-node: optional native packages, absent where they could not install),
 * then `wasm`, then `cpu`. An explicit preference that cannot be honoured is an error, not a silent
 * fallback: a user asking for `tensorflow` on a runner without it should hear so.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import type { RuntimeInfo } from '../supervisor/protocol.js';

type Preference = 'auto' | 'tensorflow' | 'wasm' | 'cpu';
const require = createRequire(import.meta.url);

function versionOf(pkg: string): string | undefined {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return undefined;
  }
}

async function tryTensorflow(): Promise<{ device: string; pkg: string } | null> {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(pkg);
      if (await tf.setBackend('tensorflow')) return { device: pkg.endsWith('-gpu') ? 'gpu' : 'cpu (native)', pkg };
    } catch {
      // Not installed here (no network at install time) or its native library failed to load.
    }
  }
  return null;
}

async function tryWasm(): Promise<boolean> {
  try {
    await import('@tensorflow/tfjs-backend-wasm');
    return await tf.setBackend('wasm');
  } catch {
    return false;
  }
}

export async function selectBackend(preference: Preference): Promise<RuntimeInfo> {
  const versions: Record<string, string> = { node: process.versions.node, tfjs: tf.version.tfjs };
  if (preference === 'auto' || preference === 'tensorflow') {
    const native = await tryTensorflow();
    if (native) {
      versions[native.pkg] = versionOf(native.pkg) ?? 'unknown';
      await tf.ready();
      return { backend: 'tensorflow', device: native.device, versions };
    }
    if (preference === 'tensorflow') throw new RangeError('resources.backend "tensorflow" is not available on this runner (tfjs-node is not installed)');
  }
  if (preference === 'auto' || preference === 'wasm') {
    if (await tryWasm()) {
      versions['@tensorflow/tfjs-backend-wasm'] = versionOf('@tensorflow/tfjs-backend-wasm') ?? 'unknown';
      await tf.ready();
      return { backend: 'wasm', device: 'cpu (wasm)', versions };
    }
    if (preference === 'wasm') throw new RangeError('resources.backend "wasm" could not be initialised on this runner');
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return { backend: 'cpu', device: 'cpu (js)', versions };
}
