/**
 * The pages a person opens, in a real browser (Debian's Chromium driven by playwright-core, offline):
 * the dashboard with an API key shows the jobs, opens one, draws its loss chart and lists its
 * checkpoints; /docs renders the API reference. Every request that is not to the API's own
 * loopback origin is blocked and recorded, and the test asserts there was none.
 * Chromium comes from scripts/chromium.sh (run by scripts/test.sh).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { createHarness, forceState, pretrain, seedCheckpoint, seedReadyDataset, type Harness } from '../api/harness.js';

const EXECUTABLE = ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find((p) => existsSync(p));

let h: Harness;
let server: ReturnType<typeof serve>;
let origin: string;
let browser: Browser;
let context: BrowserContext;
const offOrigin: string[] = [];

before(async () => {
  assert.ok(EXECUTABLE, "Debian's chromium is not installed: run `bash scripts/chromium.sh` as root");
  h = await createHarness();
  server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((r) => server.once('listening', r));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await chromium.launch({ executablePath: EXECUTABLE, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  context = await browser.newContext();
  // No network: only the API's own origin is reachable; anything else is recorded and refused.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin + '/') || url.startsWith('data:')) return route.continue();
    offOrigin.push(url);
    return route.abort('internetdisconnected');
  });
});

after(async () => {
  await browser?.close();
  if (server) await new Promise((r) => server.close(r));
  await h?.close();
});

test('the dashboard, with a key: jobs listed, a job opened, its loss chart and checkpoints shown', async () => {
  await seedReadyDataset(h, h.tenantA, 'fmnist', 1);
  const job = (await (await h.request('POST', '/v1/jobs', { body: pretrain('fmnist@1') })).json()) as { id: string };
  for (let step = 1; step <= 20; step++) await h.database.sql`insert into metrics (job_id, step, name, value) values (${job.id}, ${step}, 'loss', ${8 - step * 0.2})`;
  await seedCheckpoint(h, h.tenantA, job.id, 1, { 'state.safetensors': new Uint8Array(64), 'backbone.safetensors': new Uint8Array(32) });
  await forceState(h, job.id, 'succeeded');

  const page = await context.newPage();
  await page.goto(`${origin}/dashboard`);
  await page.fill('#key', h.keys.admin);
  await page.click('#save');
  const row = page.locator(`tr.job[data-id="${job.id}"]`);
  await row.waitFor({ timeout: 30_000 });
  await row.click();
  const chart = page.locator('#detail svg.chart path');
  await chart.first().waitFor({ timeout: 30_000 });
  assert.match((await chart.first().getAttribute('d')) ?? '', /^M[\d.]+,[\d.]+(L[\d.]+,[\d.]+){19}$/, 'a 20-point loss curve');
  const checkpoints = page.locator('#detail table', { hasText: 'Version' }).first();
  await checkpoints.waitFor();
  const text = await checkpoints.innerText();
  assert.match(text, /v1/);
  assert.match(text, /latest/);
  assert.equal(await page.locator('#detail button[data-v="1"][data-f="backbone"]').count(), 1, 'a download button for the backbone');
  await page.close();
  assert.deepEqual(offOrigin, [], 'no request left the API origin');
});

test('/docs renders the API reference with no network', async () => {
  const page = await context.newPage();
  const failed: string[] = [];
  page.on('requestfailed', (r) => failed.push(r.url()));
  await page.goto(`${origin}/docs`);
  await page.locator('.swagger-ui .info .title', { hasText: 'Momentum API' }).waitFor({ timeout: 60_000 });
  await page.locator('.opblock').first().waitFor({ timeout: 30_000 });
  const operations = await page.locator('.opblock').count();
  assert.ok(operations >= 30, `only ${operations} operations rendered`);
  assert.ok(await page.getByText('/v1/jobs/{id}/checkpoints', { exact: true }).count(), 'a route is listed');
  await page.close();
  assert.deepEqual(offOrigin, [], 'no request left the API origin');
  assert.deepEqual(failed, [], 'every request of the page succeeded');
});
