import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import postgres from 'postgres';
import { createHarness, forceState, pretrain, randomUUID, seedCheckpoint, seedReadyDataset, type Harness } from './harness.js';
import { CANCEL_CHANNEL } from '../../../contracts/outbox.js';
import { createApp } from '../../../api/app.js';

let h: Harness;

function assertErrorShape(body: any, code?: string) {
  assert.equal(typeof body.error, 'object', JSON.stringify(body));
  assert.equal(typeof body.error.code, 'string');
  assert.equal(typeof body.error.message, 'string');
  assert.ok(Array.isArray(body.error.details));
  if (code) assert.equal(body.error.code, code, JSON.stringify(body));
}

async function submit(body: unknown, headers: Record<string, string> = {}, key?: string) {
  const res = await h.request('POST', '/v1/jobs', { body, headers, key });
  return { res, body: (await res.json()) as any };
}

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'fmnist', 2);
  await seedReadyDataset(h, h.tenantB, 'secret-data', 1);
});
after(async () => h.close());

describe('POST /v1/jobs', () => {
  test('a valid pretrain spec creates a queued job, resolves the dataset and writes its enqueue to the outbox', async () => {
    const { res, body } = await submit(pretrain('fmnist', { labels: { branch: 'main' } }));
    assert.equal(res.status, 201, JSON.stringify(body));
    assert.equal(body.state, 'queued');
    assert.equal(body.type, 'pretrain');
    assert.equal(body.dataset, 'fmnist@2', 'name alone resolves to the newest ready version');
    assert.equal(body.spec.dataset, 'fmnist@2');
    assert.equal(body.spec.optim.batch, 64);
    assert.equal(body.spec.method, 'mocov3', 'defaults are applied and stored');
    assert.equal(body.spec.moco.momentumSchedule, 'cosine');
    assert.equal(res.headers.get('location'), `/v1/jobs/${body.id}`);
    const outbox = await h.database.sql`select topic, payload from outbox where payload->>'jobId' = ${body.id} order by id`;
    // No webhook: the job.queued event would reach no one, so no outbox row announces it.
    assert.deepEqual(outbox.map((r) => r.topic), ['job.enqueue']);
    assert.deepEqual(outbox[0]!.payload, { jobId: body.id, tenantId: h.tenantA, type: 'pretrain' });
    const events = await h.database.sql`select to_state, reason from job_events where job_id = ${body.id}`;
    assert.deepEqual([...events], [{ to_state: 'queued', reason: 'submitted' }]);
  });

  test('the job.queued event goes to the outbox when the job has a webhook that wants it', async () => {
    const topics = async (webhook: unknown) => {
      const { res, body } = await submit(pretrain('fmnist', { webhook }));
      assert.equal(res.status, 201, JSON.stringify(body));
      const rows = await h.database.sql`select topic, payload->>'event' as event from outbox where payload->>'jobId' = ${body.id} order by id`;
      return rows.map((r) => (r.topic === 'job.event' ? r.event : r.topic));
    };
    assert.deepEqual(await topics({ url: 'http://127.0.0.1:9/hook' }), ['job.enqueue', 'job.queued'], 'all events');
    assert.deepEqual(await topics({ url: 'http://127.0.0.1:9/hook', events: [] }), ['job.enqueue', 'job.queued'], 'an empty list is all events');
    assert.deepEqual(await topics({ url: 'http://127.0.0.1:9/hook', events: ['job.queued', 'job.succeeded'] }), ['job.enqueue', 'job.queued']);
    assert.deepEqual(await topics({ url: 'http://127.0.0.1:9/hook', events: ['job.succeeded'] }), ['job.enqueue'], 'filtered out');
  });

  test('name@N pins that version', async () => {
    const { res, body } = await submit(pretrain('fmnist@1'));
    assert.equal(res.status, 201);
    assert.equal(body.dataset, 'fmnist@1');
  });

  test('malformed JSON is a 400 in the error shape', async () => {
    const res = await h.request('POST', '/v1/jobs', { raw: '{"type": "pretrain", ' });
    assert.equal(res.status, 400);
    assertErrorShape(await res.json(), 'malformed_json');
  });

  test('a body that is not JSON content is refused with 415, not parsed', async () => {
    const res = await h.request('POST', '/v1/jobs', { raw: 'type=pretrain', headers: { 'content-type': 'text/plain' } });
    assert.equal(res.status, 415);
    assertErrorShape(await res.json(), 'unsupported_media_type');
  });

  test('wrong types name the field', async () => {
    const { res, body } = await submit(pretrain('fmnist', { epochs: 'ten', optim: { batch: '64' } }));
    assert.equal(res.status, 400);
    assertErrorShape(body, 'validation_failed');
    const paths = body.error.details.map((d: any) => d.path);
    assert.ok(paths.includes('epochs'), JSON.stringify(paths));
    assert.ok(paths.includes('optim.batch'), JSON.stringify(paths));
  });

  test('unknown fields are rejected, each named, at any depth', async () => {
    const { res, body } = await submit(pretrain('fmnist', { learningRate: 1, model: { arch: 'vit_tiny', patches: 4 } }));
    assert.equal(res.status, 400);
    assertErrorShape(body, 'validation_failed');
    const paths = body.error.details.map((d: any) => d.path).sort();
    assert.deepEqual(paths, ['learningRate', 'model.patches']);
  });

  test('out-of-range hyperparameters: batch 0, negative lr, temperature <= 0', async () => {
    const { res, body } = await submit(pretrain('fmnist', { optim: { batch: 0, lr: -0.1 }, moco: { temperature: 0 } }));
    assert.equal(res.status, 400);
    const paths = body.error.details.map((d: any) => d.path).sort();
    assert.deepEqual(paths, ['moco.temperature', 'optim.batch', 'optim.lr']);
    const neg = await submit(pretrain('fmnist', { moco: { temperature: -1 } }));
    assert.equal(neg.res.status, 400);
    assert.equal(neg.body.error.details[0].path, 'moco.temperature');
  });

  test('an unknown type or a non-object body is a 400', async () => {
    const a = await submit({ type: 'finetune', dataset: 'fmnist' });
    assert.equal(a.res.status, 400);
    assert.equal(a.body.error.details[0].path, 'type');
    const b = await submit([1, 2]);
    assert.equal(b.res.status, 400);
    assertErrorShape(b.body, 'validation_failed');
  });

  test('an unknown dataset, or another tenant\'s, is a 422 naming `dataset`', async () => {
    for (const ref of ['nope', 'fmnist@9', 'secret-data']) {
      const { res, body } = await submit(pretrain(ref));
      assert.equal(res.status, 422, ref);
      assertErrorShape(body, 'dataset_not_found');
      assert.equal(body.error.details[0].path, 'dataset');
      assert.ok(!JSON.stringify(body).includes(h.tenantB));
    }
  });

  test('a body over API_MAX_BODY_BYTES is a 413', async () => {
    const huge = pretrain('fmnist', { labels: { big: 'x'.repeat(256) } }) as any;
    huge.padding = 'y'.repeat(h.config.API_MAX_BODY_BYTES + 10);
    const res = await h.request('POST', '/v1/jobs', { body: huge });
    assert.equal(res.status, 413);
    assertErrorShape(await res.json(), 'payload_too_large');
  });

  test('resources.gpus above 1 is refused, naming the field (a run trains on one GPU)', async () => {
    const { res, body } = await submit(pretrain('fmnist', { resources: { gpus: 2 } }));
    assert.equal(res.status, 400);
    assertErrorShape(body);
    assert.equal(body.error.details[0].path, 'resources.gpus');
    assert.match(body.error.details[0].message, /one GPU/);
    assert.equal((await submit(pretrain('fmnist', { resources: { gpus: 0 } }))).res.status, 201);
  });

  test('a webhook URL that is not http(s) is refused, naming webhook.url', async () => {
    const { res, body } = await submit(pretrain('fmnist', { webhook: { url: 'ftp://example.com/hook' } }));
    assert.equal(res.status, 400);
    assert.equal(body.error.details[0].path, 'webhook.url');
  });

  test('a webhook on a private address is refused unless WEBHOOK_ALLOW_PRIVATE', async () => {
    const strict = createApp({ ...h.deps, config: { ...h.config, WEBHOOK_ALLOW_PRIVATE: false } }).app;
    const post = (url: string) =>
      strict.request('/v1/jobs', { method: 'POST', headers: { authorization: `Bearer ${h.keys.admin}`, 'content-type': 'application/json' }, body: JSON.stringify(pretrain('fmnist', { webhook: { url } })) });
    for (const url of ['http://127.0.0.1:8080/hook', 'http://10.0.0.7/hook', 'http://[fd00::1]/hook']) {
      const res = await post(url);
      assert.equal(res.status, 400, url);
      const body = (await res.json()) as any;
      assertErrorShape(body, 'validation_failed');
      assert.equal(body.error.details[0].path, 'webhook.url', url);
      assert.match(body.error.details[0].message, /private|loopback|WEBHOOK_ALLOW_PRIVATE/i, url);
    }
    // The same address through this harness, which allows private targets, is accepted.
    assert.equal((await submit(pretrain('fmnist', { webhook: { url: 'http://127.0.0.1:8080/hook' } }))).res.status, 201);
  });
});

