/**
 * What a person meets first: every entry point answers --help (usage on stdout, exit 0) and a
 * command-line mistake is one line on stderr that says where the usage is; the API starts on a
 * database that does not exist yet (creates, migrates, then checks); `doctor` says "does not exist"
 * rather than "cannot reach" for a missing database.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../../support/privateServices.js';
import { baseConfig, dropDatabase, uniqueName } from '../../support/services.js';

const REPO = join(import.meta.dirname, '..', '..', '..');

/** Each entry point as `npm run …` runs it (package.json), minus npm. */
const ENTRY_POINTS: Record<string, string[]> = {
  api: ['api/server.ts'],
  runner: ['runner/main.ts'],
  cli: ['cli/momentum.ts'],
  'create-key': ['scripts/create-api-key.ts'],
  'train:local': ['runner/moco/cli.ts'],
  quickstart: ['scripts/quickstart.ts'],
  'import-fashion-mnist': ['scripts/import-fashion-mnist.ts'],
  'experiment:fashion-mnist': ['scripts/experiments/fashion-mnist.ts'],
  ablations: ['scripts/ablations.ts'],
  'bench:api': ['bench/api.ts'],
  'bench:api-pair': ['bench/api-pair.ts'],
  'bench:statements': ['bench/statements.ts'],
  'bench:datasets': ['bench/datasets.ts'],
  'bench:bombs': ['bench/bombs.ts'],
  'bench:trainer': ['bench/trainer-step.ts'],
  'trainer-profile': ['bench/trainer-profile.ts'],
  migrate: ['scripts/migrate.ts'],
  doctor: ['scripts/doctor.ts'],
};

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string> = {}, until?: (stdout: string) => boolean): Promise<Ran & { kill?: () => void }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: REPO, env: { ...process.env, LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let resolved = false;
    proc.stdout.on('data', (d) => {
      stdout += d;
      if (until && !resolved && until(stdout)) {
        resolved = true;
        resolve({ code: null, stdout, stderr, kill: () => proc.kill('SIGTERM') });
      }
    });
    proc.stderr.on('data', (d) => (stderr += d));
    proc.on('error', reject);
    proc.on('exit', (code) => {
      if (!resolved) resolve({ code, stdout, stderr });
    });
  });
}

for (const [name, args] of Object.entries(ENTRY_POINTS)) {
  test(`${name} --help prints its usage and exits 0; a wrong option is one line naming it`, async () => {
    const [help, wrong] = await Promise.all([run([...args, '--help']), run([...args, '--no-such-option'])]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^usage: /, `${name} --help: ${help.stdout}${help.stderr}`);
    assert.notEqual(wrong.code, 0);
    const lines = wrong.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${name}: one line, got:\n${wrong.stderr}`);
    assert.match(lines[0]!, /--no-such-option/);
    assert.match(lines[0]!, /--help/);
  });
}

function databaseUrl(name: string): string {
  const url = new URL(baseConfig.DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

test('doctor on a database that does not exist says so (not "cannot reach") and what creates it', async () => {
  const name = uniqueName('momentum_absent').replaceAll('-', '_');
  const r = await run(['scripts/doctor.ts'], { DATABASE_URL: databaseUrl(name) });
  assert.equal(r.code, 1);
  const line = r.stderr.trim();
  assert.equal(line.split('\n').length, 1, line);
  assert.match(line, /does not exist/);
  assert.match(line, /npm run migrate/);
  assert.doesNotMatch(line, /cannot reach/);
});

test('the API starts on a new database: creates it, migrates it, then serves', async () => {
  const name = uniqueName('momentum_fresh').replaceAll('-', '_');
  const port = await freePort();
  try {
    const api = await run(['api/server.ts'], { DATABASE_URL: databaseUrl(name), API_PORT: String(port), API_ROLES: 'http', QUEUE_PREFIX: uniqueName('mtest') }, (out) => out.includes('listening on'));
    assert.equal(api.code, null, `the API exited: ${api.stdout}${api.stderr}`);
    try {
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 200, await ready.text());
    } finally {
      api.kill?.();
    }
  } finally {
    await new Promise((r) => setTimeout(r, 500)); // let the API close its connections
    await dropDatabase(name);
  }
});
