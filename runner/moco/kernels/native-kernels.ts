/**
 * The trainer's native elementwise kernels (kernels/native/moco_native.c: GELU, LayerNorm, softmax
 * and their gradients, multi-head attention without head transposes, the AdamW update and the
 * momentum average), compiled on first use with the machine's C compiler for this CPU
 * (-O3 -march=native) and called through koffi on views of the wasm heap, like OpenBLAS
 * (kernels/native-blas.ts). Why: between the products a step is elementwise work, and wasm
 * SIMD128 is 4 lanes without FMA; the compiler vectorises these loops for the cores' own width.
 *
 * The built library is cached under MOCO_NATIVE_CACHE (default: <tmpdir>/momentum-native-<uid>, a
 * folder only this user may write to, checked before anything in it is loaded), named
 * by a hash of the source, the flags, the compiler and the CPU model, so a changed source or a
 * different machine compiles afresh, and concurrent processes write it atomically (temp + rename).
 *
 * Missing pieces are not errors: no compiler, a failed build, no koffi → `loadNativeKernels`
 * returns the reason, and the trainer keeps the wasm kernels (GELU) and the composed tfjs ops
 * (LayerNorm, softmax). Environment:
 * - MOCO_NATIVE_KERNELS=off: do not build or load them.
 * - MOCO_CC: the compiler (default: cc, then gcc, then clang).
 * - MOCO_NATIVE_CACHE: where the built library is kept.
 * - MOCO_NATIVE_THREADS: threads of the large kernels (default: MOCO_CORES, else every core).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { coresForThisProcess } from './native-blas.js';

const SOURCE = fileURLToPath(new URL('./native/moco_native.c', import.meta.url));
/**
 * -fopenmp-simd reads the `omp simd` hints only (no OpenMP runtime, no threads). Multiply-adds may
 * fuse (-ffp-contract=fast), except in the AdamW / moving-average loops, which the source keeps
 * unfused so they round as the composed ops. x86: 512-bit vectors where the CPU has them (GCC
 * otherwise prefers 256; measured 1.5× on GELU here). No -Werror: a newer compiler's new warning
 * must not cost the native path (test/unit/moco/native-blas.test.ts fails when a compiler is there
 * and the build does).
 */
const FLAGS = ['-O3', '-march=native', '-fopenmp-simd', '-fno-math-errno', '-ffp-contract=fast', ...(process.arch === 'x64' ? ['-mprefer-vector-width=512'] : []), '-pthread', '-fPIC', '-shared', '-Wall', '-Wextra'];

type F32 = Float32Array;

export interface NativeKernels {
  /** The built library file. */
  library: string;
  /** The compiler's first line of `--version`, and whether this process compiled it or found it built. */
  compiler: string;
  built: 'now' | 'cached';
  /** Threads the large kernels split their work across (the caller's included). */
  threads: number;
  /** Sets that count; returns the count in use. */
  setThreads(n: number): number;
  gelu(x: F32, y: F32, n: number): void;
  geluGrad(x: F32, dy: F32, dx: F32, n: number): void;
  layerNorm(x: F32, w: F32, b: F32, y: F32, mean: F32, rstd: F32, rows: number, cols: number, eps: number): void;
  layerNormGrad(dy: F32, x: F32, w: F32, mean: F32, rstd: F32, dx: F32, dw: F32, db: F32, rows: number, cols: number): void;
  softmax(x: F32, y: F32, rows: number, cols: number, scale: number): void;
  softmaxGrad(y: F32, dy: F32, dx: F32, rows: number, cols: number, scale: number): void;
  /** One AdamW step; constants already rounded to float32 (heap-kernels.ts). */
  adamw(p: F32, g: F32, m: F32, v: F32, mo: F32, vo: F32, po: F32, n: number, b1: number, c1: number, b2: number, c2: number, bc2: number, eps: number, decay: number, step: number): void;
  ema(k: F32, q: F32, out: F32, n: number, a: number, b: number): void;
  /** y[r, ·] = b for every row. */
  fillRows(y: F32, b: F32, rows: number, cols: number): void;
  /** Multi-head attention on [batch·tokens, heads·dh] q, k, v: o and the softmax P [batch, heads, T, T]; 0, or −1 when out of memory. */
  attention(q: F32, k: F32, v: F32, o: F32, p: F32, batch: number, tokens: number, heads: number, dh: number, scale: number): number;
  /** Its gradient; 0, or −1 when out of memory. */
  attentionGrad(dO: F32, q: F32, k: F32, v: F32, p: F32, dq: F32, dk: F32, dv: F32, batch: number, tokens: number, heads: number, dh: number, scale: number): number;
}

let loaded: NativeKernels | string | undefined;

/** Whether the native kernels are wanted at all (MOCO_NATIVE_KERNELS=off says no). */
export function nativeKernelsWanted(): boolean {
  return process.env.MOCO_NATIVE_KERNELS !== 'off';
}

/**
 * Threads for the large kernels (attention, GELU, LayerNorm forward): MOCO_NATIVE_THREADS, else the
 * cores this process may use (as BLAS: the two never run at once, the main thread calls both).
 */
export function wantedNativeThreads(): number {
  const env = Number(process.env.MOCO_NATIVE_THREADS);
  return Number.isInteger(env) && env >= 1 ? env : coresForThisProcess();
}