describe('Idempotency-Key', () => {
  test('the same key twice yields one job; the replay is marked', async () => {
    const key = `ci-${randomUUID()}`;
    const a = await submit(pretrain('fmnist'), { 'Idempotency-Key': key });
    const b = await submit(pretrain('fmnist'), { 'Idempotency-Key': key });
    assert.equal(a.res.status, 201);
    assert.equal(b.res.status, 201);
    assert.equal(a.body.id, b.body.id);
    assert.equal(b.res.headers.get('idempotent-replayed'), 'true');
    const [{ n }] = (await h.database.sql`select count(*)::int as n from jobs where idempotency_key = ${key}`) as any;
    assert.equal(n, 1);
  });

  test('the same key sent concurrently yields one job and one enqueue', async () => {
    const key = `race-${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 12 }, () => submit(pretrain('fmnist'), { 'Idempotency-Key': key })));
    for (const r of results) assert.equal(r.res.status, 201, JSON.stringify(r.body));
    assert.equal(new Set(results.map((r) => r.body.id)).size, 1);
    const [{ n }] = (await h.database.sql`select count(*)::int as n from outbox where topic = 'job.enqueue' and payload->>'jobId' = ${results[0]!.body.id}`) as any;
    assert.equal(n, 1);
  });

  test('the same key with a different body is a 409 idempotency_key_reused', async () => {
    const key = `reuse-${randomUUID()}`;
    assert.equal((await submit(pretrain('fmnist'), { 'Idempotency-Key': key })).res.status, 201);
    const { res, body } = await submit(pretrain('fmnist', { epochs: 3 }), { 'Idempotency-Key': key });
    assert.equal(res.status, 409);
    assertErrorShape(body, 'idempotency_key_reused');
  });

  test('keys are per tenant: another tenant may use the same key', async () => {
    const key = `shared-${randomUUID()}`;
    await seedReadyDataset(h, h.tenantB, 'fmnist', 1).catch(() => undefined);
    const a = await submit(pretrain('fmnist'), { 'Idempotency-Key': key });
    const b = await submit(pretrain('fmnist'), { 'Idempotency-Key': key }, h.keys.adminB);
    assert.equal(b.res.status, 201, JSON.stringify(b.body));
    assert.notEqual(a.body.id, b.body.id);
  });
});

describe('reading jobs', () => {
  test('get: own job 200; another tenant\'s id is 404 without its data; a malformed id is 400', async () => {
    const { body: job } = await submit(pretrain('fmnist'));
    const own = await h.request('GET', `/v1/jobs/${job.id}`);
    assert.equal(own.status, 200);
    assert.equal(((await own.json()) as any).id, job.id);
    const foreign = await h.request('GET', `/v1/jobs/${job.id}`, { key: h.keys.adminB });
    assert.equal(foreign.status, 404);
    const text = await foreign.text();
    assertErrorShape(JSON.parse(text), 'not_found');
    assert.ok(!text.includes('fmnist'));
    const missing = await h.request('GET', `/v1/jobs/${randomUUID()}`);
    assert.equal(missing.status, 404);
    const bad = await h.request('GET', '/v1/jobs/not-a-uuid');
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as any).error.details[0].path, 'id');
  });

  test('list: filters by state, type and label; cursor pagination visits every job once', async () => {
    const label = `run-${randomUUID().slice(0, 8)}`;
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await submit(pretrain('fmnist', { labels: { batch: label } }))).body.id);
    await forceState(h, ids[0]!, 'running');
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await h.request('GET', `/v1/jobs?label=batch:${label}&limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(res.status, 200);
      const page = (await res.json()) as any;
      assert.ok(page.jobs.length <= 3);
      seen.push(...page.jobs.map((j: any) => j.id));
      cursor = page.nextCursor;
    } while (cursor);
    assert.deepEqual(seen, [...ids].reverse(), 'newest first, each once');
    const running = (await (await h.request('GET', `/v1/jobs?label=batch:${label}&state=running`)).json()) as any;
    assert.deepEqual(running.jobs.map((j: any) => j.id), [ids[0]]);
    const probes = (await (await h.request('GET', `/v1/jobs?label=batch:${label}&type=probe`)).json()) as any;
    assert.equal(probes.jobs.length, 0);
    const foreign = (await (await h.request('GET', `/v1/jobs?label=batch:${label}`, { key: h.keys.adminB })).json()) as any;
    assert.equal(foreign.jobs.length, 0, 'another tenant sees none of them');
  });

  test('list: bad filters are 400 naming the parameter', async () => {
    for (const [q, path] of [['state=sleeping', 'state'], ['limit=0', 'limit'], ['cursor=zzz', 'cursor'], ['label=nocolon', 'label'], ['bogus=1', 'bogus']] as const) {
      const res = await h.request('GET', `/v1/jobs?${q}`);
      assert.equal(res.status, 400, q);
      const body = (await res.json()) as any;
      assertErrorShape(body);
      assert.equal(body.error.details[0].path, path, q);
    }
  });
});

