/**
 * Multi-threaded tfjs wasm backend under Node (XNNPACK's thread pool then uses every core).
 *
 * tfjs-backend-wasm 4.22 cannot do this by itself, for three reasons, each worked around here
 * (see docs/trainer.md). All of it runs before the backend initialises and changes nothing after.
 *  1. Its WASM_HAS_MULTITHREAD_SUPPORT flag answers false whenever IS_NODE: we set it to true.
 *  2. Emscripten starts its pthread workers from `locateFile('…worker.js')`, which tfjs answers with
 *     a blob: URL, and the worker loads the main script from `mainScriptUrlOrBlob`, a Blob; Node's
 *     worker_threads accepts neither. tfjs builds both inside init() on a fresh config object, so we
 *     catch the two assignments with one-shot setters on Object.prototype (removed on first use and
 *     after activation) and substitute files: the worker script (tfjs's own text) written to a
 *     temporary .cjs file, and a main script that requires the package's threaded factory.
 *     The same hook hands Emscripten the shared heap (Module.wasmMemory), so our own kernels
 *     can import it (it is not exported by the threaded build).
 *  3. The pool is capped at cores/2 (1 on a 2-core machine), where cores is Emscripten's
 *     emscripten_num_logical_cores(), which under Node is require('os').cpus().length, read once
 *     by a static initialiser while the module starts. We call setThreadsCount and, only while
 *     the backend initialises, make os.cpus() report 2·threads entries.
 * If tfjs changes any of this, activation fails or the setters never fire: `selectBackend`
 * then falls back to the single-threaded backend and reports why.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import vm from 'node:vm';
import * as tf from '@tensorflow/tfjs';
import { coresForThisProcess } from './native-blas.js';

const require = createRequire(import.meta.url);
const WASM_OUT = '@tensorflow/tfjs-backend-wasm/wasm-out/';
const HOOKED = ['locateFile', 'mainScriptUrlOrBlob'] as const;
/** Emscripten's INITIAL_MEMORY and maximum for tfjs 4.22's threaded build (16 MiB, 4 GiB). */
const INITIAL_PAGES = 16777216 / 65536;
const MAXIMUM_PAGES = 4294967296 / 65536;

let scripts: { worker: string; main: string } | null = null;

/** The worker and main scripts as files (written once per process). */
function scriptFiles(): { worker: string; main: string } {
  if (scripts) return scripts;
  const { wasmWorkerContents } = require(WASM_OUT + 'tfjs-backend-wasm-threaded-simd.worker.js') as { wasmWorkerContents: string };
  if (typeof wasmWorkerContents !== 'string' || !wasmWorkerContents.includes('worker_threads')) throw new Error('tfjs wasm worker script not found or not Node-capable');
  const factory = require.resolve(WASM_OUT + 'tfjs-backend-wasm-threaded-simd.js');
  const dir = mkdtempSync(join(tmpdir(), 'moco-wasm-threads-'));
  scripts = { worker: join(dir, 'tfjs-backend-wasm-threaded-simd.worker.cjs'), main: join(dir, 'main.cjs') };
  // .cjs: the worker text uses require(), and worker_threads would treat a .js under an ESM
  // package.json as a module. The worker evaluates `main` with its own global require.
  // As tfjs does before making its Blob: the text came through a template literal, which turned
  // the "\n" escapes inside its string literals into real newlines.
  writeFileSync(scripts.worker, wasmWorkerContents.replace(/\n/g, '\\n'));
  writeFileSync(scripts.main, `var WasmBackendModuleThreadedSimd = require(${JSON.stringify(factory)});\n`);
  return scripts;
}

function removeHooks(): void {
  const proto = Object.prototype as Record<string, unknown>;
  for (const key of HOOKED) if (Object.getOwnPropertyDescriptor(proto, key)?.set) delete proto[key];
}

/** Defines a plain own property on `target` (what the assignment would have done). */
function own(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
}

/**
 * Prepares the next wasm backend initialisation to run `threads` threads. Call after loading
 * @tensorflow/tfjs-backend-wasm and before tf.setBackend('wasm'); then call `done()` whatever
 * the outcome. Returns null when nothing was prepared (threads ≤ 1).
 */
