/**
 * A BatchMatMul kernel for the tfjs wasm backend that sends products to a native BLAS when one
 * loads (kernels/native-blas.ts: every 2-D product, and the batched ones big enough to pay for
 * the call), the other batched (3-D+) and transposed products to our SIMD small-GEMM
 * (kernels/bmm.c), and the rest (the plain 2-D product without BLAS, which tfjs runs on XNNPACK)
 * to the stock kernel.
 *
 * Why (tfjs-backend-wasm 4.22): its BatchMatMul uses XNNPACK only for an untransposed product
 * with batch 1; the rest runs a scalar loop at ~1-2.5 GFLOP/s, and the attention products of the
 * ViT were a third of a MoCo step. docs/trainer.md has the figures.
 *
 * Installed once per process by `installWasmKernels` (registered as a wrapper around the stock
 * kernel config, so `setWasmKernelsEnabled(false)` switches back at run time: benchmarks compare
 * both paths in one process). Our kernel is deterministic (fixed summation order per element);
 * OpenBLAS is too for a given thread count (it splits the output, not the sum, across threads).
 */
import * as tf from '@tensorflow/tfjs';
import { geluKernelFor, registerGeluKernels } from './gelu.js';
import { installHeapKernels, onesVector, setHeapKernelsEnabled } from './heap-kernels.js';
import { loadNativeBlas, type NativeBlas } from './native-blas.js';
import { installNativeKernels, nativeFillRows, setNativeKernelsEnabled } from './native-ops.js';
import { instantiateKernel, wasmBackendInternals, type WasmBackendInternals } from './wasm-module.js';

interface BmmExports {
  bmm(a: number, b: number, c: number, scratch: number, batch: number, m: number, n: number, k: number, strideA: number, strideB: number, transA: number, transB: number): void;
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

let enabled = true;
let geluEnabled = true;
let blasOn = true;
let fusedOn = true;
/** The native BLAS (loaded when our kernels are installed), or why it is not used. */
let blas: NativeBlas | string = 'not loaded (our wasm kernels are not installed)';
let installed: { status: string; ok: boolean } | null = null;
const instances = new WeakMap<object, BmmExports | string>();

/** Our kernel for this backend instance, or why it cannot run there. */
function kernelFor(backend: object): { internals: WasmBackendInternals; bmm: BmmExports } | string {
  const internals = wasmBackendInternals(backend);
  if (typeof internals === 'string') return internals;
  let inst = instances.get(backend);
  if (inst === undefined) {
    try {
      inst = instantiateKernel<BmmExports>('bmm', internals.memory);
    } catch (err) {
      // e.g. a threaded build whose shared memory our (unshared) module cannot import
      inst = `cannot instantiate bmm.wasm on the backend heap: ${(err as Error).message}`;
    }
    instances.set(backend, inst);
  }
  return typeof inst === 'string' ? inst : { internals, bmm: inst };
}

/** A product tfjs asks for, as batched row-major GEMMs; null when it broadcasts in a way we do not handle. */
interface ProductPlan {
  outer: number[];
  batch: number;
  strideA: number;
  strideB: number;
  m: number;
  n: number;
  k: number;
}

function productPlan(a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean): ProductPlan | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return null;
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = outerA.reduce((p, q) => p * q, 1), batchB = outerB.reduce((p, q) => p * q, 1);
  const batch = Math.max(batchA, batchB);
  const same = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  if (!same && batchA !== 1 && batchB !== 1) return null; // general broadcasting: stock kernel
  const [ra, ca] = a.shape.slice(-2), [rb, cb] = b.shape.slice(-2);
  const m = transposeA ? ca : ra, k = transposeA ? ra : ca;
  const n = transposeB ? rb : cb;
  if ((transposeB ? cb : rb) !== k || m === 0 || n === 0 || k === 0) return null; // let the stock kernel report it
  const outer = batchA >= batchB ? outerA : outerB;
  return { outer, batch, strideA: batchA === 1 ? 0 : m * k, strideB: batchB === 1 ? 0 : k * n, m, n, k };
}

/**
 * Which engine runs a product. Native BLAS: every 2-D product, and batched ones whose single
 * products are big enough to pay the FFI call each costs (a few µs); our wasm kernel: the other
 * batched or transposed ones; XNNPACK (the stock kernel): the plain 2-D product without BLAS.
 */
function engineFor(plan: ProductPlan, transposeA: boolean, transposeB: boolean): 'blas' | 'bmm' | 'stock' {
  const oneProduct = plan.batch === 1 || (plan.strideB === 0 && !transposeA); // see nativeProducts
  if (blasOn && typeof blas !== 'string' && (oneProduct || plan.m * plan.n * plan.k >= BLAS_MIN_BATCHED_MNK)) return 'blas';
  if (enabled && !(plan.batch === 1 && !transposeA && !transposeB)) return 'bmm';
  return 'stock';
}

