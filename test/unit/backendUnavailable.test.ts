/**
 * A backend outage is a 503, also when the failing query went through drizzle: drizzle wraps the
 * driver's error in a DrizzleQueryError whose `cause` carries the code (CI once answered a
 * submission 500 while Postgres was down, because the key lookup's error was wrapped).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DrizzleQueryError } from 'drizzle-orm/errors';
import { errorAnswer, isBackendUnavailable } from '../../api/errors.js';
import { errorCodes } from '../../common/errors.js';
import { createLogger } from '../../common/logger.js';
import { connectDatabase } from '../../db/client.js';
import { apiKeys } from '../../db/schema.js';
import { freePort } from '../support/privateServices.js';

const log = createLogger('silent');

test('a drizzle query to a Postgres that is not there answers 503 unavailable, not 500', async () => {
  const database = connectDatabase(`postgres://postgres@127.0.0.1:${await freePort()}/none`, { max: 1 });
  try {
    const err = await database.db.select().from(apiKeys).then(
      () => assert.fail('the query succeeded'),
      (e: Error) => e,
    );
    assert.ok(err instanceof DrizzleQueryError, `wrapped by drizzle: ${err}`);
    assert.ok(isBackendUnavailable(err), `codes ${errorCodes(err).join(', ')}`);
    const answer = errorAnswer(err, log, { method: 'POST', path: '/v1/jobs' });
    assert.equal(answer.status, 503);
    assert.equal(answer.body.error.code, 'unavailable');
    assert.equal(answer.headers['Retry-After'], '2');
  } finally {
    await database.close().catch(() => {});
  }
});

test('errorCodes reads the codes under the wrapper; a constraint violation is not an outage', () => {
  const unique = new DrizzleQueryError('insert …', [], Object.assign(new Error('duplicate key'), { code: '23505' }));
  assert.deepEqual(errorCodes(unique), ['23505']);
  assert.equal(isBackendUnavailable(unique), false);
  const closed = new DrizzleQueryError('select …', [], Object.assign(new Error('write CONNECTION_CLOSED'), { code: 'CONNECTION_CLOSED' }));
  assert.equal(isBackendUnavailable(closed), true);
  assert.deepEqual(errorCodes(new Error('plain')), []);
});
