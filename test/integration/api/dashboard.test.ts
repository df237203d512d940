import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, type Harness } from './harness.js';

let h: Harness;
before(async () => (h = await createHarness()));
after(() => h.close());

test('the dashboard is one self-contained page that only talks to /v1', async () => {
  const res = await h.app.request('/dashboard');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/html/);
  assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'self'/);
  const html = await res.text();
  assert.match(html, /<title>Momentum<\/title>/);
  // Everything it shows comes from the API: each route below is called by the page (its call with
  // `${…}` placeholders where the route has `{…}` parameters), and each call the page makes is a route.
  const doc = (await (await h.app.request('/openapi.json')).json()) as { paths: Record<string, unknown> };
  const calls = [...html.matchAll(/\bapi\((['`])(\/v1\/[^'`?]*)/g)].map((m) => m[2]!);
  const routeRegex = (route: string) => new RegExp('^' + route.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+') + '$');
  for (const path of ['/v1/jobs', '/v1/jobs/{id}', '/v1/jobs/{id}/metrics', '/v1/jobs/{id}/checkpoints', '/v1/jobs/{id}/evaluations', '/v1/jobs/{id}/events', '/v1/jobs/{id}/cancel', '/v1/jobs/{id}/checkpoints/{ref}/download', '/v1/sweeps', '/v1/sweeps/{id}', '/v1/sweeps/{id}/cancel']) {
    assert.ok(doc.paths[path], `${path} is in the API`);
    assert.ok(calls.some((call) => routeRegex(path).test(call)), `the page calls ${path} (its calls: ${calls.join(', ')})`);
  }
  // Named models: the list, a model with its versions, its gate decisions, a version's lineage (drawn).
  for (const path of ['/v1/models', '/v1/models/{name}', '/v1/models/{name}/gates', '/v1/models/{name}/versions/{ref}/lineage']) {
    assert.ok(doc.paths[path], `${path} is in the API`);
    assert.ok(calls.some((call) => routeRegex(path).test(call)), `the page calls ${path}`);
  }
  for (const call of calls) {
    assert.ok(Object.keys(doc.paths).some((route) => routeRegex(route).test(call)), `the page's call ${call} is a route of the API`);
  }
  assert.doesNotMatch(html, /https?:\/\//, 'no external script, style or font');
});

test('the root redirects to the dashboard', async () => {
  const res = await h.app.request('/');
  assert.equal(res.status, 302);
  assert.equal(res.headers.get('location'), '/dashboard');
});
