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

/**
 * The `code`s of an error and of the errors under it (`cause`, a few levels). drizzle wraps the
 * driver's error in a DrizzleQueryError whose `cause` carries Postgres's code (`23505`,
 * `CONNECTION_CLOSED`): a check of the outer error alone misses it.
 */
export function errorCodes(err: unknown): string[] {
  const codes: string[] = [];
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
  }
  return codes;
}
