/**
 * Small kernels for the tfjs wasm backend that cut per-step overhead (docs/trainer.md, "Less
 * overhead per step"): each replaces several tfjs kernel launches, or a copy, by one pass over
 * views of the wasm heap.
 *
 * - Identity shares the input's data (reference count + 1) instead of copying it. tfjs clones
 *   every tensor a gradient saves through Identity; on the cpu backend that is already a share,
 *   on wasm it was a full copy. tfjs tensors are immutable and no kernel writes in place, so a
 *   share is what the cpu backend does too.
 * - Sum and Mean over the leading axes (column sums: bias and LayerNorm/BatchNorm gradients,
 *   BatchNorm statistics) run as one matrix-vector product on the native BLAS; tfjs-wasm first
 *   transposes the whole input to reduce along its innermost axis.
 * - MocoAdamW and MocoEma: the AdamW update (≈ 12 tfjs kernels per tensor) and the momentum
 *   encoder's moving average (3 per tensor) as one loop each, in float32 like the composed ops
 *   (optim.ts and model.ts call them when `fusedUpdatesActive()`); the loop is native code
 *   (kernels/native-ops.ts) where that is built, the same float32 operations either way.
 *
 * The wrapped kernels keep the stock kernel for everything else, and all of it switches with
 * `setHeapKernelsEnabled` (benchmarks compare both paths in one process).
 */
import * as tf from '@tensorflow/tfjs';
import type { NativeBlas } from './native-blas.js';
import { nativeUpdates } from './native-ops.js';
import { wasmBackendInternals, type WasmBackendInternals } from './wasm-module.js';

export const ADAMW_KERNEL = 'MocoAdamW';
export const EMA_KERNEL = 'MocoEma';

type KernelArgs = Parameters<tf.KernelFunc>[0];

let enabled = true;
let installedFor: { blas: NativeBlas | null } | null = null;

/**
 * A buffer of ones kept in the heap of each backend (the vector of the column sums; the broadcast
 * of a bias in batch-matmul.ts), grown on demand. Returns its byte offset.
 */
const ones = new WeakMap<object, { ptr: number; length: number }>();

export function onesVector(internals: WasmBackendInternals, backend: object, length: number): number {
  let o = ones.get(backend);
  if (!o || o.length < length) {
    if (o) internals.wasm._free(o.ptr);
    const size = Math.max(length, 2 * (o?.length ?? 0));
    o = { ptr: internals.wasm._malloc(size * 4), length: size };
    new Float32Array(internals.memory.buffer, o.ptr, size).fill(1);
    ones.set(backend, o);
  }
  return o.ptr;
}

function internalsOf(backend: object): WasmBackendInternals {
  const internals = wasmBackendInternals(backend);
  if (typeof internals === 'string') throw new Error(internals);
  return internals;
}

const at = (internals: WasmBackendInternals, t: { dataId: object }) => internals.dataIdMap.get(t.dataId)!.memoryOffset;
const f32 = (internals: WasmBackendInternals, t: { dataId: object; shape: number[] }) =>
  new Float32Array(internals.memory.buffer, at(internals, t), tf.util.sizeFromShape(t.shape));

/** The leading axes [0, j) of a rank-r tensor when `axis` is exactly those (j ≥ 1, j < r), else null. */
function leadingAxes(axis: number | number[], rank: number): number | null {
  const axes = [...new Set((Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + rank : a)))].sort((p, q) => p - q);
  if (axes.length === 0 || axes.length >= rank || !axes.every((a, i) => a === i)) return null;
  return axes.length;
}

function wrapReduction(name: 'Sum' | 'Mean', stock: tf.KernelConfig, blas: NativeBlas): tf.KernelConfig {
  return {
    ...stock,
    kernelFunc: (args: KernelArgs) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
      const lead = enabled && x.dtype === 'float32' ? leadingAxes(axis, x.shape.length) : null;
      const rows = lead === null ? 0 : tf.util.sizeFromShape(x.shape.slice(0, lead));
      const cols = lead === null ? 0 : tf.util.sizeFromShape(x.shape.slice(lead));
      if (lead === null || rows === 0 || cols === 0) return stock.kernelFunc(args);
      const internals = internalsOf(args.backend);
      const outShape = keepDims ? [...x.shape.slice(0, lead).map(() => 1), ...x.shape.slice(lead)] : x.shape.slice(lead);
      const out = internals.makeOutput(outShape, 'float32');
      const onesPtr = onesVector(internals, args.backend, rows);
      // out[1, cols] = ones[1, rows] · x[rows, cols]; the views are taken after every allocation.
      const heap = internals.memory.buffer;
      blas.gemm(new Float32Array(heap, onesPtr, rows), new Float32Array(heap, at(internals, x), rows * cols), new Float32Array(heap, at(internals, out), cols), 1, cols, rows, false, false);
      if (name === 'Mean') {
        const o = new Float32Array(heap, at(internals, out), cols);
        const inv = Math.fround(1 / rows);
        for (let i = 0; i < cols; i++) o[i] *= inv;
      }
      return out;
    },
  };
}

function wrapIdentity(stock: tf.KernelConfig): tf.KernelConfig {
  return {
    ...stock,
    kernelFunc: (args: KernelArgs) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      if (!enabled || x.dtype === 'string') return stock.kernelFunc(args);
      (args.backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
      return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
    },
  };
}

