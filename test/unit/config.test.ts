import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../common/config.js';
import { UserFacingError } from '../../common/errors.js';

test('defaults work on a developer machine', () => {
  const c = loadConfig({});
  assert.equal(c.DATABASE_URL, 'postgres://postgres@127.0.0.1:5432/momentum');
  assert.equal(c.REDIS_URL, 'redis://127.0.0.1:6379');
  assert.equal(c.SIGNED_URL_TTL_SECONDS, 900);
});

test('a bad DATABASE_URL is named in one line', () => {
  assert.throws(
    () => loadConfig({ DATABASE_URL: 'mysql://x' }),
    (err: unknown) =>
      err instanceof UserFacingError &&
      err.message.includes('DATABASE_URL="mysql://x"') &&
      err.message.includes('postgres://') &&
      !err.message.includes('\n'),
  );
});

test('every bad variable is named, numbers are coerced and bounded', () => {
  assert.throws(
    () => loadConfig({ API_PORT: '70000', RUNNER_CONCURRENCY: 'two' }),
    (err: unknown) => err instanceof UserFacingError && /API_PORT/.test(err.message) && /RUNNER_CONCURRENCY/.test(err.message),
  );
  assert.equal(loadConfig({ API_PORT: '9000' }).API_PORT, 9000);
});
