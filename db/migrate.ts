/**
 * Runs the SQL migrations that drizzle-kit generated, under a Postgres advisory lock so that
 * several API replicas and runners may start at once: one migrates, the others wait, then find
 * nothing left to do. Creates the database first when it does not exist (a fresh developer machine).
 */
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import { UserFacingError } from '../common/errors.js';
import { redactUrl } from '../common/config.js';
import { describe } from './client.js';

const MIGRATIONS_FOLDER = fileURLToPath(new URL('./migrations', import.meta.url));
/** Arbitrary but fixed: every Momentum process agrees on it. */
const MIGRATION_LOCK_ID = 0x4d6f6d656e; // "Momen"

export async function ensureDatabaseExists(url: string): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  if (!name) throw new UserFacingError(`DATABASE_URL=${url} names no database`);
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const sql = postgres(admin.toString(), { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    const [row] = await sql`select 1 as present from pg_database where datname = ${name}`;
    if (!row) {
      try {
        await sql.unsafe(`create database "${name.replaceAll('"', '""')}"`);
      } catch (err) {
        // Two processes creating it at once: the loser sees duplicate_database (42P04), or a
        // unique violation on pg_database (23505) when both passed the catalog check together.
        const code = (err as { code?: string }).code;
        if (code !== '42P04' && code !== '23505') {
          throw new UserFacingError(`cannot create database ${JSON.stringify(name)} on DATABASE_URL=${redactUrl(url)}: ${describe(err)}`);
        }
      }
    }
  } catch (err) {
    if (err instanceof UserFacingError) throw err;
    throw new UserFacingError(`cannot reach Postgres at DATABASE_URL=${redactUrl(url)}: ${describe(err)}`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export async function runMigrations(url: string): Promise<void> {
  await ensureDatabaseExists(url);
  const sql = postgres(url, { max: 2, onnotice: () => {}, connect_timeout: 10 });
  try {
    const lock = await sql.reserve();
    try {
      await lock`select pg_advisory_lock(${MIGRATION_LOCK_ID})`;
      await migrate(drizzle(sql), { migrationsFolder: MIGRATIONS_FOLDER });
    } finally {
      await lock`select pg_advisory_unlock(${MIGRATION_LOCK_ID})`.catch(() => {});
      lock.release();
    }
  } catch (err) {
    if (err instanceof UserFacingError) throw err;
    throw new UserFacingError(`migrations failed on DATABASE_URL=${redactUrl(url)}: ${describe(err)}`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}
