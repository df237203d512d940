/**
 * tfjs wasm kernels that run the native elementwise library (kernels/native-kernels.ts) on views
 * of the wasm heap: LayerNorm forward and gradient (one pass each instead of ~10 tfjs kernels),
 * softmax of scale·x and its gradient, and the GELU pair (kernels/gelu.ts asks `nativeGeluFor`).
 * Registered under our own kernel names; ops.ts calls them when `nativeKernelsActive()`, and
 * composes tfjs ops otherwise (the fallback where no compiler or library is there).
 */
import * as tf from '@tensorflow/tfjs';
import { loadNativeKernels, type NativeKernels } from './native-kernels.js';
import { wasmBackendInternals, type WasmBackendInternals } from './wasm-module.js';

export const LAYER_NORM_KERNEL = 'MocoLayerNorm';
export const LAYER_NORM_GRAD_KERNEL = 'MocoLayerNormGrad';
export const SOFTMAX_KERNEL = 'MocoSoftmax';
export const SOFTMAX_GRAD_KERNEL = 'MocoSoftmaxGrad';
export const ATTENTION_KERNEL = 'MocoAttention';
export const ATTENTION_GRAD_KERNEL = 'MocoAttentionGrad';

type KernelArgs = Parameters<tf.KernelFunc>[0];

let lib: NativeKernels | string = 'not loaded (our wasm kernels are not installed)';
let enabled = true;

function internalsOf(backend: object): WasmBackendInternals {
  const internals = wasmBackendInternals(backend);
  if (typeof internals === 'string') throw new Error(internals);
  return internals;
}

/** A float32 view of a tensor in the heap; taken after every allocation of the kernel (a grown heap detaches older views). */
function viewOf(internals: WasmBackendInternals, t: tf.TensorInfo, what: string): Float32Array {
  if (t.dtype !== 'float32') throw new Error(`${what}: float32 only, got ${t.dtype}`);
  return new Float32Array(internals.memory.buffer, internals.dataIdMap.get(t.dataId)!.memoryOffset, tf.util.sizeFromShape(t.shape));
}

/** Rows and columns of x seen as [rows, last axis]. */
function rowsCols(x: tf.TensorInfo): [number, number] {
  const cols = x.shape[x.shape.length - 1];
  return [tf.util.sizeFromShape(x.shape) / cols, cols];
}

function native(): NativeKernels {
  if (typeof lib === 'string') throw new Error(`native kernels not loaded: ${lib}`);
  return lib;
}

function layerNormKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const { x, w, b } = inputs as Record<'x' | 'w' | 'b', tf.TensorInfo>;
  const { eps } = attrs as unknown as { eps: number };
  const [rows, cols] = rowsCols(x);
  if (w.shape.length !== 1 || w.shape[0] !== cols || !tf.util.arraysEqual(w.shape, b.shape)) throw new Error(`${LAYER_NORM_KERNEL}: weight/bias must be [${cols}]`);
  const internals = internalsOf(backend);
  const y = internals.makeOutput([...x.shape], 'float32');
  const mean = internals.makeOutput([rows], 'float32');
  const rstd = internals.makeOutput([rows], 'float32');
  const v = (t: tf.TensorInfo) => viewOf(internals, t, LAYER_NORM_KERNEL);
  native().layerNorm(v(x), v(w), v(b), v(y), v(mean), v(rstd), rows, cols, eps);
  return [y, mean, rstd];
}

function layerNormGradKernel({ inputs, backend }: KernelArgs): tf.TensorInfo[] {
  const { dy, x, w, mean, rstd } = inputs as Record<'dy' | 'x' | 'w' | 'mean' | 'rstd', tf.TensorInfo>;
  const [rows, cols] = rowsCols(x);
  if (!tf.util.arraysEqual(dy.shape, x.shape) || tf.util.sizeFromShape(mean.shape) !== rows || tf.util.sizeFromShape(rstd.shape) !== rows) throw new Error(`${LAYER_NORM_GRAD_KERNEL}: shapes do not match`);
  const internals = internalsOf(backend);
  const dx = internals.makeOutput([...x.shape], 'float32');
  const dw = internals.makeOutput([cols], 'float32');
  const db = internals.makeOutput([cols], 'float32');
  const v = (t: tf.TensorInfo) => viewOf(internals, t, LAYER_NORM_GRAD_KERNEL);
  native().layerNormGrad(v(dy), v(x), v(w), v(mean), v(rstd), v(dx), v(dw), v(db), rows, cols);
  return [dx, dw, db];
}

function softmaxKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const { x } = inputs as { x: tf.TensorInfo };
  const { scale } = attrs as unknown as { scale: number };
  if (!(scale > 0)) throw new Error(`${SOFTMAX_KERNEL}: scale must be positive`);
  const [rows, cols] = rowsCols(x);
  const internals = internalsOf(backend);
  const y = internals.makeOutput([...x.shape], 'float32');
  native().softmax(viewOf(internals, x, SOFTMAX_KERNEL), viewOf(internals, y, SOFTMAX_KERNEL), rows, cols, scale);
  return y;
}

function softmaxGradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const { y, dy } = inputs as Record<'y' | 'dy', tf.TensorInfo>;
  const { scale } = attrs as unknown as { scale: number };
  if (!tf.util.arraysEqual(y.shape, dy.shape)) throw new Error(`${SOFTMAX_GRAD_KERNEL}: shapes ${y.shape} and ${dy.shape} differ`);
  const [rows, cols] = rowsCols(y);
  const internals = internalsOf(backend);
  const dx = internals.makeOutput([...y.shape], 'float32');
  const v = (t: tf.TensorInfo) => viewOf(internals, t, SOFTMAX_GRAD_KERNEL);
  native().softmaxGrad(v(y), v(dy), v(dx), rows, cols, scale);
  return dx;
}

interface AttentionAttrs {
  batch: number;
  tokens: number;
  heads: number;
  scale: number;
}

function attentionShape(x: tf.TensorInfo, a: AttentionAttrs, what: string): number {
  const [rows, d] = x.shape;
  if (x.shape.length !== 2 || rows !== a.batch * a.tokens || d % a.heads !== 0) throw new Error(`${what}: [${x.shape}] is not [batch·tokens, heads·dh] for ${a.batch}·${a.tokens}, ${a.heads} heads`);
  return d / a.heads;
}

function attentionKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const { q, k, v } = inputs as Record<'q' | 'k' | 'v', tf.TensorInfo>;
  const a = attrs as unknown as AttentionAttrs;
  const dh = attentionShape(q, a, ATTENTION_KERNEL);
  if (!tf.util.arraysEqual(q.shape, k.shape) || !tf.util.arraysEqual(q.shape, v.shape)) throw new Error(`${ATTENTION_KERNEL}: q, k, v differ in shape`);
  const internals = internalsOf(backend);
  const o = internals.makeOutput([...q.shape], 'float32');
  const p = internals.makeOutput([a.batch, a.heads, a.tokens, a.tokens], 'float32');
  const view = (t: tf.TensorInfo) => viewOf(internals, t, ATTENTION_KERNEL);
  if (native().attention(view(q), view(k), view(v), view(o), view(p), a.batch, a.tokens, a.heads, dh, a.scale) !== 0) throw new Error(`${ATTENTION_KERNEL}: out of memory for its scratch`);
  return [o, p];
}

function attentionGradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const { dy, q, k, v, p } = inputs as Record<'dy' | 'q' | 'k' | 'v' | 'p', tf.TensorInfo>;
  const a = attrs as unknown as AttentionAttrs;
  const dh = attentionShape(q, a, ATTENTION_GRAD_KERNEL);
  if (!tf.util.arraysEqual(dy.shape, q.shape) || tf.util.sizeFromShape(p.shape) !== a.batch * a.heads * a.tokens * a.tokens) throw new Error(`${ATTENTION_GRAD_KERNEL}: shapes do not match`);
  const internals = internalsOf(backend);
  const outs = [0, 1, 2].map(() => internals.makeOutput([...q.shape], 'float32'));
  const view = (t: tf.TensorInfo) => viewOf(internals, t, ATTENTION_GRAD_KERNEL);
  const [dq, dk, dv] = outs.map(view);
  if (native().attentionGrad(view(dy), view(q), view(k), view(v), view(p), dq, dk, dv, a.batch, a.tokens, a.heads, dh, a.scale) !== 0) throw new Error(`${ATTENTION_GRAD_KERNEL}: out of memory for its scratch`);
  return outs;
}

/**
 * Loads the native library (building it if needed) and registers its kernels for the wasm
 * backend, once per process. Returns the library or why there is none.
 */
