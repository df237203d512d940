/**
 * Deleting datasets and versions (docs/api.md "Datasets"; the routes' summaries): the stored bytes
 * go with the rows, only those of what was deleted; using what was deleted is a 4xx naming it; a
 * delete is refused (409, the jobs named) while an unfinished job uses the data, also when the
 * submissions race the delete. datasets.test.ts covers the 409 and a finished job's kept `name@N`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, pretrain, seedReadyDataset, type Harness } from './harness.js';
import { datasetVersionPrefix } from '../../../contracts/storageKeys.js';

let h: Harness;
before(async () => {
  h = await createHarness();
});
after(() => h.close());

/** A ready dataset whose versions have objects in S3 where ingestion puts them (archive, shards, manifest). */
async function datasetWithObjects(tenantId: string, name: string, versions: number): Promise<{ id: string; prefix: (v: number) => string }> {
  const { datasetId } = await seedReadyDataset(h, tenantId, name, versions);
  const prefix = (v: number) => datasetVersionPrefix(tenantId, datasetId, v);
  for (let v = 1; v <= versions; v++) {
    for (const key of ['upload/archive', 'shards/train-00000.bin', 'shards/val-00000.bin', 'manifest.json']) await h.bucket.storage.put(prefix(v) + key, `${name} v${v} ${key}`);
  }
  return { id: datasetId, prefix };
}

const keysUnder = async (prefix: string) => (await h.bucket.storage.list(prefix)).map((o) => o.key);
const submit = (dataset: string, key = h.keys.admin) => h.request('POST', '/v1/jobs', { key, body: pretrain(dataset) });

test('deleting a version removes its objects and only them; it is 404 and refused to jobs after; latest falls back', async () => {
  const d = await datasetWithObjects(h.tenantA, 'twoversions', 2);
  const res = await h.request('DELETE', '/v1/datasets/twoversions/versions/2');
  assert.equal(res.status, 204, await res.clone().text());
  assert.deepEqual(await keysUnder(d.prefix(2)), [], 'version 2 has no object left');
  assert.equal((await keysUnder(d.prefix(1))).length, 4, 'version 1 keeps all of its');

  assert.equal((await h.request('GET', '/v1/datasets/twoversions/versions/2')).status, 404);
  assert.equal((await h.request('DELETE', '/v1/datasets/twoversions/versions/2')).status, 404, 'a second delete: nothing to delete');
  const refused = await submit('twoversions@2');
  assert.ok(refused.status >= 400 && refused.status < 500, `a job on the deleted version: ${refused.status}`);
  const body = (await refused.json()) as { error: { details: { path: string }[] } };
  assert.equal(body.error.details[0]?.path, 'dataset');

  const latest = (await (await h.request('GET', '/v1/datasets/twoversions/versions/latest')).json()) as { version: number };
  assert.equal(latest.version, 1);
  const job = await submit('twoversions');
  assert.equal(job.status, 201);
  assert.equal(((await job.json()) as { dataset: string }).dataset, 'twoversions@1', 'the name resolves to the version left');
});

test('deleting a dataset removes every object of every version; use after is 4xx; the name is free; another tenant’s namesake is untouched', async () => {
  const mine = await datasetWithObjects(h.tenantA, 'doomed', 2);
  const theirs = await datasetWithObjects(h.tenantB, 'doomed', 1);
  const res = await h.request('DELETE', '/v1/datasets/doomed');
  assert.equal(res.status, 204, await res.clone().text());
  assert.deepEqual(await keysUnder(`datasets/${h.tenantA}/${mine.id}/`), [], 'no object of the dataset is left');
  assert.equal((await keysUnder(theirs.prefix(1))).length, 4, "the other tenant's dataset of the same name keeps its objects");
  assert.equal((await h.request('GET', '/v1/datasets/doomed', { key: h.keys.adminB })).status, 200);

  for (const [method, path] of [
    ['GET', '/v1/datasets/doomed'],
    ['GET', '/v1/datasets/doomed/versions'],
    ['GET', '/v1/datasets/doomed/versions/1'],
    ['DELETE', '/v1/datasets/doomed'],
  ] as const) {
    assert.equal((await h.request(method, path)).status, 404, `${method} ${path}`);
  }
  const newVersion = await h.request('POST', '/v1/datasets/doomed/versions', { body: { options: { format: 'idx' }, sizeBytes: 1024 } });
  assert.equal(newVersion.status, 404, 'no version can be added to a deleted dataset');
  for (const ref of ['doomed', 'doomed@1', 'doomed@2']) {
    const job = await submit(ref);
    assert.ok(job.status >= 400 && job.status < 500, `a job on ${ref}: ${job.status}`);
  }

  const again = await h.request('POST', '/v1/datasets', { body: { name: 'doomed' } });
  assert.equal(again.status, 201, 'the name can be used again');
  const v = (await (await h.request('POST', '/v1/datasets/doomed/versions', { body: { options: { format: 'idx' }, sizeBytes: 1024 } })).json()) as { version: number };
  assert.equal(v.version, 1, 'a new dataset: its versions start again at 1');
});

test('a delete racing job submissions: either the delete is refused naming the jobs, or the jobs are refused; never a 5xx, never a job without its data', async () => {
  for (let round = 0; round < 8; round++) {
    const name = `race${round}`;
    const d = await datasetWithObjects(h.tenantA, name, 1);
    // The delete goes in the middle of the submissions, so that it lands on either side of some.
    const requests = [submit(name), submit(`${name}@1`), h.request('DELETE', `/v1/datasets/${name}`), submit(name), submit(`${name}@1`)];
    const answers = await Promise.all(requests.map(async (r) => {
      const res = await r;
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    }));
    const del = answers[2]!;
    const jobs = answers.filter((_, i) => i !== 2);
    for (const a of answers) assert.ok(a.status < 500, `round ${round}: ${a.status} ${JSON.stringify(a.body)}`);
    const accepted = jobs.filter((a) => a.status === 201).map((a) => a.body.id as string);
    for (const a of jobs) assert.ok(a.status === 201 || (a.status >= 400 && a.status < 500), `round ${round}: a submission answered ${a.status}`);

    if (del.status === 204) {
      assert.deepEqual(accepted, [], `round ${round}: the dataset was deleted, so no job may have been accepted on it`);
      assert.deepEqual(await keysUnder(`datasets/${h.tenantA}/${d.id}/`), []);
    } else {
      assert.equal(del.status, 409, `round ${round}: ${JSON.stringify(del.body)}`);
      assert.equal(del.body.error.code, 'dataset_in_use');
      // Every job the delete saw is one that was accepted; the data is all still there.
      for (const id of del.body.error.details.map((x: { message: string }) => x.message)) assert.ok(accepted.includes(id), `round ${round}: ${id}`);
      assert.ok(accepted.length > 0);
      assert.equal((await keysUnder(d.prefix(1))).length, 4);
    }
    // Whatever happened, every accepted job still points at a version that exists.
    for (const id of accepted) {
      const [row] = await h.database.sql`select j.dataset_version_id, v.id as version from jobs j left join dataset_versions v on v.id = j.dataset_version_id where j.id = ${id}`;
      assert.ok(row!.dataset_version_id && row!.version, `round ${round}: job ${id} lost its dataset version`);
    }
  }
});
