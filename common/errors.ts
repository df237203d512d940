/**
 * An error whose message is meant for a person at a terminal: entry points print its message as one
 * line and exit, without a stack trace (bad configuration, an unreachable service).
 */
export class UserFacingError extends Error {
  override name = 'UserFacingError';
}

/** A command-line mistake reported by node:util parseArgs (unknown option, missing value). */
function isUsageError(err: unknown): err is Error {
  return err instanceof Error && String((err as { code?: unknown }).code ?? '').startsWith('ERR_PARSE_ARGS_');
}

/**
 * Runs an entry point; a UserFacingError or a command-line mistake becomes one clear line on
 * stderr and exit code 1.
 */
export function runMain(main: () => Promise<unknown>): void {
  main().catch((err: unknown) => {
    if (isUsageError(err)) {
      process.stderr.write(`momentum: ${err.message.split(/\.(\s|$)/)[0]}; --help lists the options\n`);
    } else if (err instanceof UserFacingError) {
      process.stderr.write(`momentum: ${err.message}\n`);
    } else {
      process.stderr.write(`momentum: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.exit(1);
  });
}