export function installNativeKernels(): NativeKernels | string {
  if (typeof lib !== 'string' || !lib.startsWith('not loaded')) return lib;
  lib = loadNativeKernels();
  if (typeof lib === 'string') return lib;
  const kernels: [string, (args: KernelArgs) => tf.TensorInfo | tf.TensorInfo[]][] = [
    [LAYER_NORM_KERNEL, layerNormKernel],
    [LAYER_NORM_GRAD_KERNEL, layerNormGradKernel],
    [SOFTMAX_KERNEL, softmaxKernel],
    [SOFTMAX_GRAD_KERNEL, softmaxGradKernel],
    [ATTENTION_KERNEL, attentionKernel],
    [ATTENTION_GRAD_KERNEL, attentionGradKernel],
  ];
  for (const [kernelName, kernelFunc] of kernels) {
    if (!tf.getKernel(kernelName, 'wasm')) tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc: kernelFunc as unknown as tf.KernelFunc });
  }
  return lib;
}

/** The native kernels' library, or why they are not used. */
export function nativeKernelsStatus(): { library: string; compiler: string; built: 'now' | 'cached'; threads: number } | string {
  if (typeof lib === 'string') return lib;
  return { library: lib.library, compiler: lib.compiler, built: lib.built, threads: lib.threads };
}

/** Sets the native kernels' thread count (tests: the results do not depend on it); returns the count in use. */
export function setNativeThreads(n: number): number {
  if (typeof lib === 'string') return 0;
  return (lib.threads = lib.setThreads(n));
}

/** Switches the native kernels on or off at run time (benchmarks compare both paths in one process). */
export function setNativeKernelsEnabled(on: boolean): void {
  enabled = on;
}

/** True when ops.ts should call the native LayerNorm / softmax kernels. */
export function nativeKernelsActive(): boolean {
  return enabled && typeof lib !== 'string' && tf.getBackend() === 'wasm';
}

/** The native GELU pair when it should run (kernels/gelu.ts falls back to the wasm kernel otherwise). */
export function nativeGelu(): Pick<NativeKernels, 'gelu' | 'geluGrad'> | null {
  return enabled && typeof lib !== 'string' ? lib : null;
}

/** The native row fill (batch-matmul.ts's dense + bias broadcasts the bias with it; a rank-1 BLAS product otherwise). */
export function nativeFillRows(): NativeKernels['fillRows'] | null {
  return enabled && typeof lib !== 'string' ? lib.fillRows : null;
}

/** The native AdamW / moving-average loops when they should run (kernels/heap-kernels.ts falls back to its JS loops). */
export function nativeUpdates(): Pick<NativeKernels, 'adamw' | 'ema'> | null {
  return enabled && typeof lib !== 'string' ? lib : null;
}

/** LayerNorm of x [rows, c] with w, b [c]: [y, mean, rstd]. */
export function layerNormFused(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, eps: number): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(LAYER_NORM_KERNEL, { x, w, b }, { eps }) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}

/** Its gradient: [dx, dw, db]. */
export function layerNormGradFused(dy: tf.Tensor, x: tf.Tensor, w: tf.Tensor, mean: tf.Tensor, rstd: tf.Tensor): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(LAYER_NORM_GRAD_KERNEL, { dy, x, w, mean, rstd }, {}) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}

/** softmax(scale·x) along the last axis (scale > 0). */
export function softmaxFused(x: tf.Tensor, scale: number): tf.Tensor {
  return tf.engine().runKernel(SOFTMAX_KERNEL, { x }, { scale }) as tf.Tensor;
}

/** Its gradient from the output y. */
export function softmaxGradFused(y: tf.Tensor, dy: tf.Tensor, scale: number): tf.Tensor {
  return tf.engine().runKernel(SOFTMAX_GRAD_KERNEL, { y, dy }, { scale }) as tf.Tensor;
}

/** Multi-head attention of q, k, v [batch·tokens, heads·dh]: [o (same layout), P [batch, heads, T, T]]. */
export function attentionFused(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, attrs: AttentionAttrs): [tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(ATTENTION_KERNEL, { q, k, v }, attrs as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor];
}

/** Its gradient: [dq, dk, dv]. */
export function attentionGradFused(dy: tf.Tensor, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, p: tf.Tensor, attrs: AttentionAttrs): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(ATTENTION_GRAD_KERNEL, { dy, q, k, v, p }, attrs as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}
