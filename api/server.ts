/**
 * `npm run api`: checks the configuration and services (one clear line when something is wrong),
 * runs the migrations (advisory-locked: replicas may start together), serves the API and runs the
 * outbox dispatcher, reconciler and webhook worker in-process. `--roles dispatcher,webhooks` (or
 * API_ROLES) runs only some of them, e.g. a worker-only replica. SIGTERM/SIGINT: stop accepting,
 * end live event streams, finish what is in flight, close connections, exit 0 (exit 1 past 20 s).
 */
import { config as loadConfig, DEV_WEBHOOK_SIGNING_KEY, refuseDevSigningKey } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain, UserFacingError } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { checkDependencies } from '../common/startup.js';
import { runMigrations } from '../db/migrate.js';
import { createApp } from './app.js';
import { serveApi } from './httpServer.js';
import type { LiveStreams } from './liveStreams.js';
import { connect, ROLES, startBackground, type Role } from './runtime.js';

const USAGE = `npm run api [-- --roles ${ROLES.join(',')}]   (configuration: the environment, see the README)`;

function parseRoles(fromConfig: string): Set<Role> {
  const { values } = parseCommandLine(USAGE, { roles: { type: 'string' } });
  const raw = values.roles ?? fromConfig;
  const roles = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = roles.find((r) => !(ROLES as readonly string[]).includes(r));
  if (bad || !roles.length) throw new UserFacingError(`--roles must be a comma-separated subset of ${ROLES.join(',')}; got ${JSON.stringify(raw)}`);
  return new Set(roles as Role[]);
}

runMain(async () => {
  const config = loadConfig();
  const roles = parseRoles(config.API_ROLES);
  const logger = createLogger(config.LOG_LEVEL, 'momentum-api');
  const devKey = refuseDevSigningKey(config);
  if (devKey) throw new UserFacingError(devKey);
  if (config.WEBHOOK_SIGNING_KEY === DEV_WEBHOOK_SIGNING_KEY) {
    logger.warn('WEBHOOK_SIGNING_KEY is the development default; set your own before receivers rely on signatures');
  }
  // Create and migrate the database first: on a new machine it does not exist yet.
  await runMigrations(config.DATABASE_URL);
  await checkDependencies(config, { s3: true });

  const runtime = connect(config, logger, config.WEBHOOK_SIGNING_KEY);
  const draining = new AbortController();
  runtime.deps.draining = draining.signal;
  const background = startBackground(runtime.deps, roles);
  let server: ReturnType<typeof serveApi> | undefined;
  let liveStreams: LiveStreams | undefined;
  if (roles.has('http')) {
    const created = createApp(runtime.deps, { defaultMetrics: true });
    liveStreams = created.liveStreams;
    server = serveApi(created, { port: config.API_PORT, hostname: config.API_HOST }, (info) =>
      logger.info({ roles: [...roles] }, `listening on http://${info.address}:${info.port}`),
    );
  } else {
    logger.info({ roles: [...roles] }, 'running without HTTP');
  }

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      logger.error('shutdown took over 20 s; exiting');
      process.exit(1);
    }, 20_000);
    force.unref();
    draining.abort(); // /readyz answers 503 draining from now on
    // Live streams never end by themselves: end them first, or server.close() would wait on them.
    const closing = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await liveStreams?.closeAll();
    await closing;
    await background.stop();
    await runtime.close();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
});
