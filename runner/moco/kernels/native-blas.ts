/**
 * A native BLAS (Debian's OpenBLAS, libopenblas0-pthread) reached through the `koffi` FFI package,
 * so the matrix products of the tfjs wasm backend run on the cores' AVX2/AVX-512 FMA units instead
 * of wasm SIMD128 (4 lanes, no FMA): DESIGN.md section 4 has the figures.
 *
 * No compiler and no copies: koffi passes a typed array to a `float *` parameter as a pointer to
 * its bytes, and the arrays handed over are views of the wasm heap itself (see
 * kernels/batch-matmul.ts), taken afresh for every call because a growing heap detaches old views.
 *
 * Loaded once per process. Missing pieces (no koffi binary for this platform, no OpenBLAS, a
 * library without cblas_sgemm) are not errors: `loadNativeBlas` returns the reason and the
 * trainer keeps the wasm kernels. Environment:
 * - MOCO_BLAS=off: do not load it.
 * - MOCO_BLAS_LIBRARY: the library to load (default: libopenblas.so.0 by the loader's search, then
 *   Debian's pthread variant under /usr/lib/<multiarch>/openblas-pthread/).
 * - MOCO_BLAS_THREADS: OpenBLAS threads (default: MOCO_CORES, which the runner sets to each run's
 *   share of the cores, else every core).
 */
import { createRequire } from 'node:module';
import os from 'node:os';

/** cblas constants (row-major order, (no) transpose). */
const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

/** How long an idle OpenBLAS thread spins before it sleeps, as log2 of cycles (its default is 2^28). */
const THREAD_TIMEOUT_LOG2 = '4';

type Sgemm = (
  order: number, transA: number, transB: number, m: number, n: number, k: number,
  alpha: number, a: Float32Array, lda: number, b: Float32Array, ldb: number,
  beta: number, c: Float32Array, ldc: number,
) => void;

export interface NativeBlas {
  /** The file that was loaded. */
  library: string;
  /** OpenBLAS's own description (version, kernel architecture), when it has one. */
  config: string;
  /** Threads OpenBLAS computes with. */
  threads: number;
  /**
   * C[m, n] = op(A)·op(B) + beta·C, row-major, on views of one buffer (A [m,k] or [k,m] when
   * transposed; B likewise); beta 0 unless given.
   */
  gemm(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean, beta?: number): void;
}

let loaded: NativeBlas | string | undefined;

/** Where Debian puts libopenblas0-pthread for this machine's architecture. */
function debianCandidates(): string[] {
  const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', ppc64: 'powerpc64le-linux-gnu', s390x: 's390x-linux-gnu' }[process.arch as string];
  return multiarch ? [`/usr/lib/${multiarch}/openblas-pthread/libopenblas.so.0`] : [];
}

/**
 * The cores this process may use: MOCO_CORES (a runner running several jobs gives each its share),
 * else every core.
 */
export function coresForThisProcess(): number {
  const env = Number(process.env.MOCO_CORES);
  return Number.isInteger(env) && env >= 1 ? env : os.availableParallelism();
}

/** The threads wanted: MOCO_BLAS_THREADS, else every core this process may use. */
export function wantedBlasThreads(): number {
  const env = Number(process.env.MOCO_BLAS_THREADS);
  return Number.isInteger(env) && env >= 1 ? env : coresForThisProcess();
}

/** Whether the native path is wanted at all (MOCO_BLAS=off says no). */
export function nativeBlasWanted(): boolean {
  return process.env.MOCO_BLAS !== 'off';
}

/**
 * Loads the native BLAS (once per process): the library and its thread count, or the reason it
 * is not used. Never throws.
 */
export function loadNativeBlas(): NativeBlas | string {
  if (loaded !== undefined) return loaded;
  if (!nativeBlasWanted()) return (loaded = 'off (MOCO_BLAS=off)');
  if (process.platform !== 'linux') return (loaded = `not on ${process.platform} (Debian's OpenBLAS only)`);
  let koffi: typeof import('koffi');
  try {
    koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  } catch (err) {
    return (loaded = `koffi cannot load: ${(err as Error).message.split('\n')[0]}`);
  }
  // Read by OpenBLAS when it loads: idle worker threads spin for 2^4 cycles, not 2^28, so they
  // do not hold a core while the main thread runs the wasm kernels between two products.
  process.env.OPENBLAS_THREAD_TIMEOUT ??= THREAD_TIMEOUT_LOG2;
  const candidates = process.env.MOCO_BLAS_LIBRARY ? [process.env.MOCO_BLAS_LIBRARY] : ['libopenblas.so.0', ...debianCandidates()];
  const failures: string[] = [];
  for (const file of candidates) {
    let lib: ReturnType<typeof koffi.load>;
    try {
      lib = koffi.load(file);
    } catch (err) {
      failures.push(`${file}: ${(err as Error).message.split('\n')[0]}`);
      continue;
    }
    try {
      const sgemm = lib.func(
        'void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)',
      ) as unknown as Sgemm;
      const threads = wantedBlasThreads();
      let config = 'unknown';
      try {
        lib.func('void openblas_set_num_threads(int)')(threads);
        config = String(lib.func('const char *openblas_get_config()')());
      } catch {
        // Not OpenBLAS (another CBLAS): it keeps its own thread settings.
      }
      loaded = {
        library: file,
        config,
        threads,
        gemm: (a, b, c, m, n, k, transA, transB, beta = 0) =>
          sgemm(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, m, n, k, 1, a, transA ? m : k, b, transB ? k : n, beta, c, n),
      };
      return loaded;
    } catch (err) {
      failures.push(`${file}: no cblas_sgemm (${(err as Error).message.split('\n')[0]})`);
    }
  }
  return (loaded = `no native BLAS: ${failures.join('; ')} (apt-get install libopenblas0-pthread)`);
}
