/**
 * CI retraining you can trust, end to end: the real API served over HTTP, the CLI as CI runs it, a
 * real runner process, Postgres, Redis and the S3 server. Three generations of a model on two
 * dataset versions: `retrain model@production --promote production --gate …` moves production when
 * the gate passes and exits 7 leaving it where it was when it fails; `model@production` resolves in
 * the probe, the retrain and the download; the third generation's lineage lists both ancestors.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { createRunnerHarness, sha256, tinyPretrain, type RunnerHarness } from './harness.js';

let h: RunnerHarness;
let server: ReturnType<typeof serve>;
let baseUrl: string;
let dir: string;

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/momentum.ts', ...args], {
      env: { ...process.env, MOMENTUM_URL: baseUrl, MOMENTUM_API_KEY: h.apiKey },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

before(async () => {
  h = await createRunnerHarness();
  h.startRunner();
  for (let v = 1; v <= 2; v++) await h.uploadSyntheticDataset('shapes');
  server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((r) => server.once('listening', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  dir = await mkdtemp(join(tmpdir(), 'momentum-promotion-'));
});

after(async () => {
  await new Promise((r) => server?.close(r));
  await h?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const PROBE = ['--probe-epochs', '2', '--probe-batch', '64', '--timeout', '300'];

/** `retrain backbone@production` on a dataset version with a gate; the parsed stdout and the exit code. */
async function retrainAndPromote(dataset: string, gate: string, key: string) {
  const r = await cli(['retrain', 'backbone@production', '--dataset', dataset, '--max-steps', '4', '--promote', 'production', '--gate', gate, '--idempotency-key', key, ...PROBE]);
  let parsed: any = null;
  try {
    parsed = JSON.parse(r.stdout); // one document: { job, probe, top1, gate }
  } catch {
    assert.fail(`retrain --promote printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
  return { ...r, result: parsed };
}

const production = async () => (await h.api('GET', '/v1/models/backbone/versions/production')).body;

test('gated promotions across three generations: fail leaves production, pass moves it; model@production resolves; lineage', async () => {
  // Generation 1: trained, registered by the CLI as production.
  const g1 = await h.submit(tinyPretrain('shapes@1', { maxSteps: 4, checkpointEvery: 4, resources: { backend: 'wasm' } }));
  const g1done = await h.waitForJob(g1.id, (j) => ['succeeded', 'failed', 'canceled'].includes(j.state), 'g1 trained');
  assert.equal(g1done.state, 'succeeded', g1done.error ?? '');
  assert.ok(g1done.runtime.code?.package, `the runner records its code version: ${JSON.stringify(g1done.runtime)}`);
  const registered = await cli(['models', 'register', 'backbone', g1.id, 'latest', '--alias', 'production']);
  assert.equal(registered.code, 0, registered.stderr);
  assert.equal(JSON.parse(registered.stdout).ref, 'backbone@1');

  // Generation 2 on shapes@2 passes its gate: production moves to it.
  const pass2 = await retrainAndPromote('shapes@2', 'linear>=production-101', 'gen2');
  assert.equal(pass2.code, 0, pass2.stderr);
  assert.equal(pass2.result.gate.passed, true);
  assert.equal(pass2.result.gate.moved, true);
  assert.deepEqual([pass2.result.gate.version, pass2.result.gate.previousVersion], [2, 1]);
  const g2 = pass2.result.job as string;
  assert.equal((await production()).jobId, g2);
  // model@production resolved in the retrain (its parent is generation 1) and in the baseline probe.
  const g2job = (await h.api('GET', `/v1/jobs/${g2}`)).body;
  assert.equal(g2job.parentJobId, g1.id);
  assert.deepEqual(g2job.spec.initFrom, { job: g1.id, checkpoint: g2job.spec.initFrom.checkpoint, model: 'backbone@1' });
  const probes = (await h.api('GET', '/v1/jobs?type=probe&limit=10')).body.jobs;
  const baseline = probes.find((p: any) => p.spec.source.model === 'backbone@1');
  assert.ok(baseline, `the incumbent was probed through backbone@production: ${JSON.stringify(probes.map((p: any) => p.spec.source))}\n${pass2.stderr}`);
  assert.equal(baseline.spec.source.job, g1.id);
  assert.equal(baseline.dataset, 'shapes@2', 'on the candidate\'s dataset version');
  // Both numbers of the decision are the two probes' measured top-1.
  const rule = pass2.result.gate.rules[0];
  assert.equal(rule.candidate, pass2.result.top1);
  assert.equal(rule.baseline, baseline.result.top1);

  // A third generation that does not reach the gate: exit 7, production stays on generation 2.
  const fail = await retrainAndPromote('shapes@2', 'linear>=production+101', 'gen3');
  assert.equal(fail.code, 7, `${fail.stdout}\n${fail.stderr}`);
  assert.match(fail.stderr, /gate failed: backbone@production stays v2/);
  assert.equal(fail.result.gate.passed, false);
  assert.equal(fail.result.gate.moved, false);
  assert.equal(fail.result.gate.rules[0].candidate, fail.result.top1);
  assert.equal(typeof fail.result.gate.rules[0].baseline, 'number', 'both numbers are recorded');
  assert.equal((await production()).version, 2, 'production did not move');
  const gates = (await h.api('GET', '/v1/models/backbone/gates')).body.gates;
  assert.deepEqual(gates.map((g: any) => g.passed), [false, true]);
  assert.equal((await h.api('GET', '/v1/models/backbone/versions')).body.versions.length, 2, 'the failed candidate was not registered');
  const events = (await h.api('GET', `/v1/jobs/${fail.result.probe}/events`)).body.events.map((e: any) => e.kind);
  assert.ok(events.includes('gate.failed') && !events.includes('model.alias.moved'), events.join(','));
  const g3 = fail.result.job as string;

  // Registered by hand after all (as staging), the third generation's lineage lists both ancestors
  // with their dataset versions, manifest digests and code versions.
  const staged = await cli(['models', 'register', 'backbone', g3, 'latest', '--alias', 'staging']);
  assert.equal(staged.code, 0, staged.stderr);
  const lineage = await cli(['models', 'lineage', 'backbone@staging']);
  assert.equal(lineage.code, 0, lineage.stderr);
  const chain = JSON.parse(lineage.stdout).lineage;
  assert.deepEqual(
    chain.map((e: any) => [e.jobId, e.modelVersion?.version, e.dataset.ref]),
    [
      [g3, 3, 'shapes@2'],
      [g2, 2, 'shapes@2'],
      [g1.id, 1, 'shapes@1'],
    ],
  );
  for (const e of chain) {
    assert.match(e.dataset.manifestSha256, /^[0-9a-f]{64}$/);
    assert.ok(e.codeVersion?.package, 'each generation names the code that trained it');
  }

  // model@production in a download: the CLI verifies the sha256 of generation 2's backbone.
  const target = join(dir, 'backbone.safetensors');
  const download = await cli(['checkpoints', 'download', 'backbone@production', '-o', target]);
  assert.equal(download.code, 0, download.stderr);
  const cks = (await h.api('GET', `/v1/jobs/${g2}/checkpoints`)).body.checkpoints;
  const registeredVersion = (await production()).checkpointVersion;
  const expected = cks.find((c: any) => c.version === registeredVersion).files['backbone.safetensors'].sha256;
  assert.equal(sha256(await readFile(target)), expected);
});
