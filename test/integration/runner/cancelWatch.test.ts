/**
 * The runner's cancel watch against a real Postgres: a NOTIFY reaches it at once, and when the NOTIFY
 * is lost the 3-second poll of the job's flag still does. The poll's timer is mocked, so the test
 * says "not before the poll, then by the poll" without racing a clock.
 */
import { after, before, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, forceState, pretrain, seedReadyDataset, type Harness } from '../api/harness.js';
import { CancelWatch } from '../../../runner/supervisor/cancelWatch.js';
import type { Logger } from '../../../common/logger.js';

let h: Harness;
before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
});
after(async () => h.close());

/** A logger that records how each cancel arrived (`notify` or `poll`). */
function recordingLog(vias: string[]): Logger {
  const log = { info: (fields: { via?: string }) => void (fields.via && vias.push(fields.via)), warn: () => {}, error: () => {}, debug: () => {} };
  return log as unknown as Logger;
}

async function runningJob(): Promise<string> {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') });
  const id = ((await res.json()) as any).id as string;
  await forceState(h, id, 'running');
  return id;
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 600 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(ok(), what);
}

test('a cancel through the API reaches the watch by NOTIFY, before any poll', async () => {
  const vias: string[] = [];
  mock.timers.enable({ apis: ['setInterval'] });
  const watch = new CancelWatch({ db: h.database.db, sql: h.database.sql, log: recordingLog(vias) });
  try {
    await watch.start();
    const jobId = await runningJob();
    let canceled = 0;
    watch.watch(jobId, () => canceled++);
    await new Promise((r) => setTimeout(r, 200)); // the watch's first check of the flag (not set) is done
    assert.equal((await h.request('POST', `/v1/jobs/${jobId}/cancel`)).status, 200);
    await until('the NOTIFY to arrive', () => canceled === 1);
    assert.deepEqual(vias, ['notify'], 'no poll ran (its timer never ticked)');
  } finally {
    await watch.stop();
    mock.timers.reset();
  }
});

test('when the NOTIFY is lost, the poll every 3 s finds the flag', async () => {
  const vias: string[] = [];
  mock.timers.enable({ apis: ['setInterval'] });
  const watch = new CancelWatch({ db: h.database.db, sql: h.database.sql, log: recordingLog(vias) });
  try {
    await watch.start();
    const jobId = await runningJob();
    let canceled = 0;
    watch.watch(jobId, () => canceled++);
    await new Promise((r) => setTimeout(r, 200));
    // The flag set the way the API sets it, but with no NOTIFY: as if it was lost.
    await h.database.sql`update jobs set cancel_requested = true, state = 'canceling' where id = ${jobId}`;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(canceled, 0, 'nothing before the poll');
    mock.timers.tick(2999);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(canceled, 0, 'not before 3 s');
    mock.timers.tick(1);
    await until('the poll to find the flag', () => canceled === 1);
    assert.deepEqual(vias, ['poll']);
    mock.timers.tick(3000);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(canceled, 1, 'a run is told once');
  } finally {
    await watch.stop();
    mock.timers.reset();
  }
});
