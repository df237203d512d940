/** `npm run migrate`: applies the database migrations (safe to run concurrently and repeatedly). */
import { config } from '../common/config.js';
import { runMain } from '../common/errors.js';
import { runMigrations } from '../db/migrate.js';

runMain(async () => {
  await runMigrations(config().DATABASE_URL);
  console.log('migrations applied');
});
