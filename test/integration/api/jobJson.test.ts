/**
 * GET /v1/jobs/{id} answers JSON that Postgres builds (db/jobQueries.ts getTenantJobApiJson); every
 * other route serialises jobs in JS (api/serialize.ts jobJson). The two must never differ.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, forceState, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { getTenantJob, getTenantJobApiJson } from '../../../db/jobQueries.js';
import { jobJson } from '../../../api/serialize.js';

let h: Harness;

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
});
after(async () => h.close());

async function submit(body: unknown): Promise<string> {
  const res = await h.request('POST', '/v1/jobs', { body });
  assert.equal(res.status, 201, await res.clone().text());
  return ((await res.json()) as { id: string }).id;
}

test('the JSON Postgres builds equals the JSON the API writes, for jobs in every shape', async () => {
  const sql = h.database.sql;
  const ids = {
    fresh: await submit(pretrain('fmnist')),
    labeled: await submit(pretrain('fmnist', { labels: { branch: 'main', 'team/x': 'ü "quoted"' } })),
    finished: await submit(pretrain('fmnist', { optim: { lr: 1e-7, batch: 64 }, labels: { a: 'b' } })),
    failed: await submit(pretrain('fmnist')),
    odd: await submit(pretrain('fmnist')),
  };
  await sql`
    update jobs set state = 'succeeded', attempt = 2, started_at = now() - interval '1 minute 0.000999 seconds', finished_at = now(),
      progress = ${JSON.stringify({ step: 10, totalSteps: 10, loss: 0.1 + 0.2, imagesPerSec: 1e21 })}::jsonb,
      runtime = ${JSON.stringify({ backend: 'cpu', host: 'r1' })}::jsonb, result = ${JSON.stringify({ checkpoint: 'v3', nested: [1, null, { x: 'y' }] })}::jsonb
    where id = ${ids.finished}`;
  await forceState(h, ids.failed, 'failed');
  await sql`update jobs set error = ${'boom\n"quoted" \u2028 tab\t'}, cancel_requested = true, parent_job_id = ${ids.fresh}, progress = 'null'::jsonb where id = ${ids.failed}`;
  // What no submission writes but older rows might hold: labels null, a dataset that is not a string.
  await sql`update jobs set spec = jsonb_set(jsonb_set(spec, '{labels}', 'null'), '{dataset}', '7') where id = ${ids.odd}`;

  for (const [name, id] of Object.entries(ids)) {
    const fromJs = JSON.parse(JSON.stringify(jobJson((await getTenantJob(sql, h.tenantA, id))!)));
    const fromSql = JSON.parse((await getTenantJobApiJson(sql, h.tenantA, id))!.toString('utf8'));
    assert.deepEqual(fromSql, fromJs, name);
    const res = await h.request('GET', `/v1/jobs/${id}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.deepEqual(await res.json(), fromJs, `${name} over HTTP`);
  }
  assert.equal(await getTenantJobApiJson(sql, h.tenantB, ids.fresh), undefined, 'another tenant sees nothing');
});

test('a submission answers the JSON the API writes for the stored job, first time and on a replay', async () => {
  // POST /v1/jobs sends the job as Postgres built it with the insert (Submitted.json); a replay
  // (same Idempotency-Key) sends the earlier job rendered in JS. Both must match jobJson.
  const headers = { 'idempotency-key': 'json-replay-1' };
  const body = pretrain('fmnist', { labels: { 'team/x': 'ü "quoted"' } });
  const first = await h.request('POST', '/v1/jobs', { body, headers });
  assert.equal(first.status, 201, await first.clone().text());
  assert.equal(first.headers.get('content-type'), 'application/json');
  const created = (await first.json()) as { id: string };
  assert.equal(first.headers.get('location'), `/v1/jobs/${created.id}`);
  const fromJs = JSON.parse(JSON.stringify(jobJson((await getTenantJob(h.database.sql, h.tenantA, created.id))!)));
  assert.deepEqual(created, fromJs, 'first answer');
  const replay = await h.request('POST', '/v1/jobs', { body, headers });
  assert.equal(replay.status, 201);
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.headers.get('content-type'), 'application/json');
  assert.deepEqual(await replay.json(), fromJs, 'replayed answer');
});
