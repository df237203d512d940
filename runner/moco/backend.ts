/**
 * Chooses the TensorFlow.js backend at run time (DESIGN.md section 4): `tensorflow` (the native
 * bindings: @tensorflow/tfjs-node-gpu, then @tensorflow/tfjs-node), then `wasm` (SIMD), then
 * `cpu`. The native packages are optional dependencies that may be absent (their install needs
 * the internet); a missing one is skipped, and why is reported in `tried`.
 *
 * The module loader and the activation are injectable so the fallback order is tested without
 * a GPU or the native packages.
 */
import * as tf from '@tensorflow/tfjs';
import { installWasmKernels, nativeBlasStatus } from './kernels/batch-matmul.js';
import { loadNativeBlas } from './kernels/native-blas.js';
import { nativeKernelsStatus } from './kernels/native-ops.js';
import { activateWasm, wantedWasmThreads } from './kernels/wasm-threads.js';

export type BackendPreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

export interface BackendInfo {
  /** The tfjs backend name now active: 'tensorflow', 'wasm' or 'cpu'. */
  backend: string;
  /** What computes: 'gpu (CUDA)', 'cpu (libtensorflow)', 'cpu (wasm simd)', 'cpu (js)'. */
  device: string;
  versions: Record<string, string>;
  /** Threads the backend computes with (wasm: its pool; 1 for the js cpu backend). */
  threads: number;
  /**
   * Our own kernels in use: 'blas+native+bmm+gelu' (matrix products on the native BLAS, native
   * elementwise kernels, our SIMD batched matMul for small batched ones, fused GELU), without
   * 'blas' when no native BLAS loads, without 'native' when the native kernels do not build,
   * 'stock' (none), or 'off (reason)' when they could not be installed. MOCO_WASM_KERNELS=off
   * turns them off.
   */
  kernels: string;
  /**
   * The native BLAS the wasm backend's matrix products run on ({library, config, threads}), or why
   * they do not ('no native BLAS: …', 'off (MOCO_BLAS=off)', 'not used by the … backend').
   */
  blas: { library: string; config: string; threads: number } | string;
  /**
   * The native elementwise kernels (GELU, LayerNorm, softmax; kernels/native-ops.ts): the library
   * built for this CPU ({library, compiler, built: 'now' | 'cached', threads}), or why they do not run and
   * the wasm kernels / composed tfjs ops do ('no C compiler …', 'off (MOCO_NATIVE_KERNELS=off)', …).
   */
  native: { library: string; compiler: string; built: 'now' | 'cached'; threads: number } | string;
  /** Every candidate in order, with the reason it was not taken. */
  tried: { candidate: string; ok: boolean; error?: string; note?: string }[];
}

export interface BackendDeps {
  /** Loads a module by name (default: dynamic import). */
  load?: (name: string) => Promise<unknown>;
  /** Makes a registered backend current (default: tf.setBackend + tf.ready). */
  activate?: (name: string) => Promise<boolean>;
}

interface Candidate {
  name: string;
  backend: string;
  device: string;
  /** Runs before activation: loading the package registers its backend. */
  prepare: (deps: Required<BackendDeps>) => Promise<Record<string, string>>;
  /** Makes the backend current (default: deps.activate(backend)); `note` says what was given up. */
  activate?: (deps: Required<BackendDeps>) => Promise<{ ok: boolean; note?: string }>;
  threads: () => Promise<number>;
  /** Runs after activation: installs our kernels for this backend; says which. */
  kernels: () => string;
}

const noBlas = (backend: string) => `not used by the ${backend} backend`;

const NATIVE_GPU: Candidate = {
  name: '@tensorflow/tfjs-node-gpu',
  backend: 'tensorflow',
  device: 'gpu (CUDA)',
  prepare: async ({ load }) => ({ 'tfjs-node-gpu': versionOf(await load('@tensorflow/tfjs-node-gpu')) }),
  threads: async () => 0,
  kernels: () => 'stock',
};

const NATIVE_CPU: Candidate = {
  name: '@tensorflow/tfjs-node',
  backend: 'tensorflow',
  device: 'cpu (libtensorflow)',
  prepare: async ({ load }) => ({ 'tfjs-node': versionOf(await load('@tensorflow/tfjs-node')) }),
  threads: async () => 0,
  kernels: () => 'stock',
};