describe('cancel, retry, retrain', () => {
  test('cancel a queued job: canceled at once and gone from BullMQ', async () => {
    const { body: job } = await submit(pretrain('fmnist'));
    await h.deps.queues.train.add('pretrain', { jobId: job.id }, { jobId: job.id });
    const res = await h.request('POST', `/v1/jobs/${job.id}/cancel`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as any;
    assert.equal(body.state, 'canceled');
    assert.equal(body.cancelRequested, true);
    assert.equal(await h.deps.queues.train.getJob(job.id), undefined);
  });

  test('cancel a running job: canceling, flag set, NOTIFY on the cancel channel', async () => {
    const { body: job } = await submit(pretrain('fmnist'));
    await forceState(h, job.id, 'running');
    const listener = postgres(h.database.url, { max: 1 });
    let heardPayload!: (payload: string) => void;
    const heard = new Promise<string>((resolve) => (heardPayload = resolve));
    await listener.listen(CANCEL_CHANNEL, (payload) => heardPayload(payload)); // resolves once LISTEN is registered
    const res = await h.request('POST', `/v1/jobs/${job.id}/cancel`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as any;
    assert.equal(body.state, 'canceling');
    assert.equal(body.cancelRequested, true);
    assert.equal(await heard, job.id);
    await listener.end();
  });

  test('cancel a finished job is 409; another tenant\'s is 404', async () => {
    const { body: job } = await submit(pretrain('fmnist'));
    await forceState(h, job.id, 'succeeded');
    const res = await h.request('POST', `/v1/jobs/${job.id}/cancel`);
    assert.equal(res.status, 409);
    assertErrorShape(await res.json(), 'wrong_job_state');
    assert.equal((await h.request('POST', `/v1/jobs/${job.id}/cancel`, { key: h.keys.adminB })).status, 404);
  });

  test('retry a failed job: queued again with a new enqueue; a queued job cannot be retried', async () => {
    const { body: job } = await submit(pretrain('fmnist'));
    assert.equal((await h.request('POST', `/v1/jobs/${job.id}/retry`)).status, 409);
    await forceState(h, job.id, 'failed');
    const res = await h.request('POST', `/v1/jobs/${job.id}/retry`);
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as any).state, 'queued');
    const [{ n }] = (await h.database.sql`select count(*)::int as n from outbox where topic = 'job.enqueue' and payload->>'jobId' = ${job.id}`) as any;
    assert.equal(n, 2);
  });

  test('retrain: a new pretrain job on another dataset version, initialised from a pinned checkpoint', async () => {
    const { body: job } = await submit(pretrain('fmnist@1', { epochs: 5 }));
    await seedCheckpoint(h, h.tenantA, job.id, 1, { 'state.safetensors': Buffer.from('s1') });
    await seedCheckpoint(h, h.tenantA, job.id, 2, { 'state.safetensors': Buffer.from('s2') });
    await forceState(h, job.id, 'succeeded');
    const res = await h.request('POST', `/v1/jobs/${job.id}/retrain`, { body: { dataset: 'fmnist@2', initFrom: 'latest' } });
    assert.equal(res.status, 201, await res.clone().text());
    const child = (await res.json()) as any;
    assert.equal(child.parentJobId, job.id);
    assert.equal(child.dataset, 'fmnist@2');
    assert.equal(child.spec.epochs, 5, 'the earlier spec is kept');
    assert.deepEqual(child.spec.initFrom, { job: job.id, checkpoint: 'v2' });
    const missing = await h.request('POST', `/v1/jobs/${job.id}/retrain`, { body: { dataset: 'fmnist@2', initFrom: 'v9' } });
    assert.equal(missing.status, 422);
    assert.equal(((await missing.json()) as any).error.details[0].path, 'initFrom.checkpoint');
    const unknownField = await h.request('POST', `/v1/jobs/${job.id}/retrain`, { body: { dataset: 'fmnist@2', lr: 3 } });
    assert.equal(unknownField.status, 400);
    assert.equal((await h.request('POST', `/v1/jobs/${job.id}/retrain`, { key: h.keys.adminB, body: { dataset: 'fmnist' } })).status, 404);
  });
});

