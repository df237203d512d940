/**
 * An error whose message is meant for a person at a terminal: entry points print its message as one
 * line and exit, without a stack trace (bad configuration, an unreachable service).
 */
export class UserFacingError extends Error {
  override name = 'UserFacingError';
}

/** Runs an entry point; a UserFacingError becomes one clear line on stderr and exit code 1. */
export function runMain(main: () => Promise<unknown>): void {
  main().catch((err: unknown) => {
    if (err instanceof UserFacingError) {
      process.stderr.write(`momentum: ${err.message}\n`);
    } else {
      process.stderr.write(`momentum: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.exit(1);
  });
}
