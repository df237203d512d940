import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createHarness, forceState, pretrain, seedCheckpoint, seedReadyDataset, type Harness } from './harness.js';
import { checkPresignedGet } from '../../support/sigv4.js';

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

  test('the URL is signed (SigV4) for exactly that object, expiry and file name: any change to it no longer verifies', async () => {
    // The local S3 server accepts any signature, so an independent SigV4 check (test/support/sigv4.ts,
    // pinned to AWS's published example) decides here, with the deployment's credentials.
    const credentials = { accessKeyId: h.config.S3_ACCESS_KEY_ID, secretAccessKey: h.config.S3_SECRET_ACCESS_KEY };
    const body = (await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?file=backbone`)).json()) as any;
    const issued = new URL(body.url);
    assert.equal(issued.pathname, `/${h.bucket.bucket}/checkpoints/${h.tenantA}/${jobId}/v2/backbone.safetensors`);
    assert.equal(issued.searchParams.get('X-Amz-Expires'), '900');
    const check = checkPresignedGet(issued, credentials);
    assert.ok(check.ok, JSON.stringify(check));
    assert.ok(Math.abs(check.expiresAt.getTime() - Date.parse(body.expiresAt)) < 5000, 'the answer\'s expiresAt is the URL\'s');
    const changed = (f: (u: URL) => void) => {
      const u = new URL(issued);
      f(u);
      return u;
    };
    const tampered: [string, URL][] = [
      ['another version of the same job', changed((u) => (u.pathname = u.pathname.replace('/v2/', '/v1/')))],
      ['the state file instead of the backbone', changed((u) => (u.pathname = u.pathname.replace('backbone', 'state')))],
      ['another tenant', changed((u) => (u.pathname = u.pathname.replace(h.tenantA, h.tenantB)))],
      ['a longer expiry', changed((u) => u.searchParams.set('X-Amz-Expires', '3600'))],
      ['a later signing date', changed((u) => u.searchParams.set('X-Amz-Date', u.searchParams.get('X-Amz-Date')!.replace(/^(\d{4})/, (y) => String(Number(y) + 1))))],
      ['another file name', changed((u) => u.searchParams.set('response-content-disposition', 'attachment; filename="x"'))],
    ];
    for (const [what, url] of tampered) assert.deepEqual(checkPresignedGet(url, credentials), { ok: false, reason: 'signature does not match' }, what);
    assert.deepEqual(checkPresignedGet(issued, credentials, new Date(check.expiresAt.getTime() + 1000)), { ok: false, reason: 'expired' });
  });

  test('the URL stops working after its expiry', async () => {
    const body = (await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?file=backbone&ttl=1`)).json()) as any;
    const url = new URL(body.url);
    assert.equal(url.searchParams.get('X-Amz-Expires'), '1');
    // The expiry is X-Amz-Date + X-Amz-Expires: wait until the clock is past it (however long the
    // request took), then the server refuses it. No race against a one-second window.
    const signedAt = Date.parse(url.searchParams.get('X-Amz-Date')!.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'));
    const skew = Date.parse(body.expiresAt) - (signedAt + 1000);
    assert.ok(skew >= 0 && skew < 5000, `expiresAt ${body.expiresAt} is the URL's own expiry (X-Amz-Date is whole seconds)`);
    await new Promise((r) => setTimeout(r, Math.max(0, signedAt + 2100 - Date.now())));
    const late = await fetch(body.url);
    assert.equal(late.status, 403);
    assert.match(await late.text(), /expired/i);
    // The same object through a URL still inside its time works: it is the expiry that refused it.
    const fresh = (await (await h.request('GET', `/v1/jobs/${jobId}/checkpoints/v2/download?file=backbone&ttl=600`)).json()) as any;
    assert.equal((await fetch(fresh.url)).status, 200);
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
