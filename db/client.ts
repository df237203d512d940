/** The Postgres connection: postgres.js under drizzle. One pool per process. */
import postgres from 'postgres';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import * as schema from './schema.js';
import { UserFacingError } from '../common/errors.js';
import { redactUrl } from '../common/config.js';

export type Db = PostgresJsDatabase<typeof schema>;
export type Sql = postgres.Sql;

export interface Database {
  db: Db;
  sql: Sql;
  close(): Promise<void>;
}

export function connectDatabase(url: string, options: { max?: number } = {}): Database {
  const sql = postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connect_timeout: 10,
    // jsonb comes back parsed; bigint columns are declared number-mode in the schema.
  });
  const db = drizzle(sql, { schema });
  return { db, sql, close: () => sql.end({ timeout: 5 }) };
}

/** One clear line when Postgres cannot be reached or the URL is wrong. */
export async function checkDatabase(sql: Sql, url: string): Promise<void> {
  try {
    await sql`select 1`;
  } catch (err) {
    // Postgres answered, but the database is not there yet: say so, and what creates it.
    if ((err as { code?: string }).code === '3D000') {
      throw new UserFacingError(`${describe(err)} (DATABASE_URL=${redactUrl(url)}); \`npm run migrate\` creates it, as \`npm run api\` and \`npm run runner\` do at start-up`);
    }
    throw new UserFacingError(`cannot reach Postgres at DATABASE_URL=${redactUrl(url)}: ${describe(err)}`);
  }
}

export function describe(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { code?: string; message?: string; errors?: unknown[] };
    if (e.message) return e.code && !e.message.includes(e.code) ? `${e.code} ${e.message}` : e.message;
    if (e.code) return e.code;
    if (Array.isArray(e.errors) && e.errors.length) return describe(e.errors[0]);
  }
  return String(err);
}