/** AdamW on one tensor: inputs p, g, m, v; outputs m', v', p' (see optim.ts for the algebra). */
function adamwKernel(args: KernelArgs): tf.TensorInfo[] {
  const { p, g, m, v } = args.inputs as Record<'p' | 'g' | 'm' | 'v', tf.TensorInfo>;
  const { lr, beta1, beta2, bc1, bc2Sqrt, eps, weightDecay } = args.attrs as unknown as Record<string, number>;
  for (const t of [p, g, m, v]) if (t.dtype !== 'float32' || !tf.util.arraysEqual(t.shape, p.shape)) throw new Error(`${ADAMW_KERNEL}: float32 tensors of one shape only`);
  const internals = internalsOf(args.backend);
  const outs = [0, 1, 2].map(() => internals.makeOutput([...p.shape], 'float32'));
  const [pv, gv, mv, vv] = [p, g, m, v].map((t) => f32(internals, t));
  const [mo, vo, po] = outs.map((t) => f32(internals, t));
  // The same float32 steps as the composed ops, in the same order.
  const f = Math.fround;
  const c1 = f(1 - beta1), c2 = f(1 - beta2), decay = f(1 - lr * weightDecay), step = f(lr / bc1);
  const b1 = f(beta1), b2 = f(beta2), bc2 = f(bc2Sqrt), e = f(eps);
  const native = nativeUpdates(); // the same loop vectorised (kernels/native/moco_native.c), same bits
  if (native) {
    native.adamw(pv, gv, mv, vv, mo, vo, po, pv.length, b1, c1, b2, c2, bc2, e, decay, step);
    return outs;
  }
  for (let i = 0; i < pv.length; i++) {
    const gi = gv[i];
    const mi = f(f(mv[i] * b1) + f(gi * c1));
    const vi = f(f(vv[i] * b2) + f(f(gi * gi) * c2));
    const denom = f(f(f(Math.sqrt(vi)) / bc2) + e);
    po[i] = f(pv[i] * decay) - f(f(mi / denom) * step);
    mo[i] = mi;
    vo[i] = vi;
  }
  return outs;
}

/** k·m + q·(1 − m): the momentum encoder's moving average of one tensor. */
function emaKernel(args: KernelArgs): tf.TensorInfo {
  const { k, q } = args.inputs as Record<'k' | 'q', tf.TensorInfo>;
  const { momentum } = args.attrs as unknown as { momentum: number };
  if (k.dtype !== 'float32' || q.dtype !== 'float32' || !tf.util.arraysEqual(k.shape, q.shape)) throw new Error(`${EMA_KERNEL}: float32 tensors of one shape only`);
  const internals = internalsOf(args.backend);
  const out = internals.makeOutput([...k.shape], 'float32');
  const [kv, qv, ov] = [k, q, out].map((t) => f32(internals, t));
  const f = Math.fround;
  const a = f(momentum), b = f(1 - momentum);
  const native = nativeUpdates();
  if (native) {
    native.ema(kv, qv, ov, kv.length, a, b);
    return out;
  }
  for (let i = 0; i < kv.length; i++) ov[i] = f(kv[i] * a) + f(qv[i] * b);
  return out;
}

/**
 * Registers the kernels above for the wasm backend (once per process). The reductions need the
 * native BLAS; Identity and the fused updates do not.
 */
export function installHeapKernels(blas: NativeBlas | null): void {
  if (installedFor) return;
  const wrap = (name: string, make: (stock: tf.KernelConfig) => tf.KernelConfig) => {
    const stock = tf.getKernel(name, 'wasm');
    if (!stock) return;
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(make(stock));
  };
  wrap('Identity', wrapIdentity);
  if (blas) for (const name of ['Sum', 'Mean'] as const) wrap(name, (stock) => wrapReduction(name, stock, blas));
  tf.registerKernel({ kernelName: ADAMW_KERNEL, backendName: 'wasm', kernelFunc: adamwKernel as unknown as tf.KernelFunc });
  tf.registerKernel({ kernelName: EMA_KERNEL, backendName: 'wasm', kernelFunc: emaKernel as unknown as tf.KernelFunc });
  installedFor = { blas };
}

/** Switches these kernels on or off at run time. */
export function setHeapKernelsEnabled(on: boolean): void {
  enabled = on;
}

/** True when optim.ts and model.ts should call MocoAdamW / MocoEma. */
export function fusedUpdatesActive(): boolean {
  return enabled && installedFor !== null && tf.getBackend() === 'wasm';
}

/** One AdamW step of p on the fused kernel: [m', v', p']. */
export function adamwFused(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, attrs: { lr: number; beta1: number; beta2: number; bc1: number; bc2Sqrt: number; eps: number; weightDecay: number }): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(ADAMW_KERNEL, { p, g, m, v }, attrs as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}

/** k·m + q·(1 − m) on the fused kernel. */
export function emaFused(k: tf.Tensor, q: tf.Tensor, momentum: number): tf.Tensor {
  return tf.engine().runKernel(EMA_KERNEL, { k, q }, { momentum }) as tf.Tensor;
}
