/**
 * Live (SSE) streams are bounded (issue 10): a cap per tenant, a maximum lifetime, the opening key
 * re-checked (revoked: the stream ends), and every stream ended by the server's shutdown. Against a
 * running job whose stream would otherwise never end.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createApp } from '../../../api/app.js';
import { createHarness, forceState, pretrain, seedReadyDataset, type Harness } from './harness.js';

let h: Harness;
let jobA: string;
let jobB: string;

before(async () => {
  h = await createHarness({ API_SSE_MAX_PER_TENANT: 2, API_SSE_MAX_SECONDS: 3600 }, { sseRecheckMs: 50 });
  await seedReadyDataset(h, h.tenantA, 'live');
  await seedReadyDataset(h, h.tenantB, 'live');
  jobA = ((await (await h.request('POST', '/v1/jobs', { body: pretrain('live@1') })).json()) as any).id;
  jobB = ((await (await h.request('POST', '/v1/jobs', { key: h.keys.adminB, body: pretrain('live@1') })).json()) as any).id;
  await forceState(h, jobA, 'running');
  await forceState(h, jobB, 'running');
});
after(async () => h.close());

type App = ReturnType<typeof createApp>['app'];

function open(app: App, jobId: string, key: string, path: 'events' | 'metrics' = 'events') {
  return app.request(`/v1/jobs/${jobId}/${path}`, { headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream' } });
}

/** Reads the stream to its end; the test's own timeout fails it when it never ends. */
async function lastEvent(res: Response): Promise<{ event: string; data: any }> {
  const text = await res.text();
  const events = [...text.matchAll(/^event: (.*)\ndata: (.*)$/gm)];
  const last = events.at(-1)!;
  return { event: last[1]!, data: JSON.parse(last[2]!) };
}

describe('live streams', () => {
  test('at most API_SSE_MAX_PER_TENANT per tenant: the next is 429 JSON; another tenant is not affected; a closed one frees its slot', { timeout: 60_000 }, async () => {
    const app = createApp(h.deps).app;
    const first = await open(app, jobA, h.keys.admin);
    const second = await open(app, jobA, h.keys.admin, 'metrics');
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    const third = await open(app, jobA, h.keys.admin);
    assert.equal(third.status, 429);
    const body = (await third.json()) as any;
    assert.equal(body.error.code, 'too_many_streams');
    const other = await open(app, jobB, h.keys.adminB);
    assert.equal(other.status, 200, "tenant B's own budget");
    await other.body!.cancel();
    await first.body!.cancel();
    // The slot is freed when the stream notices the client went away (its next poll).
    for (;;) {
      const again = await open(app, jobA, h.keys.admin);
      if (again.status === 200) {
        await again.body!.cancel();
        break;
      }
      await again.body?.cancel();
      await new Promise((r) => setTimeout(r, 50));
    }
    await second.body!.cancel();
  });

  test('a stream ends at its maximum lifetime with event close', { timeout: 60_000 }, async () => {
    const app = createApp({ ...h.deps, config: { ...h.config, API_SSE_MAX_SECONDS: 1 } }).app;
    const res = await open(app, jobA, h.keys.admin);
    assert.equal(res.status, 200);
    assert.deepEqual(await lastEvent(res), { event: 'close', data: { event: 'close', reason: 'max-lifetime' } });
  });

  test('revoking the key ends its open streams', { timeout: 60_000 }, async () => {
    const app = createApp(h.deps).app;
    const key = (await (await h.request('POST', '/v1/keys', { body: { name: 'streamer', scopes: ['jobs:read'] } })).json()) as any;
    const res = await open(app, jobA, key.key);
    assert.equal(res.status, 200);
    const ended = lastEvent(res);
    assert.equal((await h.request('DELETE', `/v1/keys/${key.id}`)).status, 200);
    // The revoke went through another app (another replica): this one sees it within its key cache time.
    const end = await ended;
    assert.equal(end.event, 'error');
    assert.equal(end.data.code, 'unauthorized');
  });

  test('shutdown ends every stream and refuses new ones with 503', { timeout: 60_000 }, async () => {
    const { app, liveStreams } = createApp(h.deps);
    const a = await open(app, jobA, h.keys.admin);
    const b = await open(app, jobB, h.keys.adminB, 'metrics');
    const ends = Promise.all([lastEvent(a), lastEvent(b)]);
    await liveStreams.closeAll();
    assert.equal(liveStreams.count(), 0, 'every stream released');
    for (const end of await ends) assert.deepEqual(end, { event: 'close', data: { event: 'close', reason: 'shutdown' } });
    const late = await open(app, jobA, h.keys.admin);
    assert.equal(late.status, 503);
    assert.equal(((await late.json()) as any).error.code, 'unavailable');
  });
});