const WASM: Candidate = {
  name: '@tensorflow/tfjs-backend-wasm',
  backend: 'wasm',
  device: 'cpu (wasm simd)',
  prepare: async ({ load }) => ({ 'tfjs-backend-wasm': versionOf(await load('@tensorflow/tfjs-backend-wasm')) }),
  // Stock tfjs 4.22 runs wasm single-threaded under Node; kernels/wasm-threads.ts works around it
  // (MOCO_WASM_THREADS) and falls back to one thread, with a note, if it fails.
  activate: async ({ load, activate }) => activateWasm(wasmThreadsFor(), (await load('@tensorflow/tfjs-backend-wasm')) as object, activate),
  threads: async () => {
    const wasm = (await import('@tensorflow/tfjs-backend-wasm')) as { getThreadsCount?: () => number };
    return wasm.getThreadsCount?.() ?? 1;
  },
  kernels: () => (process.env.MOCO_WASM_KERNELS === 'off' ? 'off (MOCO_WASM_KERNELS=off)' : installWasmKernels()),
};

/**
 * The wasm thread pool's size: MOCO_WASM_THREADS when set; else 1 when the native BLAS loads (the
 * pool only ever served XNNPACK's products, which then run on BLAS's own threads: a second pool
 * would compete for the same cores; measured in docs/trainer.md), else every core.
 */
function wasmThreadsFor(): number {
  if (process.env.MOCO_WASM_THREADS) return wantedWasmThreads();
  return process.env.MOCO_WASM_KERNELS !== 'off' && typeof loadNativeBlas() !== 'string' ? 1 : wantedWasmThreads();
}

const CPU: Candidate = {
  name: 'cpu',
  backend: 'cpu',
  device: 'cpu (js)',
  prepare: async () => ({}),
  threads: async () => 1,
  kernels: () => 'stock',
};

/**
 * A tfjs package's version: `version` (a string, or an object of package → version as in
 * tfjs-node), else its own `version_<name>` export (tfjs-backend-wasm has only `version_wasm`).
 */
function versionOf(mod: unknown): string {
  const m = (mod ?? {}) as Record<string, unknown>;
  const v = m.version;
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object') return Object.values(v as Record<string, string>)[0] ?? 'unknown';
  const named = Object.keys(m).find((k) => k.startsWith('version_') && typeof m[k] === 'string');
  return named ? (m[named] as string) : 'unknown';
}

export function candidatesFor(pref: BackendPreference): Candidate[] {
  switch (pref) {
    case 'auto':
      return [NATIVE_GPU, NATIVE_CPU, WASM, CPU];
    case 'tensorflow':
      return [NATIVE_GPU, NATIVE_CPU];
    case 'wasm':
      return [WASM];
    case 'cpu':
      return [CPU];
  }
}

export async function selectBackend(pref: BackendPreference = 'auto', deps: BackendDeps = {}): Promise<BackendInfo> {
  const d: Required<BackendDeps> = {
    load: deps.load ?? ((name) => import(name)),
    activate:
      deps.activate ??
      (async (name) => {
        const ok = await tf.setBackend(name);
        await tf.ready();
        return ok;
      }),
  };
  const tried: BackendInfo['tried'] = [];
  for (const c of candidatesFor(pref)) {
    try {
      const versions = await c.prepare(d);
      const { ok, note } = c.activate ? await c.activate(d) : { ok: await d.activate(c.backend), note: undefined };
      if (!ok) throw new Error(`tf.setBackend('${c.backend}') failed${note ? ` (${note})` : ''}`);
      tried.push({ candidate: c.name, ok: true, ...(note ? { note } : {}) });
      const threads = await c.threads();
      const kernels = c.kernels();
      const ours = (status: () => BackendInfo['blas'] | BackendInfo['native']) =>
        c.backend !== 'wasm' ? noBlas(c.backend) : process.env.MOCO_WASM_KERNELS === 'off' ? 'off (MOCO_WASM_KERNELS=off)' : status();
      const blas = ours(nativeBlasStatus) as BackendInfo['blas'];
      const native = ours(nativeKernelsStatus) as BackendInfo['native'];
      return { backend: c.backend, device: c.device, versions: { tfjs: tf.version.tfjs, ...versions }, threads, kernels, blas, native, tried };
    } catch (err) {
      tried.push({ candidate: c.name, ok: false, error: (err as Error).message.split('\n')[0] });
    }
  }
  throw new Error(`no TensorFlow.js backend for "${pref}": ${tried.map((t) => `${t.candidate}: ${t.error}`).join('; ')}`);
}
