/** `npm run migrate`: applies the database migrations (safe to run concurrently and repeatedly). */
import { config } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain } from '../common/errors.js';
import { runMigrations } from '../db/migrate.js';

runMain(async () => {
  parseCommandLine('npm run migrate   (creates the database named by DATABASE_URL when absent, then applies every migration)', {});
  await runMigrations(config().DATABASE_URL);
  console.log('migrations applied');
});
