/**
 * `npm run doctor`: checks the configuration and that Postgres, Redis and S3 answer, one line each.
 * Entry points run the same checks at start-up, so a wrong URL is one clear line, not a stack trace.
 */
import { config } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain } from '../common/errors.js';
import { checkDependencies } from '../common/startup.js';

runMain(async () => {
  parseCommandLine('npm run doctor   (checks the configuration from the environment and that Postgres, Redis and S3 answer)', {});
  const c = config();
  await checkDependencies(c, { s3: true });
  console.log(`ok: postgres, redis and s3 (bucket ${c.S3_BUCKET}) answer`);
});