describe('probe jobs', () => {
  test('need a succeeded or running pretrain job of the tenant and a checkpoint that exists', async () => {
    const { body: source } = await submit(pretrain('fmnist'));
    const probe = (checkpoint = 'latest', job = source.id) => ({ type: 'probe', source: { job, checkpoint }, epochs: 1 });
    let r = await submit(probe());
    assert.equal(r.res.status, 409, 'a queued source is refused');
    assert.equal(r.body.error.details[0].path, 'source.job');
    await forceState(h, source.id, 'running');
    r = await submit(probe());
    assert.equal(r.res.status, 422, 'no checkpoint yet');
    assertErrorShape(r.body, 'checkpoint_not_found');
    await seedCheckpoint(h, h.tenantA, source.id, 1, { 'backbone.safetensors': Buffer.from('b1') });
    r = await submit(probe());
    assert.equal(r.res.status, 201, JSON.stringify(r.body));
    assert.deepEqual(r.body.spec.source, { job: source.id, checkpoint: 'v1' });
    assert.equal(r.body.dataset, 'fmnist@2', "defaults to the source job's dataset");
    r = await submit(probe('v7'));
    assert.equal(r.res.status, 422);
    r = await submit(probe('latest', randomUUID()));
    assert.equal(r.res.status, 422);
    assertErrorShape(r.body, 'job_not_found');
    r = await submit(probe('latest'), {}, h.keys.adminB);
    assert.equal(r.res.status, 422, "another tenant's source job is unknown to it");
  });
});

