/**
 * The environment a run's child process starts with: an allowlist, not the runner's environment.
 * The child runs the code that reads user input (archives and images during an ingest, specs and
 * checkpoints during training): if that input ever got code running there, it must find no more
 * credentials than the task needs. So:
 *
 * - every child: the system and toolchain variables (PATH, HOME, locale, temp dirs, NODE_*, tsx),
 *   the compute knobs (CUDA_*, TF_*, MOCO_*, BLAS/OpenMP threads, libvips), proxies and CA files,
 *   LOG_LEVEL, DATA_DIR, TFJS_BACKEND, and S3 (every task reads or writes objects);
 * - ingest only: DATABASE_URL (ingestion moves its dataset version's state itself);
 * - never: REDIS_URL, WEBHOOK_SIGNING_KEY, METRICS_TOKEN, the AWS SDK's ambient credentials
 *   (AWS_*: storage uses the S3_* settings), DATABASE_URL for training and probing, and anything
 *   the list does not name (other services' tokens in the runner's environment).
 */
import type { ChildTask } from './protocol.js';

const SYSTEM = new Set(['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'TZ', 'TMPDIR', 'TMP', 'TEMP', 'LD_LIBRARY_PATH', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy', 'UV_THREADPOOL_SIZE']);
const SYSTEM_PREFIXES = ['LC_', 'NODE_', 'TSX_', 'CUDA_', 'TF_', 'NVIDIA_', 'XLA_', 'MOCO_', 'OPENBLAS_', 'OMP_', 'MKL_', 'VIPS_'];
/** Momentum settings every child reads (common/config.ts parses them in the child). */
const MOMENTUM_ALL = ['LOG_LEVEL', 'DATA_DIR', 'TFJS_BACKEND', 'S3_ENDPOINT', 'S3_REGION', 'S3_BUCKET', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'S3_FORCE_PATH_STYLE'];
const MOMENTUM_BY_KIND: Record<ChildTask['kind'], string[]> = {
  ingest: ['DATABASE_URL'],
  pretrain: [],
  probe: [],
};

/** The allowlisted part of `env` for a child running a task of `kind`. */
export function childEnvironment(kind: ChildTask['kind'], env: NodeJS.ProcessEnv): Record<string, string> {
  const allowed = new Set([...MOMENTUM_ALL, ...MOMENTUM_BY_KIND[kind]]);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) continue;
    if (SYSTEM.has(name) || allowed.has(name) || SYSTEM_PREFIXES.some((p) => name.startsWith(p))) out[name] = value;
  }
  return out;
}
