/**
 * The one place the environment is read. Parsed once with a schema; defaults work on a developer's
 * machine (the services `npm run services` starts). A bad value fails fast with a line naming it.
 */
import { z } from 'zod';
import { UserFacingError } from './errors.js';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);
const url = (protocols: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    },
    { message: `must be a URL starting with ${protocols.map((p) => p + '//').join(' or ')}` },
  );

export const DEV_WEBHOOK_SIGNING_KEY = 'momentum-dev-webhook-signing-key';

export const configSchema = z.object({
  DATABASE_URL: url(['postgres:', 'postgresql:']).default('postgres://postgres@127.0.0.1:5432/momentum'),
  DATABASE_POOL_MAX: int(1, 200).default(10),
  REDIS_URL: url(['redis:', 'rediss:']).default('redis://127.0.0.1:6379'),
  /** Key prefix of every BullMQ queue: lets several deployments (or test runs) share one Redis. */
  QUEUE_PREFIX: z.string().regex(/^[A-Za-z0-9_:-]+$/, 'letters, digits, _ : - only').default('momentum'),
  S3_ENDPOINT: url(['http:', 'https:']).default('http://127.0.0.1:4568'),
  S3_REGION: z.string().min(1).default('us-east-1'),
  S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a valid S3 bucket name').default('momentum'),
  S3_ACCESS_KEY_ID: z.string().min(1).default('S3RVER'),
  S3_SECRET_ACCESS_KEY: z.string().min(1).default('S3RVER'),
  S3_FORCE_PATH_STYLE: bool.default(true),
  API_HOST: z.string().min(1).default('127.0.0.1'),
  API_PORT: int(0, 65535).default(8787),
  /** Requests with a larger body are refused with 413 before they are parsed. */
  API_MAX_BODY_BYTES: int(1024).default(1024 * 1024),
  API_RATE_LIMIT_PER_MINUTE: int(1).default(1200),
  /**
   * Group commit of job submissions (db/jobInsertBatch.ts): statements writing submissions at once
   * per API process, and the most submissions one of them carries. A batch of 1 writes each
   * submission alone, as many at once as the pool allows.
   */
  API_SUBMIT_STATEMENTS: int(1, 200).default(2),
  API_SUBMIT_BATCH_MAX: int(1, 1000).default(64),
  /**
   * Before an API key is looked up in Postgres: failed authentications allowed per client address
   * per minute (then 429 without a lookup), and uncached key lookups per second per process.
   */
  API_AUTH_FAILURES_PER_MINUTE: int(1).default(60),
  API_KEY_LOOKUPS_PER_SECOND: int(1).default(200),
  /** Use the last X-Forwarded-For address as the client's (only behind a proxy that sets it). */
  API_TRUST_PROXY: bool.default(false),
  /** Live (SSE) streams per tenant per API process, and how long one may stay open (then it ends; clients reconnect). */
  API_SSE_MAX_PER_TENANT: int(1).default(32),
  API_SSE_MAX_SECONDS: int(1).default(3600),
  /** Deadline of each Redis call a request waits on (rate limit, queue removal, queue metrics). */
  REDIS_REQUEST_TIMEOUT_MS: int(10, 60_000).default(1000),
  SIGNED_URL_TTL_SECONDS: int(1, 7 * 24 * 3600).default(900),
  SIGNED_URL_MAX_TTL_SECONDS: int(1, 7 * 24 * 3600).default(3600),
  /**
   * A dataset version may be finalized until this long after its upload URL expired; then the upload
   * sweeper closes it (failed, "upload expired"), aborts its multipart upload and deletes its bytes.
   */
  DATASET_UPLOAD_GRACE_SECONDS: int(0, 7 * 24 * 3600).default(3600),
  /** Webhook targets on loopback or private ranges are refused unless this is true (tests, local dev). */
  WEBHOOK_ALLOW_PRIVATE: bool.default(false),
  /**
   * Root of the webhook signing secrets: each tenant's secret is derived from it (HMAC), so every
   * replica agrees without a secret column. The default is for a developer's machine only.
   */
  WEBHOOK_SIGNING_KEY: z.string().min(16, 'must be at least 16 characters').default(DEV_WEBHOOK_SIGNING_KEY),
  /** What an API process runs: a comma-separated subset of http,dispatcher,reconciler,webhooks,sweeps. */
  API_ROLES: z.string().regex(/^[a-z]+(,[a-z]+)*$/, 'a comma-separated list such as http,dispatcher').default('http,dispatcher,reconciler,webhooks,sweeps'),
  RUNNER_CONCURRENCY: int(1, 64).default(1),
  /**
   * GPUs this runner hands out, one per concurrent run (CUDA_VISIBLE_DEVICES): a number, or `auto`
   * (`nvidia-smi -L`; 0 where there is none). Runs beyond the GPUs compute on the CPU.
   */
  RUNNER_GPUS: z.string().regex(/^(auto|\d{1,2})$/, 'a number of GPUs or auto').default('auto'),
  /** Seconds a runner has after SIGTERM to checkpoint the running job and exit. */
  RUNNER_GRACE_SECONDS: int(1, 3600).default(60),
  /** BullMQ lock of a running job; renewed every lock/2 from a thread that never trains. */
  RUNNER_LOCK_MS: int(1000).default(60_000),
  RUNNER_MAX_ATTEMPTS: int(1, 100).default(5),
  /** Memory a runner offers one run (GPU memory on a GPU runner); specs estimated above it are refused (contracts/footprint.ts). */
  RUNNER_MEMORY_MB: int(256).default(16384),
  /** Per tenant: jobs queued, requeued, running or canceling at once; more are refused with 429. */
  TENANT_MAX_ACTIVE_JOBS: int(1).default(500),
  /** Per tenant: bytes of checkpoints and dataset uploads; new pretrain jobs and uploads are refused beyond it. */
  TENANT_MAX_STORAGE_GB: int(1).default(1024),
  /** Bearer token for /metrics; without one, /metrics is served only by an API listening on loopback. */
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Take one job, run it, exit (scale-to-zero: one container per job). Same as `runner --once`. */
  RUNNER_ONCE: bool.default(false),
  /** `auto` picks tensorflow (GPU, then CPU), then wasm, then cpu. */
  TFJS_BACKEND: z.enum(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'),
  DATA_DIR: z.string().min(1).default('./var'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.infer<typeof configSchema>;

/**
 * The public development signing key is refused for an API that listens beyond loopback: anyone
 * could forge webhooks signed with it. A line saying so, or null when the key is acceptable.
 */
export function refuseDevSigningKey(c: Pick<Config, 'WEBHOOK_SIGNING_KEY' | 'API_HOST'>): string | null {
  if (c.WEBHOOK_SIGNING_KEY !== DEV_WEBHOOK_SIGNING_KEY) return null;
  if (['127.0.0.1', 'localhost', '::1'].includes(c.API_HOST)) return null;
  return `WEBHOOK_SIGNING_KEY is the public development default but API_HOST=${c.API_HOST} listens beyond loopback; set a secret of your own (openssl rand -hex 32)`;
}

/** Parses an environment; throws a UserFacingError naming each bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const known = Object.fromEntries(
    Object.keys(configSchema.shape).map((k) => [k, env[k] === '' ? undefined : env[k]]),
  );
  const parsed = configSchema.safeParse(known);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      const name = String(i.path[0]);
      return `${name}=${JSON.stringify(env[name])}: ${i.message}`;
    });
    throw new UserFacingError(`invalid configuration: ${problems.join('; ')}`);
  }
  return Object.freeze(parsed.data);
}

let cached: Config | undefined;
/** The process's configuration, parsed on first use. */
export function config(): Config {
  cached ??= loadConfig();
  return cached;
}

/** A URL with its password replaced, for messages and logs. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return raw;
  }
}
