/**
 * A zombie attempt (a runner that lost its lock and keeps running) against the attempt that took
 * over: real Postgres and S3; the zombie's upload is held at a gate so that the takeover happens
 * exactly between its fence check and its upload, the interleaving that used to corrupt a version.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHarness, pretrain, seedReadyDataset, type Harness } from '../api/harness.js';
import { CheckpointStore, ALL_CHECKPOINT_FILES } from '../../../runner/supervisor/checkpointStore.js';
import { MetricsWriter } from '../../../runner/supervisor/metricsWriter.js';
import { Storage } from '../../../common/storage.js';
import { recordEvaluation, setProgress, SupersededError, upsertMetrics } from '../../../db/runs.js';
import { transitionJob } from '../../../db/jobs.js';
import { createLogger } from '../../../common/logger.js';

const log = createLogger('silent');
let h: Harness;
let dir: string;

/** The real S3 storage; putFile waits at a gate first (to interleave a takeover with an upload). */
class GatedStorage extends Storage {
  gate: Promise<void> = Promise.resolve();
  reachedGate!: () => void;
  reached = new Promise<void>((r) => (this.reachedGate = r));
  override async putFile(key: string, path: string, contentType?: string) {
    this.reachedGate();
    await this.gate;
    return super.putFile(key, path, contentType);
  }
}

async function checkpointDir(name: string, fill: string): Promise<string> {
  const d = join(dir, name);
  await rm(d, { recursive: true, force: true });
  await import('node:fs/promises').then((fs) => fs.mkdir(d, { recursive: true }));
  for (const f of ALL_CHECKPOINT_FILES) await writeFile(join(d, f), `${fill}:${f}:`.repeat(1000));
  return d;
}

async function newRunningJob(): Promise<{ id: string; tenantId: string }> {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') });
  const { id } = (await res.json()) as { id: string };
  assert.ok(await transitionJob(h.database.db, id, { from: ['queued'], to: 'running', patch: { attempt: 1 }, attempt: 0 }));
  return { id, tenantId: h.tenantA };
}

/** Attempt 2 takes over from attempt 1 (what a second runner does once the lock lapsed). */
const takeOver = (id: string) => transitionJob(h.database.db, id, { from: ['running'], to: 'running', reason: 'attempt 2: attempt 1 lost its runner', patch: { attempt: 2 }, attempt: 1 });

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  dir = await mkdtemp(join(tmpdir(), 'fencing-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
  await h.close();
});

describe('a zombie attempt cannot corrupt what the attempt that took over wrote', () => {
  test('checkpoint: the zombie uploads beside, never over, the registered version; its registration is refused', async () => {
    const job = await newRunningJob();
    const gated = new GatedStorage({ ...h.bucket.storage.cfg });
    let open!: () => void;
    gated.gate = new Promise((r) => (open = r));
    const zombieStore = new CheckpointStore(h.database.db, gated, log);
    const zombie = zombieStore.publish({ jobId: job.id, tenantId: job.tenantId, attempt: 1 }, { step: 10, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointDir('zombie', 'zombie'), reason: 'periodic' } as never);
    await gated.reached; // the zombie passed its fence check and computed version 1

    assert.ok(await takeOver(job.id));
    const store = new CheckpointStore(h.database.db, h.bucket.storage, log);
    const registered = await store.publish({ jobId: job.id, tenantId: job.tenantId, attempt: 2 }, { step: 10, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointDir('live', 'live'), reason: 'periodic' } as never);
    assert.equal(registered.version, 1);

    open(); // the zombie's upload goes ahead now
    await assert.rejects(zombie, SupersededError);
    const out = join(dir, 'download');
    await store.download(registered, out); // throws when any byte differs from its sha256
    assert.match(registered.s3Prefix, /\/v1\/a2\/$/);
    const versions = await h.database.sql`select version from checkpoints where job_id = ${job.id}`;
    assert.equal(versions.length, 1, 'the zombie registered nothing');
    gated.destroy();
  });

  test('a superseded attempt uploads nothing at all', async () => {
    const job = await newRunningJob();
    assert.ok(await takeOver(job.id));
    const store = new CheckpointStore(h.database.db, h.bucket.storage, log);
    await assert.rejects(store.publish({ jobId: job.id, tenantId: job.tenantId, attempt: 1 }, { step: 5, files: [...ALL_CHECKPOINT_FILES], dir: await checkpointDir('late', 'late'), reason: 'periodic' } as never), SupersededError);
    assert.deepEqual(await h.bucket.storage.list(`checkpoints/${job.tenantId}/${job.id}/`), []);
  });

  test('metrics, progress, evaluation and finishing are fenced by the attempt', async () => {
    const job = await newRunningJob();
    await upsertMetrics(h.database.db, job.id, [{ step: 1, name: 'loss', value: 1 }], 1);
    assert.ok(await takeOver(job.id));
    await assert.rejects(upsertMetrics(h.database.db, job.id, [{ step: 1, name: 'loss', value: 99 }, { step: 2, name: 'loss', value: 99 }], 1), SupersededError);
    await assert.rejects(setProgress(h.database.db, job.id, { step: 2 }, 1), SupersededError);
    const [m] = await h.database.sql`select count(*)::int as n, max(value) as v from metrics where job_id = ${job.id}`;
    assert.deepEqual({ n: m!.n, v: m!.v }, { n: 1, v: 1 }, 'the zombie wrote no metric');
    assert.equal(await transitionJob(h.database.db, job.id, { from: ['running'], to: 'succeeded', attempt: 1 }), null, 'the zombie cannot finish the job');
    assert.equal((await h.database.sql`select state from jobs where id = ${job.id}`)[0]!.state, 'running');
    await assert.rejects(
      recordEvaluation(h.database.db, { probeJobId: job.id, sourceJobId: job.id, checkpointId: '00000000-0000-0000-0000-000000000000', kind: 'linear', top1: 1, top5: 1, details: {}, attempt: 1 }),
      SupersededError,
    );

    // The metrics writer of the zombie stops at its first refused flush and says so once.
    const reasons: string[] = [];
    const writer = new MetricsWriter({ db: h.database.db, jobId: job.id, attempt: 1, log, onSuperseded: (r) => reasons.push(r), flushIntervalMs: 10_000 });
    writer.add({ step: 3, loss: 5 } as never);
    await writer.flush();
    writer.add({ step: 4, loss: 5 } as never);
    await writer.close();
    assert.equal(reasons.length, 1);
    assert.match(reasons[0]!, /superseded by attempt 2/);
    const [after] = await h.database.sql`select count(*)::int as n from metrics where job_id = ${job.id}`;
    assert.equal(after!.n, 1);
    const [progress] = await h.database.sql`select progress from jobs where id = ${job.id}`;
    assert.equal(progress!.progress, null, 'no progress from the zombie');
  });
});
