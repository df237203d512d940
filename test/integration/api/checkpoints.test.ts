import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createHarness, forceState, pretrain, seedCheckpoint, seedReadyDataset, type Harness } from './harness.js';

let h: Harness;
let jobId: string;
const backbone = randomBytes(200_000);
const state = randomBytes(50_000);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

before(async () => {
  h = await createHarness({ SIGNED_URL_TTL_SECONDS: 900, SIGNED_URL_MAX_TTL_SECONDS: 3600 });
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  const res = await h.request('POST', '/v1/jobs', { body: pretrain('fmnist') });
  jobId = ((await res.json()) as any).id;
  await forceState(h, jobId, 'running');
  await seedCheckpoint(h, h.tenantA, jobId, 1, { 'state.safetensors': randomBytes(1000), 'backbone.safetensors': randomBytes(1000) });
  await seedCheckpoint(h, h.tenantA, jobId, 2, { 'state.safetensors': state, 'backbone.safetensors': backbone });
  await seedCheckpoint(h, h.tenantA, jobId, 3, { 'state.safetensors': randomBytes(10) });
});
after(async () => h.close());

describe('checkpoints', () => {
  test('list shows versions, files with sha256, and the implicit latest alias', async () => {
    const res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as any;
    assert.deepEqual(body.checkpoints.map((c: any) => c.version), [1, 2, 3]);
    assert.equal(body.aliases.latest, 3);
    assert.deepEqual(body.checkpoints[2].aliases, ['latest']);
    assert.equal(body.checkpoints[1].files['backbone.safetensors'].sha256, sha(backbone));
    assert.ok(!JSON.stringify(body).includes('checkpoints/'), 'S3 keys are not exposed');
  });

  test('get by version (3, v3) and alias; unknown ones are 404 in the error shape', async () => {
    for (const ref of ['2', 'v2']) {
      const body = (await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/${ref}`)).json()) as any;
      assert.equal(body.version, 2, ref);
    }
    assert.equal(((await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/latest`)).json()) as any).version, 3);
    for (const ref of ['v9', 'nosuchalias']) {
      const res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints/${ref}`);
      assert.equal(res.status, 404, ref);
      const body = (await res.json()) as any;
      assert.equal(body.error.code, 'checkpoint_not_found');
      assert.equal(body.error.details[0].path, 'ref');
    }
    assert.equal((await h.request('GET', `/v1/jobs/${jobId}/checkpoints/BAD!`)).status, 400);
  });

  test("another tenant's job: 404 on every checkpoint route, no data", async () => {
    for (const path of ['checkpoints', 'checkpoints/2', 'checkpoints/2/download', 'evaluations', 'evaluations/comparison']) {
      const res = await h.request('GET', `/v1/jobs/${jobId}/${path}`, { key: h.keys.adminB });
      assert.equal(res.status, 404, path);
      const text = await res.text();
      assert.ok(!text.includes(sha(backbone)), path);
    }
  });

  test('user aliases: set, resolve, list, delete; reserved and version-like names refused', async () => {
    let res = await h.request('PUT', `/v1/jobs/${jobId}/checkpoints/aliases/production`, { body: { version: 2 } });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(((await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/production`)).json()) as any).version, 2);
    res = await h.request('PUT', `/v1/jobs/${jobId}/checkpoints/aliases/production`, { body: { version: 9 } });
    assert.equal(res.status, 422);
    for (const bad of ['latest', 'best', 'v12']) {
      res = await h.request('PUT', `/v1/jobs/${jobId}/checkpoints/aliases/${bad}`, { body: { version: 1 } });
      assert.equal(res.status, 400, bad);
      assert.equal(((await res.json()) as any).error.details[0].path, 'alias');
    }
    res = await h.request('PUT', `/v1/jobs/${jobId}/checkpoints/aliases/staging`, { body: { version: 1, extra: true } });
    assert.equal(res.status, 400);
    res = await h.request('PUT', `/v1/jobs/${jobId}/checkpoints/aliases/staging`, { key: h.keys.readOnly, body: { version: 1 } });
    assert.equal(res.status, 403);
    assert.equal((await h.request('DELETE', `/v1/jobs/${jobId}/checkpoints/aliases/production`)).status, 204);
    assert.equal((await h.request('DELETE', `/v1/jobs/${jobId}/checkpoints/aliases/production`)).status, 404);
    assert.equal((await h.request('GET', `/v1/jobs/${jobId}/checkpoints/production`)).status, 404);
  });
});

