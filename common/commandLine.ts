/**
 * The command line of every entry point (api, runner, scripts): `--help` prints the usage on stdout
 * and exits 0; a mistake (unknown option, missing value, stray argument) becomes one UserFacingError
 * line that says where the usage is, which runMain prints without a stack trace.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UserFacingError } from './errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

export function parseCommandLine<O extends Options, P extends boolean = false>(
  usage: string,
  options: O,
  opts: { allowPositionals?: P; args?: string[] } = {},
) {
  const all = { ...options, help: { type: 'boolean', short: 'h' } } as const;
  let parsed;
  try {
    parsed = parseArgs({ args: opts.args ?? process.argv.slice(2), options: all, allowPositionals: opts.allowPositionals ?? false, strict: true });
  } catch (err) {
    throw new UserFacingError(`${(err as Error).message.split(/\.(\s|$)/)[0]}; --help lists the options`);
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(`usage: ${usage}\n`);
    process.exit(0);
  }
  return parsed as unknown as ReturnType<typeof parseArgs<{ options: O; allowPositionals: P; strict: true }>>;
}

/**
 * {@link parseCommandLine} for a script that parses its options at the top level, outside runMain:
 * a mistake is the same one line on stderr (exit 1), not an uncaught exception's stack.
 */
export function parseCommandLineOrExit<O extends Options, P extends boolean = false>(usage: string, options: O, opts: { allowPositionals?: P; args?: string[] } = {}) {
  try {
    return parseCommandLine(usage, options, opts);
  } catch (err) {
    if (!(err instanceof UserFacingError)) throw err;
    process.stderr.write(`momentum: ${err.message}\n`);
    process.exit(1);
  }
}