/** The first compiler that answers `--version`, with that line. */
function findCompiler(): { cc: string; version: string } | string {
  const candidates = process.env.MOCO_CC ? [process.env.MOCO_CC] : ['cc', 'gcc', 'clang'];
  for (const cc of candidates) {
    const r = spawnSync(cc, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return { cc, version: r.stdout.split('\n')[0].trim() };
  }
  return `no C compiler (tried ${candidates.join(', ')}; apt-get install gcc)`;
}

/** Builds the library unless this exact build is cached; its path, whether built now, or why it failed. */
function build(cc: string, version: string): { file: string; built: 'now' | 'cached' } | string {
  const source = readFileSync(SOURCE);
  const key = createHash('sha256').update(source).update(FLAGS.join(' ')).update(version).update(os.cpus()[0]?.model ?? '').update(process.arch).digest('hex').slice(0, 16);
  const dir = process.env.MOCO_NATIVE_CACHE || join(os.tmpdir(), `momentum-native-${process.getuid?.() ?? 'user'}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    return `cannot create ${dir}: ${(err as Error).message}`;
  }
  // A library found in a shared temporary folder is loaded into this process: only from a folder
  // that is ours and that nobody else can write to.
  if (!process.env.MOCO_NATIVE_CACHE) {
    const st = statSync(dir);
    if ((process.getuid && st.uid !== process.getuid()) || (st.mode & 0o022) !== 0) return `${dir} is not a private folder of this user (set MOCO_NATIVE_CACHE)`;
  }
  const file = join(dir, `moco_native-${key}.so`);
  if (existsSync(file)) return { file, built: 'cached' };
  const tmp = `${file}.${process.pid}.tmp`;
  const r = spawnSync(cc, [...FLAGS, SOURCE, '-o', tmp], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    return `${cc} failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? '').split('\n').slice(0, 3).join(' ')}`;
  }
  renameSync(tmp, file); // atomic: a concurrent process sees the whole library or none
  return { file, built: 'now' };
}

/**
 * Builds (or finds built) and loads the native kernels, once per process: the library, or the
 * reason there is none. Never throws.
 */
export function loadNativeKernels(): NativeKernels | string {
  if (loaded !== undefined) return loaded;
  if (!nativeKernelsWanted()) return (loaded = 'off (MOCO_NATIVE_KERNELS=off)');
  let koffi: typeof import('koffi');
  try {
    koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  } catch (err) {
    return (loaded = `koffi cannot load: ${(err as Error).message.split('\n')[0]}`);
  }
  const compiler = findCompiler();
  if (typeof compiler === 'string') return (loaded = compiler);
  const lib = build(compiler.cc, compiler.version);
  if (typeof lib === 'string') return (loaded = lib);
  try {
    const so = koffi.load(lib.file);
    // int64_t sizes: koffi takes JS numbers for them.
    const fn = (decl: string) => so.func(decl) as unknown as (...args: unknown[]) => void;
    const gelu = fn('void moco_gelu(const float *x, float *y, int64_t n)');
    const geluGrad = fn('void moco_gelu_grad(const float *x, const float *dy, float *dx, int64_t n)');
    const layerNorm = fn('void moco_layernorm(const float *x, const float *w, const float *b, float *y, float *mean, float *rstd, int64_t rows, int64_t cols, float eps)');
    const layerNormGrad = fn('void moco_layernorm_grad(const float *dy, const float *x, const float *w, const float *mean, const float *rstd, float *dx, float *dw, float *db, int64_t rows, int64_t cols)');
    const softmax = fn('void moco_softmax(const float *x, float *y, int64_t rows, int64_t cols, float scale)');
    const softmaxGrad = fn('void moco_softmax_grad(const float *y, const float *dy, float *dx, int64_t rows, int64_t cols, float scale)');
    const adamw = fn('void moco_adamw(const float *p, const float *g, const float *m, const float *v, float *mo, float *vo, float *po, int64_t n, float b1, float c1, float b2, float c2, float bc2, float eps, float decay, float step)');
    const ema = fn('void moco_ema(const float *k, const float *q, float *out, int64_t n, float a, float b)');
    const fillRows = fn('void moco_fill_rows(float *y, const float *b, int64_t rows, int64_t cols)');
    const attention = so.func('int moco_attention(const float *q, const float *k, const float *v, float *o, float *p, int64_t batch, int64_t tokens, int64_t heads, int64_t dh, float scale)') as unknown as NativeKernels['attention'];
    const attentionGrad = so.func('int moco_attention_grad(const float *do_, const float *q, const float *k, const float *v, const float *p, float *dq, float *dk, float *dv, int64_t batch, int64_t tokens, int64_t heads, int64_t dh, float scale)') as unknown as NativeKernels['attentionGrad'];
    const setThreads = so.func('int moco_set_threads(int n)') as unknown as (n: number) => number;
    const threads = setThreads(wantedNativeThreads());
    loaded = { library: lib.file, compiler: compiler.version, built: lib.built, threads, setThreads, gelu, geluGrad, layerNorm, layerNormGrad, softmax, softmaxGrad, adamw, ema, fillRows, attention, attentionGrad };
    return loaded;
  } catch (err) {
    return (loaded = `cannot load ${lib.file}: ${(err as Error).message.split('\n')[0]}`);
  }
}
