/**
 * No input makes the API answer 5xx (DESIGN.md §6): seeded random mutations of valid requests —
 * wrong types, absurd numbers, unknown and missing fields, garbage bodies, odd paths and queries —
 * each must get a 2xx or a 4xx whose body is the JSON error shape.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, type Harness } from './harness.js';

let h: Harness;
before(async () => (h = await createHarness({ API_RATE_LIMIT_PER_MINUTE: 100_000 })));
after(() => h.close());

/** mulberry32: a small seeded generator, so a failure replays exactly. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VALID_PRETRAIN = {
  type: 'pretrain',
  dataset: 'fmnist@1',
  model: { arch: 'vit_tiny', patch: 4, posEmbed: 'sincos' },
  moco: { temperature: 0.2, projector: { hiddenDim: 64 } },
  optim: { lr: 1.5e-4, batch: 256, betas: [0.9, 0.999] },
  augment: { blurProb: [1, 0.1] },
  epochs: 10,
  labels: { branch: 'main' },
  webhook: { url: 'https://example.com/hook', events: ['job.succeeded'] },
};

function mutate(value: unknown, random: () => number): unknown {
  const weird = [null, true, -1, 0, 1e308, -1e-308, 2 ** 53 + 1, '', 'x'.repeat(5000), '😀', 'NaN', [], {}, [1, [2, [3]]], { a: { b: {} } }, '__proto__', 'constructor'];
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)];
  if (value === null || typeof value !== 'object') return random() < 0.7 ? pick(weird) : value;
  const copy: any = Array.isArray(value) ? [...value] : { ...(value as object) };
  const keys = Object.keys(copy);
  const r = random();
  if (r < 0.15 && keys.length) delete copy[pick(keys)];
  else if (r < 0.3) copy[pick(['extra', '__proto__', 'constructor', 'type', '0'])] = pick(weird);
  else if (keys.length) {
    const k = pick(keys);
    copy[k] = mutate(copy[k], random);
  }
  return copy;
}

function assertClean(res: Response, body: string, what: string) {
  assert.ok(res.status < 500, `${what} answered ${res.status}: ${body.slice(0, 300)}`);
  if (res.status >= 400) {
    const parsed = JSON.parse(body);
    assert.equal(typeof parsed.error?.code, 'string', `${what}: error.code in ${body.slice(0, 300)}`);
    assert.equal(typeof parsed.error?.message, 'string', `${what}: error.message`);
  }
}

test('mutated job specs never get a 5xx', async () => {
  const random = rng(20261130);
  const seen = new Set<number>();
  for (let i = 0; i < 300; i++) {
    let spec: unknown = VALID_PRETRAIN;
    const depth = 1 + Math.floor(random() * 3);
    for (let d = 0; d < depth; d++) spec = mutate(spec, random);
    const res = await h.request('POST', '/v1/jobs', { body: spec, headers: random() < 0.2 ? { 'idempotency-key': String(random()) } : {} });
    assertClean(res, await res.text(), `spec #${i} ${JSON.stringify(spec).slice(0, 200)}`);
    seen.add(res.status);
  }
  // Both schema refusals and well-formed specs naming an unknown dataset were exercised.
  assert.ok(seen.has(400) && seen.has(422), `statuses seen: ${[...seen]}`);
});

test('garbage bodies, content types and sizes never get a 5xx', async () => {
  const bodies = ['', '{', 'null', '[]', '"x"', '1e999', '{"type":', '\u0000', '{"a":'.repeat(2000), 'x'.repeat(2 * 1024 * 1024)];
  const types = ['application/json', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', ''];
  for (const raw of bodies) {
    for (const type of types) {
      for (const path of ['/v1/jobs', '/v1/datasets', '/v1/keys', '/v1/datasets/x/versions']) {
        const res = await h.request('POST', path, { raw, headers: type ? { 'content-type': type } : {} });
        assertClean(res, await res.text(), `POST ${path} (${type}) ${JSON.stringify(raw.slice(0, 20))}`);
      }
    }
  }
});

test('odd ids, paths and queries never get a 5xx', async () => {
  const ids = ['x', '00000000-0000-0000-0000-000000000000', '%00', '..%2F..', "1' or '1'='1", 'é', '9'.repeat(400)];
  const queries = ['', '?limit=0', '?limit=-1', '?limit=abc', '?cursor=zzz', '?state=bogus', '?label=nocolon', '?after=-5', '?from_step=9e99', '?ttl=0', '?file=../../etc', '?name=' + 'a,'.repeat(300)];
  for (const id of ids) {
    for (const q of queries) {
      for (const path of [`/v1/jobs/${id}`, `/v1/jobs/${id}/events`, `/v1/jobs/${id}/metrics`, `/v1/jobs/${id}/logs`, `/v1/jobs/${id}/checkpoints`, `/v1/jobs/${id}/checkpoints/${id}/download`, `/v1/jobs/${id}/evaluations/comparison`, `/v1/datasets/${id}`, `/v1/datasets/${id}/versions/${id}`, `/v1/jobs${q}`]) {
        const res = await h.request('GET', path + q);
        assertClean(res, await res.text(), `GET ${path}${q}`);
      }
      for (const path of [`/v1/jobs/${id}/cancel`, `/v1/jobs/${id}/retry`, `/v1/jobs/${id}/retrain`, `/v1/datasets/${id}/versions/${id}/finalize`]) {
        const res = await h.request('POST', path + q, { body: { dataset: id } });
        assertClean(res, await res.text(), `POST ${path}${q}`);
      }
    }
  }
});

/**
 * Every route of the OpenAPI document, FUZZ_REQUESTS times in all (`npm run fuzz`: 10,000; a few
 * hundred in `npm test`): real ids of this tenant and of another one (scoping), garbage ids, odd
 * queries, mutated and hostile bodies (deeply nested, huge, internal webhook targets, traversal
 * names), missing, foreign and under-scoped keys. Zero 5xx, a JSON error every time; another
 * tenant's resource is never answered 2xx. Prints the count and the status histogram.
 */
