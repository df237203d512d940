/**
 * Named models against real Postgres and the S3 server: registration with lineage, `model@ref`
 * wherever a checkpoint is accepted, alias compare-and-set, retention pins, gated promotion decided
 * in the database (worse fails and leaves the alias, better moves it, racing promotions move it once),
 * and the lineage chain of a third-generation retrain.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { sha256Hex } from '../../../common/storage.js';
import { decidePromotion } from '../../../db/modelPromotion.js';
import { lineageOfJob } from '../../../db/models.js';
import { checkpointsBeyondRetention } from '../../../db/runs.js';
import { checkpoints, evaluations, jobs } from '../../../db/schema.js';
import { createHarness, forceState, pretrain, seedCheckpoint, seedReadyDataset, type Harness } from './harness.js';

let h: Harness;
let manifestSha: string[];

before(async () => {
  h = await createHarness();
  const { versionIds } = await seedReadyDataset(h, h.tenantA, 'fmnist', 3);
  // Manifests in S3 as ingestion leaves them, so that lineage can record their digest.
  manifestSha = [];
  for (const [i, id] of versionIds.entries()) {
    const key = `datasets/${h.tenantA}/fmnist/v${i + 1}/manifest.json`;
    const bytes = JSON.stringify({ version: i + 1, note: randomBytes(4).toString('hex') });
    await h.bucket.storage.put(key, bytes);
    await h.database.sql`update dataset_versions set manifest_key = ${key} where id = ${id}`;
    manifestSha.push(sha256Hex(bytes));
  }
});
after(async () => {
  await h?.close();
});

const body = async (res: Response) => (await res.json()) as any;

/** A succeeded pretrain job with one checkpoint (v1) in S3, and a runtime naming its code version. */
async function trainedJob(dataset = 'fmnist@1', extra: Record<string, unknown> = {}) {
  const res = await h.request('POST', '/v1/jobs', { body: pretrain(dataset, extra) });
  assert.equal(res.status, 201, JSON.stringify(await res.clone().json()));
  const job = await body(res);
  const cp = await seedCheckpoint(h, h.tenantA, job.id, 1, { 'state.safetensors': randomBytes(64), 'backbone.safetensors': randomBytes(48) });
  await h.database.sql`update jobs set runtime = ${JSON.stringify({ code: { package: '0.1.0', commit: 'c'.repeat(40) } })}::jsonb where id = ${job.id}`;
  await forceState(h, job.id, 'succeeded');
  return { job, checkpointId: cp.id, files: cp.files };
}

/** A probe job of `jobId`'s v1 through the API, and the evaluation its runner would record. */
async function probed(jobId: string, top1: number, opts: { promote?: Record<string, unknown>; epochs?: number; dataset?: string; knn?: number } = {}) {
  const res = await h.request('POST', '/v1/jobs', {
    body: { type: 'probe', source: { job: jobId, checkpoint: 'v1' }, epochs: opts.epochs ?? 5, ...(opts.dataset ? { dataset: opts.dataset } : {}), ...(opts.promote ? { promote: opts.promote } : {}) },
  });
  assert.equal(res.status, 201, JSON.stringify(await res.clone().json()));
  const probe = await body(res);
  const [checkpoint] = await h.database.db.select().from(checkpoints).where(eq(checkpoints.jobId, jobId));
  const [evaluation] = await h.database.db
    .insert(evaluations)
    .values({ jobId: probe.id, checkpointId: checkpoint!.id, kind: 'linear', top1, top5: null, details: opts.knn === undefined ? {} : { knn: { top1: opts.knn } } })
    .returning();
  return { probe, checkpoint: checkpoint!, evaluation: evaluation! };
}

async function decide(p: Awaited<ReturnType<typeof probed>>, promote: { model: string; alias: string; gate: string[] }) {
  const [probeJob] = await h.database.db.select().from(jobs).where(eq(jobs.id, p.probe.id));
  const [source] = await h.database.db.select().from(jobs).where(eq(jobs.id, p.checkpoint.jobId));
  return decidePromotion(h.database.db, {
    tenantId: h.tenantA,
    probeJob: probeJob!,
    evaluation: p.evaluation,
    checkpoint: p.checkpoint,
    promote,
    lineage: await lineageOfJob(h.database.db, h.bucket.storage, source!, null),
  });
}

