/**
 * Fused exact GELU and GELU gradient kernels for the tfjs wasm backend (kernels/gelu.c), under
 * our own kernel names: ops.ts's gelu calls them through tf.engine().runKernel when our wasm
 * kernels are active (its customGrad supplies the gradient), and composes tfjs ops otherwise.
 * Where the native kernels are built (kernels/native-ops.ts), the same two kernels run the native
 * loops of kernels/native/moco_native.c instead (same approximations, the cores' vector width).
 */
import * as tf from '@tensorflow/tfjs';
import { nativeGelu } from './native-ops.js';
import { instantiateKernel, wasmBackendInternals, type WasmBackendInternals } from './wasm-module.js';

export const GELU_KERNEL = 'MocoGelu';
export const GELU_GRAD_KERNEL = 'MocoGeluGrad';

interface GeluExports {
  gelu(x: number, y: number, n: number): void;
  gelu_grad(x: number, dy: number, dx: number, n: number): void;
}

const instances = new WeakMap<object, { internals: WasmBackendInternals; gelu: GeluExports }>();

/** Our GELU module on this backend's heap (throws when it cannot run there). */
export function geluKernelFor(backend: object): { internals: WasmBackendInternals; gelu: GeluExports } {
  let k = instances.get(backend);
  if (!k) {
    const internals = wasmBackendInternals(backend);
    if (typeof internals === 'string') throw new Error(internals);
    k = { internals, gelu: instantiateKernel<GeluExports>('gelu', internals.memory) };
    instances.set(backend, k);
  }
  return k;
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** n floats of the heap at a byte offset (for the native kernels; taken after the output is allocated). */
const heapView = (internals: WasmBackendInternals, offset: number, n: number) => new Float32Array(internals.memory.buffer, offset, n);

function float32(t: tf.TensorInfo, what: string): void {
  if (t.dtype !== 'float32') throw new Error(`${what}: float32 only, got ${t.dtype}`);
}

/** Registers MocoGelu / MocoGeluGrad for the wasm backend (idempotent). */
export function registerGeluKernels(): void {
  if (tf.getKernel(GELU_KERNEL, 'wasm')) return;
  tf.registerKernel({
    kernelName: GELU_KERNEL,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend }: KernelArgs) => {
      const { x } = inputs as { x: tf.TensorInfo };
      float32(x, GELU_KERNEL);
      const { internals, gelu } = geluKernelFor(backend);
      const out = internals.makeOutput([...x.shape], 'float32');
      const at = (t: { dataId: object }) => internals.dataIdMap.get(t.dataId)!.memoryOffset;
      const n = tf.util.sizeFromShape(x.shape);
      const native = nativeGelu();
      if (native) native.gelu(heapView(internals, at(x), n), heapView(internals, at(out), n), n);
      else gelu.gelu(at(x), at(out), n);
      return out;
    },
  });
  tf.registerKernel({
    kernelName: GELU_GRAD_KERNEL,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend }: KernelArgs) => {
      const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
      float32(x, GELU_GRAD_KERNEL);
      float32(dy, GELU_GRAD_KERNEL);
      if (!tf.util.arraysEqual(x.shape, dy.shape)) throw new Error(`${GELU_GRAD_KERNEL}: shapes ${x.shape} and ${dy.shape} differ`);
      const { internals, gelu } = geluKernelFor(backend);
      const out = internals.makeOutput([...x.shape], 'float32');
      const at = (t: { dataId: object }) => internals.dataIdMap.get(t.dataId)!.memoryOffset;
      const n = tf.util.sizeFromShape(x.shape);
      const native = nativeGelu();
      if (native) native.geluGrad(heapView(internals, at(x), n), heapView(internals, at(dy), n), heapView(internals, at(out), n), n);
      else gelu.gelu_grad(at(x), at(dy), at(out), n);
      return out;
    },
  });
}

/** GELU of x on our fused kernel (wasm only; no gradient of its own). */
export function geluFused<T extends tf.Tensor>(x: T): T {
  return tf.engine().runKernel(GELU_KERNEL, { x }, {}) as T;
}

/** dy · GELU'(x) on our fused kernel (wasm only). */
export function geluGradFused(x: tf.Tensor, dy: tf.Tensor): tf.Tensor {
  return tf.engine().runKernel(GELU_GRAD_KERNEL, { x, dy }, {}) as tf.Tensor;
}