export function prepareWasmThreads(threads: number, wasmPackage: { setThreadsCount?: (n: number) => void }): { done: () => void } | null {
  if (threads <= 1) return null;
  if (typeof wasmPackage.setThreadsCount !== 'function') throw new Error('tfjs-backend-wasm has no setThreadsCount');
  const files = scriptFiles();
  const memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAXIMUM_PAGES, shared: true });
  const proto = Object.prototype as object;
  Object.defineProperty(proto, 'locateFile', {
    configurable: true,
    set(this: object, locate: (path: string, prefix: string) => string) {
      delete (proto as Record<string, unknown>).locateFile;
      own(this, 'locateFile', (path: string, prefix: string) => (path.endsWith('.worker.js') ? files.worker : locate(path, prefix)));
      own(this, 'wasmMemory', memory);
    },
  });
  Object.defineProperty(proto, 'mainScriptUrlOrBlob', {
    configurable: true,
    set(this: object) {
      delete (proto as Record<string, unknown>).mainScriptUrlOrBlob;
      own(this, 'mainScriptUrlOrBlob', files.main);
    },
  });
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  wasmPackage.setThreadsCount(threads);
  const cpus = os.cpus;
  os.cpus = () => {
    const real = cpus();
    return Array.from({ length: Math.max(real.length, 2 * threads) }, (_, i) => real[i % real.length]);
  };
  return {
    done: () => {
      os.cpus = cpus;
      removeHooks();
    },
  };
}

/** Undoes prepareWasmThreads' flag so a retry initialises the single-threaded build. */
export function disableWasmThreads(wasmPackage: { setThreadsCount?: (n: number) => void }): void {
  removeHooks();
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  wasmPackage.setThreadsCount?.(1);
}

/**
 * Whether the wasm backend has been initialised (or its initialisation begun). Not
 * tf.findBackend: that starts the initialisation itself.
 */
function wasmBackendStarted(): boolean {
  const engine = tf.engine() as unknown as { registry?: Record<string, unknown>; pendingBackendInit?: unknown };
  return Boolean(engine.registry?.wasm) || engine.pendingBackendInit != null;
}

/**
 * Emscripten ref()s the worker of every running pthread, and XNNPACK's pool threads run (wait)
 * forever, so a process that has finished would never exit: unref them, as Emscripten does for
 * idle workers. (A finished trainer process exits; the pool dies with it.)
 */
function unrefPoolWorkers(): void {
  const backend = tf.findBackend('wasm') as unknown as { wasm?: { PThread?: { runningWorkers?: { unref?: () => void }[] } } } | null;
  for (const w of backend?.wasm?.PThread?.runningWorkers ?? []) w.unref?.();
}

/** Threads wanted for the wasm backend: MOCO_WASM_THREADS, else the cores this process may use (MOCO_CORES). */
export function wantedWasmThreads(): number {
  const env = Number(process.env.MOCO_WASM_THREADS);
  return Number.isInteger(env) && env >= 1 ? env : coresForThisProcess();
}

/** The worker script must at least parse: a worker that throws takes the whole process down. */
function workerScriptParses(): string | null {
  try {
    new vm.Script(readFileSync(scriptFiles().worker, 'utf8'));
    return null;
  } catch (err) {
    return `tfjs wasm worker script does not parse: ${(err as Error).message}`;
  }
}

/**
 * Activates the wasm backend with `threads` threads where possible. Any failure before or during
 * the threaded initialisation falls back to the stock single-threaded one; `note` says why.
 */
export async function activateWasm(
  threads: number,
  wasmPackage: { setThreadsCount?: (n: number) => void },
  activate: (name: string) => Promise<boolean>,
): Promise<{ ok: boolean; note?: string }> {
  if (threads <= 1 || wasmBackendStarted()) return { ok: await activate('wasm') }; // nothing to do, or too late
  let prepared: { done: () => void } | null = null;
  let note: string | undefined;
  try {
    note = workerScriptParses() ?? undefined;
    if (!note) prepared = prepareWasmThreads(threads, wasmPackage);
  } catch (err) {
    note = `wasm threads not prepared: ${(err as Error).message}`;
  }
  if (prepared) {
    try {
      if (await activate('wasm')) {
        unrefPoolWorkers();
        return { ok: true };
      }
      note = 'threaded wasm backend failed to initialise';
    } catch (err) {
      note = `threaded wasm backend failed to initialise: ${(err as Error).message}`;
    } finally {
      prepared.done();
    }
  }
  disableWasmThreads(wasmPackage);
  console.warn(`moco: wasm backend single-threaded: ${note}`);
  return { ok: await activate('wasm'), note };
}
