/**
 * Decompression and pixel bombs against ingestion: each is refused with a message naming the limit
 * it hit (a user's error, so not retried), before it can fill memory. The peak RSS of this process
 * after all of them is printed; bench/bombs.ts gives each bomb's own peak in a fresh process.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../../common/logger.js';
import { convertUpload } from '../../../runner/datasets/convert.js';
import { DatasetIngestError, ingestDatasetVersion } from '../../../runner/datasets/index.js';
import { datasetVersionOptions } from '../../../contracts/datasetSpec.js';
import { TaskFailure } from '../../../runner/child/taskSupport.js';
import { createTestDatabase, createTestStorage, type TestDatabase, type TestStorage } from '../../support/services.js';
import { BOMBS } from '../../support/bombs.js';
import { uploadVersion, versionRow } from './fixtures.js';

const log = createLogger('silent');
let dir: string;
let pg: TestDatabase;
let s3: TestStorage;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bombs-'));
  [pg, s3] = await Promise.all([createTestDatabase(), createTestStorage()]);
});
after(async () => {
  console.log(`peak RSS after ${BOMBS.length} bombs: ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB`);
  await Promise.all([rm(dir, { recursive: true, force: true }), pg.cleanup(), s3.cleanup()]);
});

for (const bomb of BOMBS) {
  test(`refused: ${bomb.name}`, async () => {
    const path = join(dir, bomb.name.replace(/\W+/g, '-'));
    await writeFile(path, await bomb.build());
    const workDir = await mkdtemp(join(dir, 'work-'));
    const options = datasetVersionOptions.parse(bomb.options);
    const err = await convertUpload({ path, uploadName: bomb.fileName, options, workDir, log, limits: bomb.limits }).then(
      () => assert.fail('ingested a bomb'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof DatasetIngestError, `a DatasetIngestError, not ${String(err)}`);
    assert.equal(err.kind, bomb.expect.kind, err.message);
    assert.match(err.message, bomb.expect.message);
    assert.ok(!err.message.includes('\u0000'), 'no NUL in the message');
    assert.equal(TaskFailure.from(err).retryable, false, "the user's error: not retried");
  });
}

test('a refusal with a NUL byte in the name is recorded on the version', async () => {
  const bomb = BOMBS.find((b) => b.name.startsWith('NUL'))!;
  const v = await uploadVersion(pg.db, s3.storage, await bomb.build(), bomb.options, bomb.fileName);
  await assert.rejects(ingestDatasetVersion({ db: pg.db, storage: s3.storage, log }, v.id), DatasetIngestError);
  const row = await versionRow(pg.db, v.id);
  assert.equal(row.state, 'failed');
  assert.match(row.error ?? '', /cat\\x00evil\/x\.png/);
});
