import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import postgres from 'postgres';
import { runMigrations } from '../../db/migrate.js';
import { baseConfig, dropDatabase, uniqueName } from '../support/services.js';

function run(script: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function withScratchDatabase(fn: (url: string) => Promise<void>) {
  const name = uniqueName('momentum_mig').replaceAll('-', '_');
  const url = new URL(baseConfig.DATABASE_URL);
  url.pathname = `/${name}`;
  try {
    await fn(url.toString());
  } finally {
    await dropDatabase(name);
  }
}

test('migrations create the database, and running them twice changes nothing', async () => {
  await withScratchDatabase(async (url) => {
    await runMigrations(url);
    await runMigrations(url);
    const sql = postgres(url, { max: 1 });
    const tables = await sql`select table_name from information_schema.tables where table_schema = 'public' order by 1`;
    const names = tables.map((t) => t.table_name);
    for (const t of ['tenants', 'api_keys', 'datasets', 'dataset_versions', 'jobs', 'job_events', 'metrics', 'checkpoints', 'checkpoint_aliases', 'evaluations', 'outbox', 'webhook_deliveries']) {
      assert.ok(names.includes(t), `table ${t} exists`);
    }
    const journal = JSON.parse(readFileSync('db/migrations/meta/_journal.json', 'utf8')) as { entries: unknown[] };
    const [{ n }] = await sql`select count(*)::int as n from drizzle.__drizzle_migrations`;
    assert.equal(n, journal.entries.length, 'each migration applied once');
    await sql.end();
  });
});

test('two processes migrating at once both succeed', async () => {
  await withScratchDatabase(async (url) => {
    const [a, b] = await Promise.all([
      run('scripts/migrate.ts', { DATABASE_URL: url }),
      run('scripts/migrate.ts', { DATABASE_URL: url }),
    ]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
  });
});

test('a bad DATABASE_URL is one clear line naming it', async () => {
  const r = await run('scripts/doctor.ts', { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/momentum' });
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^momentum: cannot reach Postgres at DATABASE_URL=postgres:\/\/postgres@127\.0\.0\.1:1\/momentum/);
});

test('a malformed DATABASE_URL is refused before connecting', async () => {
  const r = await run('scripts/doctor.ts', { DATABASE_URL: 'not a url' });
  assert.equal(r.code, 1);
  assert.match(r.stderr.trim(), /^momentum: invalid configuration: DATABASE_URL="not a url": must be a URL/);
});

test('an unreachable Redis is one clear line naming REDIS_URL', async () => {
  const r = await run('scripts/doctor.ts', { REDIS_URL: 'redis://127.0.0.1:1' });
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^momentum: cannot reach Redis at REDIS_URL=redis:\/\/127\.0\.0\.1:1/);
});

test('doctor passes against the local services', async () => {
  const r = await run('scripts/doctor.ts', {});
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /ok: postgres, redis and s3/);
});
