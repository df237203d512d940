/**
 * A BatchMatMul kernel for the tfjs wasm backend that sends batched (3-D+) and transposed
 * products to our SIMD small-GEMM (kernels/bmm.c) and everything else (the plain 2-D product,
 * which tfjs already runs on XNNPACK) to the stock kernel.
 *
 * Why (tfjs-backend-wasm 4.22): its BatchMatMul uses XNNPACK only for an untransposed product
 * with batch 1; the rest runs a scalar loop at ~1-2.5 GFLOP/s, and the attention products of the
 * ViT were a third of a MoCo step. docs/trainer.md has the figures.
 *
 * Installed once per process by `installWasmKernels` (registered as a wrapper around the stock
 * kernel config, so `setWasmKernelsEnabled(false)` switches back at run time: benchmarks compare
 * both paths in one process). Our kernel is deterministic (fixed summation order per element).
 */
import * as tf from '@tensorflow/tfjs';
import { geluKernelFor, registerGeluKernels } from './gelu.js';
import { instantiateKernel, wasmBackendInternals, type WasmBackendInternals } from './wasm-module.js';

interface BmmExports {
  bmm(a: number, b: number, c: number, scratch: number, batch: number, m: number, n: number, k: number, strideA: number, strideB: number, transA: number, transB: number): void;
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

let enabled = true;
let geluEnabled = true;
let installed: { status: string } | null = null;
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

/** Shapes our kernel takes: float32, equal batch dims (or one side batch 1), and not the XNNPACK case. */
function ours(a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean): { outer: number[]; batch: number; strideA: number; strideB: number; m: number; n: number; k: number } | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return null;
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = outerA.reduce((p, q) => p * q, 1), batchB = outerB.reduce((p, q) => p * q, 1);
  const batch = Math.max(batchA, batchB);
  if (batch === 1 && !transposeA && !transposeB) return null; // XNNPACK
  const same = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  if (!same && batchA !== 1 && batchB !== 1) return null; // general broadcasting: stock kernel
  const [ra, ca] = a.shape.slice(-2), [rb, cb] = b.shape.slice(-2);
  const m = transposeA ? ca : ra, k = transposeA ? ra : ca;
  const n = transposeB ? rb : cb;
  if ((transposeB ? cb : rb) !== k || m === 0 || n === 0 || k === 0) return null; // let the stock kernel report it
  const outer = batchA >= batchB ? outerA : outerB;
  return { outer, batch, strideA: batchA === 1 ? 0 : m * k, strideB: batchB === 1 ? 0 : k * n, m, n, k };
}

function makeKernelFunc(stock: tf.KernelConfig): tf.KernelFunc {
  return (args: KernelArgs) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const plan = enabled ? ours(a, b, transposeA, transposeB) : null;
    const kernel = plan ? kernelFor(args.backend) : null;
    if (!plan || !kernel || typeof kernel === 'string') return stock.kernelFunc(args);
    const { internals, bmm } = kernel;
    const out = internals.makeOutput([...plan.outer, plan.m, plan.n], 'float32');
    const offset = (t: { dataId: object }) => internals.dataIdMap.get(t.dataId)!.memoryOffset;
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
 * Registers our kernels for the wasm backend (once per process) when the active backend is wasm
 * and its internals are as expected: BatchMatMul (wrapping the stock one) and the fused GELU
 * kernels. Returns what was done ('bmm+gelu' or the reason it was not).
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
    installed = { status: `off (${why})` };
    console.warn(`moco: stock tfjs wasm kernels only: ${why}`);
    return installed.status;
  }
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({ ...stock, kernelFunc: makeKernelFunc(stock) });
  registerGeluKernels();
  installed = { status: 'bmm+gelu' };
  return installed.status;
}

/**
 * Switches our kernels on or off at run time (benchmarks: both paths in one process); `gelu`
 * (default: same as `on`) lets a benchmark measure the fused GELU on its own.
 */
export function setWasmKernelsEnabled(on: boolean, gelu = on): void {
  enabled = on;
  geluEnabled = on && gelu;
}

/** True when our kernels run on the current backend (ops may emit transposed products, fused GELU). */
export function wasmKernelsActive(): boolean {
  return enabled && installed?.status === 'bmm+gelu' && tf.getBackend() === 'wasm';
}

/** True when ops.ts's gelu should run on our fused kernel. */
export function wasmGeluActive(): boolean {
  return geluEnabled && wasmKernelsActive();
}
