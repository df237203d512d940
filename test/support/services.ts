/**
 * Real services for integration tests, isolated per test run: a fresh Postgres database (migrated),
 * a fresh S3 bucket, a fresh BullMQ key prefix. Each is removed again by its `cleanup`.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import type { Redis } from 'ioredis';
import { loadConfig, type Config } from '../../common/config.js';
import { Storage, storageConfigFrom } from '../../common/storage.js';
import { connectDatabase, type Database } from '../../db/client.js';
import { runMigrations } from '../../db/migrate.js';

export const baseConfig: Config = loadConfig(process.env);

export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

export interface TestDatabase extends Database {
  url: string;
  cleanup(): Promise<void>;
}

/** Drops a database, closing whatever connections it still has (through the server's `postgres` database). */
export async function dropDatabase(name: string, databaseUrl = baseConfig.DATABASE_URL): Promise<void> {
  const admin = new URL(databaseUrl);
  admin.pathname = '/postgres';
  const sql = postgres(admin.toString(), { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`drop database if exists "${name}" with (force)`);
  } finally {
    await sql.end();
  }
}

/** Creates and migrates a database of its own; `cleanup` drops it. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = uniqueName('momentum_test').replaceAll('-', '_');
  const url = new URL(baseConfig.DATABASE_URL);
  url.pathname = `/${name}`;
  await runMigrations(url.toString());
  const database = connectDatabase(url.toString(), { max: 5 });
  return {
    ...database,
    url: url.toString(),
    async cleanup() {
      await database.close();
      await dropDatabase(name);
    },
  };
}

export interface TestStorage {
  storage: Storage;
  bucket: string;
  cleanup(): Promise<void>;
}

/** A bucket of its own on the local S3 server (or on `endpoint`, e.g. a private one); `cleanup` empties it. */
export async function createTestStorage(endpoint = baseConfig.S3_ENDPOINT): Promise<TestStorage> {
  const bucket = uniqueName('test').toLowerCase();
  const storage = new Storage({ ...storageConfigFrom(baseConfig), endpoint, bucket });
  await storage.ensureBucket();
  return {
    storage,
    bucket,
    async cleanup() {
      await storage.deletePrefix('');
      storage.destroy();
    },
  };
}

/** Removes every Redis key under a test run's queue prefix, so the shared Redis keeps nothing of it. */
export async function removeQueueKeys(redis: Redis, prefix: string): Promise<void> {
  const leftovers = await redis.keys(`${prefix}:*`);
  if (leftovers.length) await redis.del(...leftovers);
}

/** A configuration pointing at this run's own database, bucket and queue prefix. */
export function testConfig(overrides: Partial<Config>): Config {
  return Object.freeze({ ...baseConfig, QUEUE_PREFIX: uniqueName('mtest'), ...overrides });
}