const aliasOf = async (model: string, alias: string) => {
  const res = await h.request('GET', `/v1/models/${model}/versions/${alias}`);
  return res.status === 200 ? (await body(res)).version : null;
};

describe('model registry', () => {
  test('register a checkpoint as a version with its lineage; again is the same version; aliases move', async () => {
    const { job } = await trainedJob('fmnist@2');
    let res = await h.request('POST', '/v1/models/fmnist-backbone/versions', { body: { job: job.id, aliases: ['staging'] } });
    assert.equal(res.status, 201);
    const v1 = await body(res);
    assert.equal(v1.ref, 'fmnist-backbone@1');
    assert.deepEqual(v1.aliases.sort(), ['latest', 'staging']);
    assert.equal(v1.jobId, job.id);
    assert.equal(v1.checkpointVersion, 1);
    assert.deepEqual(v1.dataset, { ref: 'fmnist@2', versionId: job.datasetVersionId, manifestSha256: manifestSha[1] });
    assert.deepEqual(v1.codeVersion, { package: '0.1.0', commit: 'c'.repeat(40) });
    assert.equal(v1.spec.dataset, 'fmnist@2');
    res = await h.request('POST', '/v1/models/fmnist-backbone/versions', { body: { job: job.id, checkpoint: 'v1' } });
    assert.equal(res.status, 200, 'a checkpoint is registered once per model');
    assert.equal((await body(res)).version, 1);

    // Events on the job: in its event stream and its outbox (webhooks), signed like the others.
    const events = await body(await h.request('GET', `/v1/jobs/${job.id}/events`));
    const kinds = events.events.map((e: any) => e.kind);
    assert.ok(kinds.includes('model.version.created') && kinds.includes('model.alias.moved'), kinds.join(','));
    const [outbox] = await h.database.sql`select count(*)::int as n from outbox where payload->>'jobId' = ${job.id} and payload->>'event' like 'model.%'`;
    assert.equal(outbox!.n, 2);

    // Bad input: 4xx naming the field.
    res = await h.request('POST', '/v1/models/Bad Name/versions', { body: { job: job.id } });
    assert.equal(res.status, 400);
    res = await h.request('POST', '/v1/models/fmnist-backbone/versions', { body: { job: job.id, checkpoint: 'v9' } });
    assert.equal(res.status, 422);
    assert.equal((await body(res)).error.details[0].path, 'checkpoint');
    res = await h.request('POST', '/v1/models/fmnist-backbone/versions', { body: { job: job.id, aliases: ['latest'] } });
    assert.equal(res.status, 400);
    assert.equal((await body(res)).error.details[0].path, 'aliases.0');
    res = await h.request('GET', '/v1/models/fmnist-backbone', { key: h.keys.adminB });
    assert.equal(res.status, 404, "another tenant's model does not exist for it");
  });

  test('alias compare-and-set: a stale expectedVersion is 409 and moves nothing', async () => {
    const a = await trainedJob();
    const b = await trainedJob();
    await h.request('POST', '/v1/models/cas-model/versions', { body: { job: a.job.id, aliases: ['production'] } });
    await h.request('POST', '/v1/models/cas-model/versions', { body: { job: b.job.id } });
    let res = await h.request('PUT', '/v1/models/cas-model/aliases/production', { body: { version: 2, expectedVersion: 2 } });
    assert.equal(res.status, 409);
    assert.equal((await body(res)).error.code, 'alias_moved');
    assert.equal(await aliasOf('cas-model', 'production'), 1);
    res = await h.request('PUT', '/v1/models/cas-model/aliases/production', { body: { version: 2, expectedVersion: 1 } });
    assert.equal(res.status, 200);
    assert.deepEqual(await body(res), { alias: 'production', version: 2, previousVersion: 1, moved: true });
    res = await h.request('PUT', '/v1/models/cas-model/aliases/production', { body: { version: 7 } });
    assert.equal(res.status, 422);
    res = await h.request('DELETE', '/v1/models/cas-model/aliases/production');
    assert.equal(res.status, 204);
    assert.equal(await aliasOf('cas-model', 'production'), null);
  });

  test('model@alias resolves in a probe source, a pretrain initFrom, a retrain and a download', async () => {
    const { job, files } = await trainedJob();
    await h.request('POST', '/v1/models/resolve-me/versions', { body: { job: job.id, aliases: ['production'] } });

    let res = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: { model: 'resolve-me@production' }, epochs: 1 } });
    assert.equal(res.status, 201);
    assert.deepEqual((await body(res)).spec.source, { job: job.id, checkpoint: 'v1', model: 'resolve-me@1' });

    res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist@2', { initFrom: { model: 'resolve-me@production' } }) });
    assert.equal(res.status, 201);
    assert.deepEqual((await body(res)).spec.initFrom, { job: job.id, checkpoint: 'v1', model: 'resolve-me@1' });

    res = await h.request('POST', `/v1/jobs/${job.id}/retrain`, { body: { dataset: 'fmnist@2', initFrom: 'resolve-me@production' } });
    assert.equal(res.status, 201);
    assert.deepEqual((await body(res)).spec.initFrom, { job: job.id, checkpoint: 'v1', model: 'resolve-me@1' });

    res = await h.request('POST', '/v1/models/resolve-me/versions/production/retrain', { body: { dataset: 'fmnist@3', maxSteps: 5 } });
    assert.equal(res.status, 201);
    const retrained = await body(res);
    assert.equal(retrained.parentJobId, job.id);
    assert.equal(retrained.dataset, 'fmnist@3');
    assert.deepEqual(retrained.spec.initFrom, { job: job.id, checkpoint: 'v1', model: 'resolve-me@1' });

    res = await h.request('GET', '/v1/models/resolve-me/versions/production/download?file=backbone&ttl=60');
    assert.equal(res.status, 200);
    const link = await body(res);
    assert.equal(link.fileName, 'resolve-me-v1-backbone.safetensors');
    const bytes = new Uint8Array(await (await fetch(link.url)).arrayBuffer());
    assert.equal(sha256Hex(bytes), files['backbone.safetensors']!.sha256);
    assert.equal(link.sha256, sha256Hex(bytes));

    // What does not resolve is 422 naming the field; a malformed reference is 400.
    res = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: { model: 'nope@production' } } });
    assert.equal(res.status, 422);
    const unknown = (await body(res)).error;
    assert.deepEqual([unknown.code, unknown.details[0].path], ['model_not_found', 'source.model']);
    res = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: { model: 'resolve-me@staging' } } });
    assert.equal(res.status, 422);
    assert.equal((await body(res)).error.details[0].path, 'source.model');
    res = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: { model: 'resolve-me' } } });
    assert.equal(res.status, 400);
    assert.equal((await body(res)).error.details[0].path, 'source.model');
    res = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: {} } });
    assert.equal(res.status, 400);
    assert.equal((await body(res)).error.details[0].path, 'source.job');
    res = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: { job: job.id }, promote: { model: 'm', alias: 'production', gate: ['top1>=production'] } } });
    assert.equal(res.status, 400);
    assert.equal((await body(res)).error.details[0].path, 'promote.gate.0');
    res = await h.request('GET', '/v1/models/resolve-me/versions/staging/download');
    assert.equal(res.status, 404);
  });

  test('retention never deletes a checkpoint a model version points at', async () => {
    const { job } = await trainedJob();
    for (const v of [2, 3, 4]) await seedCheckpoint(h, h.tenantA, job.id, v, { 'state.safetensors': randomBytes(8) });
    await h.request('POST', '/v1/models/pinned/versions', { body: { job: job.id, checkpoint: 'v1' } });
    const deletable = await checkpointsBeyondRetention(h.database.db, job.id, 1);
    assert.deepEqual(deletable.map((c) => c.version).sort(), [2, 3], 'v1 is a model version, v4 the newest');
  });
});