test('every route under hostile requests: zero 5xx, JSON errors, no cross-tenant answer', async () => {
  const strict = await createHarness({ API_RATE_LIMIT_PER_MINUTE: 1_000_000, WEBHOOK_ALLOW_PRIVATE: false });
  try {
    const total = Number(process.env.FUZZ_REQUESTS ?? 600);
    const random = rng(20261201);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
    const { seedReadyDataset, pretrain } = await import('./harness.js');
    await seedReadyDataset(strict, strict.tenantA, 'fmnist', 1);
    await seedReadyDataset(strict, strict.tenantB, 'theirs', 1);
    const mine = ((await (await strict.request('POST', '/v1/jobs', { body: pretrain('fmnist') })).json()) as { id: string }).id;
    const theirs = ((await (await strict.request('POST', '/v1/jobs', { key: strict.keys.adminB, body: pretrain('theirs') })).json()) as { id: string }).id;
    const doc = (await (await strict.app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> };
    const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).filter((m) => ['get', 'post', 'put', 'patch', 'delete'].includes(m)).map((m) => ({ method: m.toUpperCase(), path })));
    assert.ok(operations.length >= 20, `${operations.length} operations`);

    const ids = [mine, theirs, '00000000-0000-0000-0000-000000000000', 'x', '%00', '..%2F..%2Fadmin', "1'--", 'fmnist', 'theirs', 'latest', 'v1', '1', '9'.repeat(300), 'é'];
    const queries = ['', '?limit=0', '?limit=99999', '?cursor=' + Buffer.from('-'.repeat(36)).toString('base64url'), '?cursor=%ff', '?state=running&state=x', '?label=a:b&label=c', '?after=-1', '?from_step=1e308', '?ttl=-5', '?file=../../etc/passwd', '?redirect=maybe'];
    const nested = (n: number) => '['.repeat(n) + ']'.repeat(n);
    const hostileBodies: (() => { raw?: string; body?: unknown })[] = [
      () => ({ raw: nested(20_000) }),
      () => ({ raw: '{"a":'.repeat(5000) + '1' + '}'.repeat(5000) }),
      () => ({ raw: JSON.stringify({ x: 'y'.repeat(3 * 1024 * 1024) }) }),
      () => ({ body: pretrain('fmnist', { webhook: { url: pick(['http://169.254.169.254/latest/meta-data', 'http://[::ffff:127.0.0.1]/', 'http://[64:ff9b::a9fe:a9fe]/', 'http://10.0.0.1:6379/', 'http://localhost:5432/', 'gopher://x/', 'http://user:pw@example.com/']) } }) }),
      () => ({ body: { options: { format: pick(['idx', 'imagefolder', 'zip', 1]) }, fileName: pick(['../../etc/passwd', 'a/b', '.hidden', 'x'.repeat(200), 'ok.tar.gz']), sizeBytes: pick([1, -1, 2 ** 60, 'x']) } }),
      () => ({ body: { name: pick(['ci', '', 'x'.repeat(500)]), scopes: pick([['admin'], ['root'], 'admin', []]) } }),
      () => ({ body: { uploadId: pick(['x', '', '../']), parts: pick([[], [{ partNumber: 1, etag: 'x' }], 'x', [{ partNumber: -1 }]]) } }),
      () => ({ body: mutate(mutate(pretrain('fmnist'), random), random) }),
      () => ({ body: { dataset: pick(['fmnist', 'theirs', 'fmnist@9']), fromCheckpoint: pick(['latest', 'v999', '../']), alias: pick(['best', 'v1', 'x'.repeat(40)]) } }),
      () => ({ raw: pick(['', 'null', '[]', '{"__proto__":{"admin":true}}', '\u0000', '1e999']) }),
    ];
    const keys = [strict.keys.admin, strict.keys.admin, strict.keys.readOnly, strict.keys.datasetsOnly, strict.keys.adminB, null, 'mom_' + 'x'.repeat(40), 'Bearer'];
    const statuses = new Map<number, number>();
    let fiveXX = 0;
    for (let i = 0; i < total; i++) {
      const op = pick(operations);
      const path = op.path.replace(/\{[^}]+\}/g, () => encodeURIComponent(pick(ids)).replace(/%25/g, '%')) + (random() < 0.4 ? pick(queries) : '');
      const key = pick(keys);
      const opts: Parameters<Harness['request']>[2] = { key };
      if (op.method !== 'GET' && op.method !== 'DELETE') Object.assign(opts, pick(hostileBodies)());
      if (random() < 0.15) opts.headers = { 'content-type': pick(['text/plain', 'application/json; charset=utf-16', 'multipart/form-data', '']), 'idempotency-key': pick(['k', 'x'.repeat(300), '\u00e9']) };
      const res = await strict.request(op.method, path, opts);
      const text = await res.text();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status >= 500) fiveXX++;
      const what = `#${i} ${op.method} ${path} key=${String(key).slice(0, 8)}`;
      assertClean(res, text, what);
      if (res.status >= 400) assert.doesNotThrow(() => JSON.parse(text), what);
      // Scoping: tenant A never reads tenant B's job, and the other way round.
      if (res.status < 300 && op.method === 'GET') {
        const crossTenant = (key === strict.keys.adminB && path.includes(mine)) || (key !== strict.keys.adminB && path.includes(theirs));
        assert.ok(!crossTenant, `${what} answered ${res.status} for another tenant's resource`);
      }
    }
    console.log(`fuzz: ${total} requests over ${operations.length} operations, ${fiveXX} answered 5xx; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
    assert.equal(fiveXX, 0);
  } finally {
    await strict.close();
  }
});
