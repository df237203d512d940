/**
 * Loads one of our wasm32 kernels (runner/moco/kernels/*.wasm, built by
 * scripts/build-wasm-kernels.sh) against the memory of the tfjs wasm backend, so the kernels read
 * and write tensors in place (pointers are the backend's `memoryOffset`s), with no copies.
 *
 * Relies on tfjs-backend-wasm 4.22 internals: `backend.wasm` is the Emscripten module, whose
 * `asm.memory` (or `wasmMemory`) is the heap's WebAssembly.Memory; `backend.dataIdMap.get(dataId)`
 * holds `memoryOffset`; `wasm._malloc`/`_free` manage the heap. `wasmBackendInternals` checks
 * them and says what is missing, so a future tfjs that changes them falls back to stock kernels
 * instead of breaking.
 */
import { readFileSync } from 'node:fs';

/** The parts of tfjs-backend-wasm's BackendWasm our kernels use. */
export interface WasmBackendInternals {
  wasm: { _malloc(bytes: number): number; _free(ptr: number): void; HEAPF32: Float32Array };
  dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: 'float32'): { dataId: object; shape: number[]; dtype: 'float32' };
  memory: WebAssembly.Memory;
}

/** The backend's internals, or the reason they are not as expected. */
export function wasmBackendInternals(backend: unknown): WasmBackendInternals | string {
  const b = backend as {
    wasm?: { asm?: { memory?: unknown }; wasmMemory?: unknown; _malloc?: unknown; _free?: unknown; HEAPF32?: unknown };
    dataIdMap?: { get?: unknown };
    makeOutput?: unknown;
  } | null;
  if (!b?.wasm) return 'backend has no Emscripten module (backend.wasm)';
  const memory = b.wasm.asm?.memory ?? b.wasm.wasmMemory;
  if (!(memory instanceof WebAssembly.Memory)) return 'backend.wasm.asm.memory is not a WebAssembly.Memory';
  if (typeof b.wasm._malloc !== 'function' || typeof b.wasm._free !== 'function') return 'backend.wasm has no _malloc/_free';
  if (typeof b.dataIdMap?.get !== 'function' || typeof b.makeOutput !== 'function') return 'backend has no dataIdMap/makeOutput';
  const full = b as unknown as Omit<WasmBackendInternals, 'memory'>;
  // A view, never a mutation: BackendWasm has its own memory() method.
  return { wasm: full.wasm, dataIdMap: full.dataIdMap, makeOutput: (shape, dtype) => full.makeOutput(shape, dtype), memory };
}

const compiled = new Map<string, WebAssembly.Module>();

/**
 * Instantiates kernels/<name>.wasm with the backend heap as its memory; returns its exports. A
 * shared heap (the threaded tfjs build) takes the <name>.shared.wasm build, whose memory import
 * is declared shared.
 */
export function instantiateKernel<T>(name: string, memory: WebAssembly.Memory): T {
  const file = memory.buffer instanceof SharedArrayBuffer ? `${name}.shared.wasm` : `${name}.wasm`;
  let mod = compiled.get(file);
  if (!mod) compiled.set(file, (mod = new WebAssembly.Module(readFileSync(new URL(`./${file}`, import.meta.url)))));
  return new WebAssembly.Instance(mod, { env: { memory } }).exports as T;
}