describe('gated promotion', () => {
  test('a worse probe fails the gate with both numbers, leaves production, and says gate.failed', async () => {
    const incumbent = await trainedJob();
    const candidate = await trainedJob();
    const promote = { model: 'gated', alias: 'production', gate: ['linear>=production-0.5'] };
    const first = await decide(await probed(incumbent.job.id, 0.8), promote);
    assert.equal(first.passed, true, 'no production yet: the first promotion passes');
    assert.equal(first.moved, true);
    assert.equal(await aliasOf('gated', 'production'), 1);

    // The incumbent probed on the same dataset version under the same protocol: 80 %.
    await probed(incumbent.job.id, 0.8);
    const worse = await probed(candidate.job.id, 0.7, { promote });
    const result = await decide(worse, promote);
    assert.equal(result.passed, false);
    assert.equal(result.moved, false);
    assert.equal(result.rules[0]!.candidate, 0.7);
    assert.equal(result.rules[0]!.baseline, 0.8);
    assert.ok(Math.abs(result.rules[0]!.threshold! - 0.795) < 1e-12);
    assert.equal(await aliasOf('gated', 'production'), 1, 'production stays where it was');
    const versions = await body(await h.request('GET', '/v1/models/gated/versions'));
    assert.equal(versions.versions.length, 1, 'a failed candidate is not registered');
    const gates = await body(await h.request('GET', '/v1/models/gated/gates'));
    assert.equal(gates.gates[0].passed, false);
    assert.equal(gates.gates[0].rules[0].candidate, 0.7);
    assert.equal(gates.gates[0].rules[0].baseline, 0.8);
    const [failed] = await h.database.sql`select count(*)::int as n from outbox where payload->>'jobId' = ${worse.probe.id} and payload->>'event' = 'gate.failed'`;
    assert.equal(failed!.n, 1);

    // A retried probe gets its recorded decision, not a second one.
    const again = await decide(worse, promote);
    assert.equal(again.replayed, true);
    assert.equal(again.passed, false);

    // Within the tolerance passes; a different protocol (epochs) is not comparable and fails.
    const close = await decide(await probed(candidate.job.id, 0.796, { promote }), promote);
    assert.equal(close.passed, true);
    assert.equal(close.moved, true);
    assert.equal(await aliasOf('gated', 'production'), 2);
    const other = await trainedJob();
    const incomparable = await decide(await probed(other.job.id, 0.99, { promote, epochs: 7 }), promote);
    assert.equal(incomparable.passed, false);
    assert.match(incomparable.rules[0]!.reason, /same protocol/);
  });

  test('kNN rules read the kNN top-1 where the evaluation has one', async () => {
    const incumbent = await trainedJob();
    const candidate = await trainedJob();
    const promote = { model: 'knn-gated', alias: 'production', gate: ['linear>=production-1', 'knn>=production'] };
    await decide(await probed(incumbent.job.id, 0.8, { knn: 0.75 }), { ...promote, gate: [] });
    await probed(incumbent.job.id, 0.8, { knn: 0.75 });
    const result = await decide(await probed(candidate.job.id, 0.81, { knn: 0.74 }), promote);
    assert.deepEqual(result.rules.map((r) => r.passed), [true, false]);
    assert.equal(result.rules[1]!.candidate, 0.74);
    assert.equal(result.rules[1]!.baseline, 0.75);
    assert.equal(result.passed, false);
  });

  test('racing promotions: the alias moves once per winning decision, to the best candidate', async () => {
    const base = await trainedJob();
    const promote = { model: 'raced', alias: 'production', gate: ['linear>=production'] };
    await decide(await probed(base.job.id, 0.5), promote);
    await probed(base.job.id, 0.5);
    // Six candidates, all better than production, decided at once: each must compare with what the
    // previous decision left, so only improvements over the then-current production move it.
    const scores = [0.6, 0.9, 0.7, 0.8, 0.65, 0.75];
    const candidates = await Promise.all(scores.map(async (s) => ({ s, p: await probed((await trainedJob()).job.id, s, { promote }) })));
    const results = await Promise.all(candidates.map(({ p }) => decide(p, promote)));
    const moves = results.filter((r) => r.moved).length;
    const [events] = await h.database.sql`select count(*)::int as n from outbox where payload->>'event' = 'model.alias.moved' and payload->'data'->>'model' = 'raced'`;
    assert.equal(events!.n, moves + 1, 'one alias.moved event per move (plus the first promotion)');
    const production = await body(await h.request('GET', '/v1/models/raced/versions/production'));
    const best = candidates.find((c) => c.s === 0.9)!;
    assert.equal(production.jobId, best.p.checkpoint.jobId, 'production ends on the best candidate');
    // Every decision compared with the production of its turn: the versions it moved through rise.
    const gates = (await body(await h.request('GET', '/v1/models/raced/gates'))).gates.reverse();
    const baselines = gates.filter((g: any) => g.rules.length).map((g: any) => g.rules[0].baseline);
    for (const g of gates.filter((x: any) => x.moved && x.rules.length)) assert.ok(g.rules[0].candidate > g.rules[0].baseline);
    assert.ok(baselines.every((b: number, i: number) => i === 0 || b >= baselines[i - 1]), `baselines never go down: ${baselines.join(',')}`);

    // The same candidate promoted twice at once: registered once, moved once.
    const again = await trainedJob();
    const twice = await Promise.all([probed(again.job.id, 0.95, { promote }), probed(again.job.id, 0.95, { promote })]);
    const decisions = await Promise.all(twice.map((p) => decide(p, promote)));
    assert.equal(decisions.filter((d) => d.moved).length, 1);
    assert.equal(decisions[0]!.version, decisions[1]!.version);
    assert.equal((await body(await h.request('GET', '/v1/models/raced/versions/production'))).jobId, again.job.id);
  });
});