/**
 * Batched products with fewer multiply-adds per product than this stay on our wasm kernel, which
 * does the whole batch in one call; BLAS takes one FFI call per product. Measured (2 cores, load
 * ~24, ms per batched product, our wasm bmm vs a loop of cblas_sgemm): [192, 65, 64]·[192, 64, 65]
 * (m·n·k 270k, the default shape's attention) 13 vs 20; [48, 65, 64]·[48, 64, 65] 6–9 vs 9;
 * [32, 128, 128]² (2.1M) 21–28 vs 13–16; [8, 512, 64]·[8, 64, 512] (16.8M) 48 vs 28–33.
 */
export const BLAS_MIN_BATCHED_MNK = 1 << 20;

function makeKernelFunc(stock: tf.KernelConfig): tf.KernelFunc {
  return (args: KernelArgs) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const plan = enabled || blasOn ? productPlan(a, b, transposeA, transposeB) : null;
    const engine = plan ? engineFor(plan, transposeA, transposeB) : 'stock';
    const kernel = engine === 'stock' ? null : kernelFor(args.backend);
    if (!plan || !kernel || typeof kernel === 'string') return stock.kernelFunc(args);
    const { internals, bmm } = kernel;
    const out = internals.makeOutput([...plan.outer, plan.m, plan.n], 'float32');
    const offset = (t: { dataId: object }) => internals.dataIdMap.get(t.dataId)!.memoryOffset;
    if (engine === 'blas') {
      nativeProducts(blas as NativeBlas, internals.memory, offset(a), offset(b), offset(out), plan, transposeA, transposeB);
      return out;
    }
    const scratch = transposeB ? internals.wasm._malloc(plan.k * plan.n * 4) : 0;
    try {
      bmm.bmm(offset(a), offset(b), offset(out), scratch, plan.batch, plan.m, plan.n, plan.k, plan.strideA, plan.strideB, transposeA ? 1 : 0, transposeB ? 1 : 0);
    } finally {
      if (scratch) internals.wasm._free(scratch);
    }
    return out;
  };
}

/**
 * The products of a plan on the native BLAS, on views of the wasm heap (no copies). The views are
 * taken here, after the output was allocated: a heap that grew since detached every older view.
 */
function nativeProducts(lib: NativeBlas, memory: WebAssembly.Memory, a: number, b: number, c: number, p: ProductPlan, transposeA: boolean, transposeB: boolean): void {
  const heap = memory.buffer;
  const view = (byteOffset: number, length: number) => new Float32Array(heap, byteOffset, length);
  const sizeA = p.m * p.k, sizeB = p.k * p.n, sizeC = p.m * p.n;
  if (p.strideB === 0 && !transposeA && p.batch > 1) {
    // A [batch, m, k] times one B: a single [batch·m, k] product.
    lib.gemm(view(a, p.batch * sizeA), view(b, sizeB), view(c, p.batch * sizeC), p.batch * p.m, p.n, p.k, false, transposeB);
    return;
  }
  for (let i = 0; i < p.batch; i++) {
    lib.gemm(view(a + 4 * i * p.strideA, sizeA), view(b + 4 * i * p.strideB, sizeB), view(c + 4 * i * sizeC, sizeC), p.m, p.n, p.k, transposeA, transposeB);
  }
}

export const DENSE_BIAS_KERNEL = 'MocoDenseBias';

/**
 * y [m, n] = x [m, k] · W [k, n] + b [n] on the native BLAS, the bias added by the product itself:
 * y is first filled with the broadcast bias (the native row fill, else one rank-1 product
 * ones [m, 1] · b [1, n]), then x·W is accumulated onto it (beta = 1). Saves tfjs's separate Add
 * pass over y.
 */
function denseBiasKernel(args: KernelArgs): tf.TensorInfo {
  const { x, w, b } = args.inputs as Record<'x' | 'w' | 'b', tf.TensorInfo>;
  if (typeof blas === 'string') throw new Error(`${DENSE_BIAS_KERNEL}: no native BLAS (${blas})`);
  const [m, k] = x.shape, n = w.shape[1];
  if (x.shape.length !== 2 || w.shape.length !== 2 || w.shape[0] !== k || b.shape.length !== 1 || b.shape[0] !== n) throw new Error(`${DENSE_BIAS_KERNEL}: shapes ${x.shape}, ${w.shape}, ${b.shape}`);
  if ([x, w, b].some((t) => t.dtype !== 'float32')) throw new Error(`${DENSE_BIAS_KERNEL}: float32 only`);
  const internals = wasmBackendInternals(args.backend);
  if (typeof internals === 'string') throw new Error(internals);
  const out = internals.makeOutput([m, n], 'float32');
  const fill = nativeFillRows();
  const ones = fill ? 0 : onesVector(internals, args.backend, m);
  const offset = (t: { dataId: object }) => internals.dataIdMap.get(t.dataId)!.memoryOffset;
  const heap = internals.memory.buffer; // after every allocation: a grown heap detaches older views
  const y = new Float32Array(heap, offset(out), m * n);
  const bias = new Float32Array(heap, offset(b), n);
  if (fill) fill(y, bias, m, n);
  else blas.gemm(new Float32Array(heap, ones, m), bias, y, m, n, 1, false, false);
  blas.gemm(new Float32Array(heap, offset(x), m * k), new Float32Array(heap, offset(w), k * n), y, m, n, k, false, false, 1);
  return out;
}