describe('checkpoint downloads', () => {
  test('the presigned URL serves the exact bytes with the file name; sha256 and size match the answer', async () => {
    const res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?file=backbone`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as any;
    assert.equal(body.sha256, sha(backbone));
    assert.equal(body.bytes, backbone.length);
    assert.equal(body.fileName, `${jobId}-v2-backbone.safetensors`);
    const ttlMs = Date.parse(body.expiresAt) - Date.now();
    assert.ok(ttlMs > 890_000 && ttlMs <= 900_000, `default TTL is SIGNED_URL_TTL_SECONDS (got ${ttlMs} ms)`);
    assert.match(body.url, /X-Amz-Expires=900/);
    const file = await fetch(body.url);
    assert.equal(file.status, 200);
    const bytes = Buffer.from(await file.arrayBuffer());
    assert.equal(sha(bytes), sha(backbone));
    assert.match(file.headers.get('content-disposition') ?? '', new RegExp(`filename="${jobId}-v2-backbone.safetensors"`));

    const full = (await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/2/download?file=state`)).json()) as any;
    assert.equal(sha(Buffer.from(await (await fetch(full.url)).arrayBuffer())), sha(state));
  });

  test('the URL names one object only (scope): it cannot be bent to another key', async () => {
    const body = (await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?file=backbone`)).json()) as any;
    // The local S3 server does not check signatures; what we can check is that the URL we issue
    // names exactly the requested object, is signed for it with a bounded expiry, and that the
    // expiry is enforced (next test).
    const url = new URL(body.url);
    assert.ok(url.pathname.endsWith(`/checkpoints/${h.tenantA}/${jobId}/v2/backbone.safetensors`));
    assert.equal(url.searchParams.get('X-Amz-SignedHeaders'), 'host');
    assert.ok(url.searchParams.get('X-Amz-Signature'));
    assert.equal(url.searchParams.get('X-Amz-Expires'), '900');
  });

  test('the URL stops working after its expiry', async () => {
    const body = (await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?file=backbone&ttl=1`)).json()) as any;
    assert.match(body.url, /X-Amz-Expires=1(&|$)/);
    assert.equal((await fetch(body.url)).status, 200);
    await new Promise((r) => setTimeout(r, 2100));
    const late = await fetch(body.url);
    assert.equal(late.status, 403);
    assert.match(await late.text(), /expired/i);
  });

  test('ttl is bounded by SIGNED_URL_MAX_TTL_SECONDS; a missing file is 404; redirect=true answers 302', async () => {
    let res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?ttl=3601`);
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as any).error.details[0].path, 'ttl');
    res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?ttl=0`);
    assert.equal(res.status, 400);
    res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v3/download?file=backbone`);
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as any).error.code, 'file_not_found');
    res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?file=weights`);
    assert.equal(res.status, 400);
    res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?redirect=true`);
    assert.equal(res.status, 302);
    assert.match(res.headers.get('location') ?? '', /backbone\.safetensors/);
    res = await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download`, { key: h.keys.datasetsOnly });
    assert.equal(res.status, 403);
  });
});

describe('evaluations', () => {
  test('per checkpoint version, with the best alias and a comparison across versions', async () => {
    const probeIds: string[] = [];
    for (const [version, top1] of [[1, 0.41], [2, 0.55], [3, 0.52]] as const) {
      const res = await h.request('POST', '/v1/jobs', { body: { type: 'probe', source: { job: jobId, checkpoint: `v${version}` }, epochs: 1 } });
      assert.equal(res.status, 201, await res.clone().text());
      const probe = (await res.json()) as any;
      probeIds.push(probe.id);
      const [cp] = await h.database.sql`select id from checkpoints where job_id = ${jobId} and version = ${version}`;
      await h.database.sql`insert into evaluations (job_id, checkpoint_id, kind, top1, top5) values (${probe.id}, ${cp!.id}, 'linear', ${top1}, ${top1 + 0.3})`;
    }
    const list = (await (await h.request('GET', `/v1/jobs/${jobId}/evaluations`)).json()) as any;
    assert.deepEqual(list.evaluations.map((e: any) => [e.checkpointVersion, e.top1]), [[1, 0.41], [2, 0.55], [3, 0.52]]);
    assert.equal(list.evaluations[0].probeJobId, probeIds[0]);
    const own = (await (await h.request('GET', `/v1/jobs/${probeIds[1]}/evaluations`)).json()) as any;
    assert.deepEqual(own.evaluations.map((e: any) => e.top1), [0.55], 'a probe job shows its own result');
    const cmp = (await (await h.request('GET', `/v1/jobs/${jobId}/evaluations/comparison`)).json()) as any;
    assert.equal(cmp.bestVersion, 2);
    assert.equal(cmp.bestTop1, 0.55);
    assert.deepEqual(cmp.versions.map((v: any) => v.version), [1, 2, 3]);
    assert.equal(cmp.versions[0].deltaTop1, null);
    assert.ok(Math.abs(cmp.versions[1].deltaTop1 - 0.14) < 1e-9);
    // Without a `best` row from the runner, `best` falls back to the highest top-1.
    assert.equal(((await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/best`)).json()) as any).version, 2);
  });
});
