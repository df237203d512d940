/**
 * The Hono app. `createApp(deps)` builds everything from what it is given (database, bucket, queue
 * prefix, clock) and starts nothing in the background: a test builds one per run, the server one
 * per process. Order of middleware: metrics → body limit → auth (an uncached key passes the auth
 * guard's limits before its Postgres lookup) → per-key rate limit → route (scope, schema).
 * `fastPath` serves the job read and the job submission before all of it, with the same pieces
 * (api/fastJobRead.ts, api/fastJobSubmit.ts).
 */
import { KeyCache, authenticate } from './auth/middleware.js';
import { AuthGuard } from './auth/guard.js';
import { LiveStreams } from './liveStreams.js';
import type { AppDeps } from './deps.js';
import { errorBody, errorHandler } from './errors.js';
import { docsRoutes } from './docsRoutes.js';
import { createMetrics } from './metrics.js';
import { bodyLimit } from './middleware/bodyLimit.js';
import { RateLimiter, rateLimit } from './middleware/rateLimit.js';
import { fastJobRead } from './fastJobRead.js';
import { fastJobSubmit } from './fastJobSubmit.js';
import { firstFastPath } from './fastPath.js';
import { router } from './openapi.js';
import { checkpointRoutes } from './routes/checkpoints.js';
import { datasetRoutes } from './routes/datasets.js';
import { evaluationRoutes } from './routes/evaluations.js';
import { healthRoutes } from './routes/health.js';
import { jobActivityRoutes } from './routes/jobActivity.js';
import { jobRoutes } from './routes/jobs.js';
import { keyRoutes } from './routes/keys.js';
import { sweepRoutes } from './routes/sweeps.js';
import { modelRoutes } from './routes/models.js';
import { webhookRoutes } from './routes/webhooks.js';
import { dashboardRoutes } from '../dashboard/routes.js';

export const API_VERSION = '1.0.0';

export function createApp(deps: AppDeps, opts: { defaultMetrics?: boolean } = {}) {
  const app = router();
  const metrics = createMetrics({ sql: deps.sql, queues: deps.queues, defaultMetrics: opts.defaultMetrics, redisTimeoutMs: deps.config.REDIS_REQUEST_TIMEOUT_MS });
  const keyCache = new KeyCache(deps.db, deps.authCacheMs ?? 1000, deps.logger);
  const liveStreams = new LiveStreams({
    maxPerTenant: deps.config.API_SSE_MAX_PER_TENANT,
    maxLifetimeMs: deps.config.API_SSE_MAX_SECONDS * 1000,
    recheckMs: deps.sseRecheckMs ?? 5000,
    keyCache,
  });
  const authGuard = new AuthGuard({
    failuresPerMinute: deps.config.API_AUTH_FAILURES_PER_MINUTE,
    lookupsPerSecond: deps.config.API_KEY_LOOKUPS_PER_SECOND,
    trustProxy: deps.config.API_TRUST_PROXY,
  });

  const limiter = new RateLimiter({ redis: deps.redis, prefix: deps.config.QUEUE_PREFIX, perMinute: deps.config.API_RATE_LIMIT_PER_MINUTE, logger: deps.logger, timeoutMs: deps.config.REDIS_REQUEST_TIMEOUT_MS });

  app.onError(errorHandler(deps.logger));
  app.notFound((c) => c.json(errorBody('not_found', `no route ${c.req.method} ${c.req.path}`), 404));
  app.use('*', metrics.middleware);

  app.route('/', healthRoutes(deps, metrics.registry));

  const v1 = router();
  v1.use('*', bodyLimit(deps.config.API_MAX_BODY_BYTES));
  v1.use('*', authenticate(keyCache, authGuard));
  v1.use('*', rateLimit(limiter));
  v1.route('/', jobRoutes(deps));
  v1.route('/', jobActivityRoutes(deps, liveStreams));
  v1.route('/', checkpointRoutes(deps));
  v1.route('/', evaluationRoutes(deps));
  v1.route('/', modelRoutes(deps));
  v1.route('/', datasetRoutes(deps));
  v1.route('/', keyRoutes(deps, keyCache));
  v1.route('/', webhookRoutes(deps));
  v1.route('/', sweepRoutes(deps));
  app.route('/v1', v1);

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API key: `Authorization: Bearer mom_…`',
  });
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'Momentum API',
      version: API_VERSION,
      description: 'Train MoCo v3 self-supervised vision models: datasets, jobs, checkpoints, evaluations. Errors: `{ "error": { "code", "message", "details" } }`.',
    },
  });
  app.route('/docs', docsRoutes());
  app.route('/dashboard', dashboardRoutes());
  app.get('/', (c) => c.redirect('/dashboard'));

  // GET /v1/jobs/{id} and POST /v1/jobs on Node's objects, with the same key cache, limiter and histogram (api/httpServer.ts puts them in front).
  const shared = { logger: deps.logger, keyCache, limiter, observe: metrics.observe };
  const fastPath = firstFastPath(
    fastJobRead({ ...shared, sql: deps.sql }),
    fastJobSubmit({ ...shared, app: deps, maxBodyBytes: deps.config.API_MAX_BODY_BYTES }),
  );
  return { app, metrics: metrics.registry, keyCache, liveStreams, fastPath };
}

export type MomentumApp = ReturnType<typeof createApp>['app'];