describe('events, metrics, logs', () => {
  test('events as JSON, and as SSE resuming after Last-Event-ID, ending when the job is finished', async () => {
    const { body: job } = await submit(pretrain('fmnist'));
    const { transitionJob } = await import('../../../db/jobs.js');
    await transitionJob(h.database.db, job.id, { from: ['queued'], to: 'running', reason: 'runner took it' });
    const list = (await (await h.request('GET', `/v1/jobs/${job.id}/events`)).json()) as any;
    assert.deepEqual(list.events.map((e: any) => e.toState), ['queued', 'running']);
    const firstId = list.events[0].id;

    const res = await h.request('GET', `/v1/jobs/${job.id}/events`, { headers: { accept: 'text/event-stream', 'last-event-id': String(firstId) } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    // Finish the job while the stream is open: the stream must deliver it live, then end.
    setTimeout(() => void transitionJob(h.database.db, job.id, { from: ['running'], to: 'succeeded', reason: 'done' }), 150);
    const text = await res.text();
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(ids.every((id) => id > firstId), 'resumed after Last-Event-ID');
    assert.match(text, /event: state\ndata: .*"toState":"running"/);
    assert.match(text, /"toState":"succeeded"/);
    assert.match(text, /event: end/);
    assert.equal((await h.request('GET', `/v1/jobs/${job.id}/events`, { key: h.keys.adminB })).status, 404);
  });

  test('metrics as time series from a step; logs in order', async () => {
    const { body: job } = await submit(pretrain('fmnist'));
    for (let step = 0; step < 5; step++) {
      await h.database.sql`insert into metrics (job_id, step, name, value) values (${job.id}, ${step}, 'loss', ${10 - step}), (${job.id}, ${step}, 'lr', ${step * 0.1})`;
      await h.database.sql`insert into job_logs (job_id, attempt, level, message) values (${job.id}, 1, 'info', ${`step ${step}`})`;
    }
    const m = (await (await h.request('GET', `/v1/jobs/${job.id}/metrics?name=loss&from_step=2`)).json()) as any;
    assert.equal(m.series.length, 1);
    assert.equal(m.series[0].name, 'loss');
    assert.deepEqual(m.series[0].points.map((p: any) => [p.step, p.value]), [[2, 8], [3, 7], [4, 6]]);
    const both = (await (await h.request('GET', `/v1/jobs/${job.id}/metrics`)).json()) as any;
    assert.deepEqual(both.series.map((s: any) => s.name).sort(), ['loss', 'lr']);
    const bad = await h.request('GET', `/v1/jobs/${job.id}/metrics?from_step=-1`);
    assert.equal(bad.status, 400);
    const logs = (await (await h.request('GET', `/v1/jobs/${job.id}/logs?limit=2`)).json()) as any;
    assert.deepEqual(logs.logs.map((l: any) => l.message), ['step 0', 'step 1']);
    const rest = (await (await h.request('GET', `/v1/jobs/${job.id}/logs?after=${logs.nextAfter}`)).json()) as any;
    assert.deepEqual(rest.logs.map((l: any) => l.message), ['step 2', 'step 3', 'step 4']);
    assert.equal((await h.request('GET', `/v1/jobs/${job.id}/metrics`, { key: h.keys.adminB })).status, 404);
    assert.equal((await h.request('GET', `/v1/jobs/${job.id}/logs`, { key: h.keys.adminB })).status, 404);
  });

  test('metrics as SSE: the points so far, new ones as they arrive (kNN monitor included), then the end', async () => {
    const { body: job } = await submit(pretrain('fmnist'));
    const { transitionJob } = await import('../../../db/jobs.js');
    await transitionJob(h.database.db, job.id, { from: ['queued'], to: 'running', reason: 'runner took it' });
    await h.database.sql`insert into metrics (job_id, step, name, value) values (${job.id}, 0, 'knnTop1', 0.3), (${job.id}, 1, 'contrastiveTop1', 0.1)`;
    const res = await h.request('GET', `/v1/jobs/${job.id}/metrics?name=knnTop1,contrastiveTop1`, { headers: { accept: 'text/event-stream' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    setTimeout(async () => {
      await h.database.sql`insert into metrics (job_id, step, name, value) values (${job.id}, 2, 'contrastiveTop1', 0.2), (${job.id}, 2, 'knnTop1', 0.5), (${job.id}, 2, 'loss', 9)`;
      setTimeout(() => void transitionJob(h.database.db, job.id, { from: ['running'], to: 'succeeded', reason: 'done' }), 150);
    }, 150);
    const text = await res.text();
    const points = [...text.matchAll(/^event: metrics\ndata: (.*)$/gm)].flatMap((m) => JSON.parse(m[1]).points.map((p: any) => `${p.name}@${p.step}=${p.value}`));
    assert.deepEqual(points.sort(), ['contrastiveTop1@1=0.1', 'contrastiveTop1@2=0.2', 'knnTop1@0=0.3', 'knnTop1@2=0.5'], 'each point once, only the names asked for');
    assert.match(text, /event: end/);
  });
});
