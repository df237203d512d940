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
