/**
 * `npm run runner [-- --once]`: a runner process. Checks its configuration and the services (one
 * clear line and exit 1 when something is wrong), applies migrations, then takes jobs until SIGTERM
 * (or, with --once / RUNNER_ONCE=true, until it has run one job).
 *
 * SIGTERM / SIGINT: stop taking jobs, checkpoint running ones and hand them back to the queue, exit
 * within RUNNER_GRACE_SECONDS. A second SIGINT exits at once.
 */
import { config } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { checkDependencies } from '../common/startup.js';
import { Storage, storageConfigFrom } from '../common/storage.js';
import { connectDatabase } from '../db/client.js';
import { runMigrations } from '../db/migrate.js';
import { CancelWatch } from './supervisor/cancelWatch.js';
import { newRunnerId, Runner } from './worker.js';

const USAGE = 'npm run runner [-- --once]   (--once: take one job, run it, exit; configuration: the environment, see the README)';

runMain(async () => {
  const { values } = parseCommandLine(USAGE, { once: { type: 'boolean', default: false } });
  const c = config();
  const once = values.once || c.RUNNER_ONCE;
  const log = createLogger(c.LOG_LEVEL, 'runner');
  // Create and migrate the database first: on a new machine it does not exist yet.
  await runMigrations(c.DATABASE_URL);
  await checkDependencies(c, { s3: true });

  const database = connectDatabase(c.DATABASE_URL, { max: Math.min(c.DATABASE_POOL_MAX, 4 + 2 * c.RUNNER_CONCURRENCY) });
  const storage = new Storage(storageConfigFrom(c));
  const runnerId = newRunnerId();
  const services = {
    config: c,
    db: database.db,
    sql: database.sql,
    storage,
    log: log.child({ runnerId }),
    cancelWatch: new CancelWatch({ db: database.db, sql: database.sql, log }),
    runnerId,
  };
  const runner = new Runner(services, { once });

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      // A second Ctrl-C means "now". A repeated SIGTERM (a preStop hook, then the kubelet) does not.
      if (signal === 'SIGINT') {
        log.warn({ signal }, 'second interrupt: exiting now');
        process.exit(130);
      }
      return;
    }
    stopping = true;
    // The last resort if a shutdown step hangs: exit just inside the grace period.
    setTimeout(() => {
      log.error('grace period over; exiting without a clean shutdown');
      process.exit(1);
    }, c.RUNNER_GRACE_SECONDS * 1000 - 250).unref();
    void runner.shutdown();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  await runner.start();
  await runner.stopped;
  await runner.shutdown();
  storage.destroy();
  await database.close();
  log.info('runner stopped');
});