describe('lineage', () => {
  test('a third-generation retrain lists both ancestors with their dataset versions and manifest digests', async () => {
    const g1 = await trainedJob('fmnist@1');
    await h.request('POST', '/v1/models/family/versions', { body: { job: g1.job.id, aliases: ['production'] } });
    let res = await h.request('POST', '/v1/models/family/versions/production/retrain', { body: { dataset: 'fmnist@2' } });
    const g2 = await body(res);
    await seedCheckpoint(h, h.tenantA, g2.id, 1, { 'state.safetensors': randomBytes(16) });
    await forceState(h, g2.id, 'succeeded');
    await h.request('POST', '/v1/models/family/versions', { body: { job: g2.id, aliases: ['production'] } });
    // Generation 3 from generation 2's job checkpoint (not through the model): lineage still finds v2.
    res = await h.request('POST', `/v1/jobs/${g2.id}/retrain`, { body: { dataset: 'fmnist@3', initFrom: 'latest' } });
    const g3 = await body(res);
    await seedCheckpoint(h, h.tenantA, g3.id, 1, { 'state.safetensors': randomBytes(16) });
    await forceState(h, g3.id, 'succeeded');
    res = await h.request('POST', '/v1/models/family/versions', { body: { job: g3.id } });
    assert.equal(res.status, 201);
    const v3 = await body(res);
    assert.equal(v3.version, 3);
    assert.ok(v3.parent.modelVersionId, 'the parent model version is recorded');

    const lineage = await body(await h.request('GET', '/v1/models/family/versions/3/lineage'));
    assert.deepEqual(
      lineage.lineage.map((e: any) => [e.relation, e.jobId, e.modelVersion?.version, e.dataset.ref, e.dataset.manifestSha256]),
      [
        ['self', g3.id, 3, 'fmnist@3', manifestSha[2]],
        ['initFrom', g2.id, 2, 'fmnist@2', manifestSha[1]],
        ['initFrom', g1.job.id, 1, 'fmnist@1', manifestSha[0]],
      ],
    );
    assert.deepEqual(lineage.lineage[2].codeVersion, { package: '0.1.0', commit: 'c'.repeat(40) });
    assert.equal(lineage.lineage[1].spec.dataset, 'fmnist@2');
  });
});