/** x·W + b on the native BLAS in one kernel (ops.ts's dense, when `fusedDenseActive()`). */
export function denseBiasFused(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  return tf.engine().runKernel(DENSE_BIAS_KERNEL, { x, w, b }, {}) as tf.Tensor2D;
}

/**
 * Registers our kernels for the wasm backend (once per process) when the active backend is wasm
 * and its internals are as expected: BatchMatMul (wrapping the stock one; products go to the native
 * BLAS when it loads, see kernels/native-blas.ts), x·W + b on BLAS, the fused GELU kernels, and the
 * native elementwise kernels when they build (kernels/native-ops.ts). Returns what was done
 * ('blas+native+bmm+gelu', 'blas+bmm+gelu', 'native+bmm+gelu', 'bmm+gelu' or the reason it was
 * not); `nativeBlasStatus()` and `nativeKernelsStatus()` say why BLAS and the native kernels are
 * or are not in use.
 */
export function installWasmKernels(): string {
  if (installed) return installed.status;
  const backend = tf.findBackend('wasm');
  if (!backend) return 'off (no wasm backend)';
  let k = kernelFor(backend);
  if (typeof k !== 'string') {
    try {
      geluKernelFor(backend);
    } catch (err) {
      k = `cannot instantiate gelu.wasm: ${(err as Error).message}`;
    }
  }
  const stock = tf.getKernel('BatchMatMul', 'wasm');
  if (typeof k === 'string' || !stock) {
    const why = typeof k === 'string' ? k : 'no stock BatchMatMul kernel for wasm';
    blas = `off (our wasm kernels could not be installed: ${why})`;
    installed = { status: `off (${why})`, ok: false };
    console.warn(`moco: stock tfjs wasm kernels only: ${why}`);
    return installed.status;
  }
  blas = loadNativeBlas();
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({ ...stock, kernelFunc: makeKernelFunc(stock) });
  registerGeluKernels();
  installHeapKernels(typeof blas === 'string' ? null : blas);
  if (typeof blas !== 'string') tf.registerKernel({ kernelName: DENSE_BIAS_KERNEL, backendName: 'wasm', kernelFunc: denseBiasKernel as unknown as tf.KernelFunc });
  const native = installNativeKernels();
  const parts = [typeof blas === 'string' ? '' : 'blas', typeof native === 'string' ? '' : 'native', 'bmm', 'gelu'];
  installed = { status: parts.filter(Boolean).join('+'), ok: true };
  return installed.status;
}

/** The native BLAS the products run on, or why there is none (not installed yet, absent, off). */
export function nativeBlasStatus(): { library: string; config: string; threads: number } | string {
  if (typeof blas === 'string') return blas;
  return { library: blas.library, config: blas.config, threads: blas.threads };
}

/**
 * Switches our kernels on or off at run time (benchmarks: both paths in one process); `gelu`
 * (default: same as `on`) lets a benchmark measure the fused GELU on its own, `native` (default:
 * same as `on`) the native BLAS products, `fused` (default: same as `native`) the native
 * elementwise kernels and the bias added by the product.
 */
export function setWasmKernelsEnabled(on: boolean, gelu = on, native = on, fused = native): void {
  enabled = on;
  setHeapKernelsEnabled(on);
  geluEnabled = on && gelu;
  blasOn = native;
  fusedOn = on && fused;
  setNativeKernelsEnabled(fusedOn);
}

function installedOnWasm(): boolean {
  return installed?.ok === true && tf.getBackend() === 'wasm';
}

/** True when our kernels run on the current backend (ops may emit transposed products, fused GELU). */
export function wasmKernelsActive(): boolean {
  return enabled && installedOnWasm();
}

/**
 * True when a transposed 2-D product costs no more than a plain one (it runs on the native BLAS):
 * ops.ts's dense gradients then skip their explicit transposes.
 */
export function nativeProductsActive(): boolean {
  return blasOn && typeof blas !== 'string' && installedOnWasm();
}

/** True when ops.ts's dense should add its bias inside the BLAS product (`denseBiasFused`). */
export function fusedDenseActive(): boolean {
  return fusedOn && nativeProductsActive();
}

/** True when ops.ts's gelu should run on our fused kernel. */
export function wasmGeluActive(): boolean {
  return geluEnabled && wasmKernelsActive();
}
