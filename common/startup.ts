/** Start-up checks shared by the API and the runner: fail in one clear line, before serving anything. */
import postgres from 'postgres';
import type { Config } from './config.js';
import { checkRedis } from './redis.js';
import { Storage, storageConfigFrom } from './storage.js';
import { checkDatabase } from '../db/client.js';

export async function checkDependencies(c: Config, opts: { s3?: boolean } = {}): Promise<void> {
  const sql = postgres(c.DATABASE_URL, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    await checkDatabase(sql, c.DATABASE_URL);
  } finally {
    await sql.end({ timeout: 1 });
  }
  await checkRedis(c.REDIS_URL);
  if (opts.s3) {
    const storage = new Storage(storageConfigFrom(c));
    try {
      await storage.ensureBucket();
    } finally {
      storage.destroy();
    }
  }
}
