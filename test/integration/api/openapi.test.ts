/** The OpenAPI document as generated clients see it: every operation named, names unique. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, type Harness } from './harness.js';

let h: Harness;
before(async () => (h = await createHarness()));
after(() => h.close());

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'] as const;

test('every operation has a unique camelCase operationId', async () => {
  const doc = (await (await h.app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, { operationId?: string }>> };
  const seen = new Map<string, string>();
  let operations = 0;
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      operations++;
      const where = `${method.toUpperCase()} ${path}`;
      assert.ok(op.operationId, `${where} has no operationId`);
      assert.match(op.operationId, /^[a-z][A-Za-z0-9]*$/, `${where}: operationId ${op.operationId} is not camelCase`);
      assert.ok(!seen.has(op.operationId), `${where} reuses ${op.operationId} of ${seen.get(op.operationId)}`);
      seen.set(op.operationId, where);
    }
  }
  assert.ok(operations >= 30, `only ${operations} operations found`);
});

test('a misspelt field is answered with the nearest known one', async () => {
  const res = await h.request('POST', '/v1/jobs', { body: { type: 'pretrain', dataset: 'x', optim: { bacth: 64 } } });
  assert.equal(res.status, 400);
  const body = (await res.json()) as { error: { message: string; details: { path: string; message: string }[] } };
  assert.equal(body.error.message, 'optim.bacth: unknown field; did you mean batch?');
  assert.deepEqual(body.error.details.map((d) => d.path), ['optim.bacth']);
});

test('/docs is served entirely by the API from swagger-ui-dist: no external URL, every asset answers', async () => {
  const res = await h.app.request('/docs');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'self'/);
  const html = await res.text();
  assert.doesNotMatch(html, /https?:\/\//, 'no CDN or other origin');
  const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
  assert.ok(assets.includes('/docs/swagger-ui-bundle.js'), assets.join(' '));
  const { readFile } = await import('node:fs/promises');
  const { createRequire } = await import('node:module');
  const dist = createRequire(import.meta.url).resolve('swagger-ui-dist/swagger-ui-bundle.js');
  for (const asset of assets) {
    const r = await h.app.request(asset);
    assert.equal(r.status, 200, asset);
    const body = Buffer.from(await r.arrayBuffer());
    assert.ok(body.length > 0, asset);
    if (asset === '/docs/swagger-ui-bundle.js') assert.ok(body.equals(await readFile(dist)), 'the pinned package file, byte for byte');
  }
  const init = await (await h.app.request('/docs/init.js')).text();
  assert.match(init, /url: '\/openapi\.json'/);
  assert.match(init, /validatorUrl: null/);
  assert.equal((await h.app.request('/docs/../package.json')).status, 404);
});
