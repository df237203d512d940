/**
 * Sweeps through the real API, a real runner process, Postgres, Redis and the S3 server: a 2 × 2
 * grid becomes 4 pretrain jobs, 4 probes and a 4-row table; a replay with the same Idempotency-Key
 * is the same sweep; canceling a sweep cancels its jobs; bad grids are 400s naming the field.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { SweepDriver } from '../../../api/sweeps/driver.js';
import { createLogger } from '../../../common/logger.js';
import { createRunnerHarness, eventually, tinyPretrain, type RunnerHarness } from './harness.js';

let h: RunnerHarness;
let driver: SweepDriver;
const TERMINAL = ['succeeded', 'failed', 'canceled'];

before(async () => {
  h = await createRunnerHarness();
  driver = new SweepDriver({ deps: h.deps, logger: createLogger('silent'), intervalMs: 200 });
  driver.start();
  // Two runners: the sweep's budget lets two of its jobs run at once.
  h.startRunner();
  h.startRunner();
  // Generous: on a loaded shared machine the first ingest (a fresh child process) can take minutes.
  await h.uploadSyntheticDataset('shapes', { perClass: 16, timeoutMs: 600_000 });
});

after(async () => {
  await driver?.stop();
  await h?.close();
});

const base = (extra: Record<string, unknown> = {}) => {
  const { type: _type, ...spec } = tinyPretrain('shapes', { maxSteps: 3, checkpointEvery: 3, resources: { backend: 'wasm' }, ...extra });
  return spec;
};

const sweepJobs = (id: string) => h.database.sql`select id, type, state from jobs where spec->'labels'->>'sweep' = ${id} order by created_at`;

test('a 2 × 2 sweep: 4 pretrain jobs, 4 probes, a 4-row table (JSON and CSV); a replay returns the same sweep', async () => {
  const request = {
    base: base(),
    grid: { 'optim.lr': [1e-3, 3e-3], 'model.posEmbed': ['sincos', 'learned'] },
    probe: { epochs: 2, batch: 32, lr: 1, resources: { backend: 'wasm' } },
    budget: { maxConcurrent: 2 },
  };
  const created = await h.api('POST', '/v1/sweeps', request, { 'idempotency-key': 'sweep-2x2' });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  assert.equal(created.headers.get('location'), `/v1/sweeps/${id}`);
  assert.equal(created.body.rows.length, 4);
  assert.equal(created.body.runs.submitted, 2, 'budget.maxConcurrent jobs go out at once');
  assert.equal(created.body.spec.base.dataset, 'shapes@1', 'the dataset version is pinned');

  const replay = await h.api('POST', '/v1/sweeps', request, { 'idempotency-key': 'sweep-2x2' });
  assert.equal(replay.status, 201);
  assert.equal(replay.body.id, id);
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  const reused = await h.api('POST', '/v1/sweeps', { ...request, seeds: [1] }, { 'idempotency-key': 'sweep-2x2' });
  assert.equal(reused.status, 409);
  assert.equal(reused.body.error.code, 'idempotency_key_reused');

  let last: any;
  const done = await eventually(async () => {
    last = (await h.api('GET', `/v1/sweeps/${id}`)).body;
    if (process.env.TEST_LOG_LEVEL) console.error(new Date().toISOString(), JSON.stringify(last.runs), last.rows.map((r: any) => `${r.pretrainState}/${r.probeState}`).join(' '));
    return last.state !== 'running' && last;
  }, 'the sweep to complete', 600_000).catch((err: Error) => {
    throw new Error(`${err.message}; last seen: ${JSON.stringify(last)}`);
  });
  assert.equal(done.state, 'completed', JSON.stringify(done));
  assert.deepEqual(done.runs, { total: 4, submitted: 4, finished: 4, probed: 4 });

  const jobs = await sweepJobs(id);
  assert.equal(jobs.filter((j) => j.type === 'pretrain').length, 4, 'one pretrain job per setting, none duplicated by the replay');
  assert.equal(jobs.filter((j) => j.type === 'probe').length, 4);
  assert.ok(jobs.every((j) => j.state === 'succeeded'), JSON.stringify(jobs));

  assert.deepEqual(done.columns, ['optim.lr', 'model.posEmbed']);
  assert.deepEqual(
    done.rows.map((r: any) => [r.values['optim.lr'], r.values['model.posEmbed']]),
    [
      [1e-3, 'sincos'],
      [1e-3, 'learned'],
      [3e-3, 'sincos'],
      [3e-3, 'learned'],
    ],
  );
  for (const row of done.rows) {
    assert.equal(row.pretrainState, 'succeeded');
    assert.equal(row.probeState, 'succeeded');
    assert.ok(row.linearTop1 >= 0 && row.linearTop1 <= 1, JSON.stringify(row));
    assert.ok(Number.isFinite(row.finalLoss) && row.steps === 3);
    assert.ok(row.minutes > 0);
    assert.equal(typeof row.spiked, 'boolean');
  }
  // Each row's probe is of its own run.
  const [probeOfFirst] = await h.database.sql`select spec->'source'->>'job' as source from jobs where id = ${done.rows[0].probeJobId}`;
  assert.equal(probeOfFirst!.source, done.rows[0].pretrainJobId);

  const csv = await h.api('GET', `/v1/sweeps/${id}/results?format=csv`);
  assert.equal(csv.status, 200);
  assert.match(csv.headers.get('content-type') ?? '', /text\/csv/);
  assert.match(csv.headers.get('content-disposition') ?? '', /attachment; filename="sweep-.*\.csv"/);
  const lines = (csv.body as string).trim().split('\n');
  assert.equal(lines.length, 5);
  assert.ok(lines[0]!.startsWith('index,optim.lr,model.posEmbed,linearTop1,linearTop5,knnTop1,finalLoss'), lines[0]);
  assert.ok(lines[2]!.startsWith('1,0.001,learned,'), lines[2]);
  const table = await h.api('GET', `/v1/sweeps/${id}/results?format=json`);
  assert.deepEqual(table.body.rows, done.rows);

  const listed = await h.api('GET', '/v1/sweeps');
  assert.ok(listed.body.sweeps.some((s: any) => s.id === id));
});

test('canceling a sweep cancels its queued and running jobs and submits no more', async () => {
  const created = await h.api('POST', '/v1/sweeps', {
    base: base({ maxSteps: 400, checkpointEvery: 50 }),
    grid: { 'optim.lr': [1e-3, 2e-3, 3e-3] },
    budget: { maxConcurrent: 2 },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  await eventually(async () => (await sweepJobs(id)).some((j) => j.state === 'running'), 'a job of the sweep to run', 600_000);

  const canceled = await h.api('POST', `/v1/sweeps/${id}/cancel`);
  assert.equal(canceled.status, 200, JSON.stringify(canceled.body));
  assert.equal(canceled.body.state, 'canceled');
  assert.equal(canceled.body.reason, 'canceled by user');
  const ended = await eventually(async () => {
    const jobs = await sweepJobs(id);
    return jobs.every((j) => TERMINAL.includes(j.state)) && jobs;
  }, 'every job of the sweep to end', 600_000);
  assert.deepEqual(ended.map((j) => j.state), ['canceled', 'canceled']);
  // The driver keeps passing: nothing new goes out for the third setting.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal((await sweepJobs(id)).length, 2);
  const after = await h.api('GET', `/v1/sweeps/${id}`);
  assert.deepEqual(after.body.rows.map((r: any) => r.pretrainState), ['canceled', 'canceled', 'not submitted']);
  const again = await h.api('POST', `/v1/sweeps/${id}/cancel`);
  assert.equal(again.status, 200, 'canceling a canceled sweep is a no-op');
});

test('a sweep whose jobs ran its total minutes stops: running jobs canceled, no more submitted', async () => {
  const created = await h.api('POST', '/v1/sweeps', {
    base: base({ maxSteps: 400, checkpointEvery: 50 }),
    grid: { 'optim.lr': [1e-3, 2e-3, 3e-3] },
    // 0.6 s of job time: spent by the first running job long before its 400 steps are done.
    budget: { maxConcurrent: 2, totalMinutes: 0.01 },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  const stopped = await eventually(async () => {
    const s = await h.api('GET', `/v1/sweeps/${id}`);
    return s.body.state !== 'running' && s.body;
  }, 'the sweep to stop on its budget', 600_000);
  assert.equal(stopped.state, 'completed');
  assert.match(stopped.reason, /^budget: its jobs ran [\d.]+ of 0.01 minutes/);
  const ended = await eventually(async () => {
    const jobs = await sweepJobs(id);
    return jobs.every((j) => TERMINAL.includes(j.state)) && jobs;
  }, 'every job of the sweep to end', 600_000);
  assert.ok(ended.length <= 2, 'the third setting was never submitted');
  assert.ok(ended.some((j) => j.state === 'canceled'), JSON.stringify(ended));
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal((await sweepJobs(id)).length, ended.length, 'nothing submitted after the stop');
});

test('bad sweeps are 400/422 naming the field; nothing is created', async () => {
  const cases: [unknown, number, string][] = [
    [{ base: base(), grid: { 'optim.lrr': [1] } }, 400, 'grid.optim.lrr[0]'],
    [{ base: base(), grid: { 'optim.lr': [1e-3, -1] } }, 400, 'grid.optim.lr[1]'],
    [{ base: base(), variants: [{ 'model.posEmbed': 'sincos' }, { 'model.posEmbed': 'fourier' }] }, 400, 'variants[1].model.posEmbed'],
    [{ base: base(), grid: { 'optim.lr': Array.from({ length: 9 }, (_, i) => (i + 1) * 1e-4) }, seeds: [1, 2, 3, 4, 5, 6, 7, 8] }, 400, 'grid'],
    [{ base: base(), grid: { type: ['probe'] } }, 400, 'grid'],
    [{ base: { ...base(), optim: { batch: 0 } } }, 400, 'base.optim.batch'],
    [{ base: base(), bogus: 1 }, 400, 'bogus'],
    [{ base: { ...base(), dataset: 'missing' } }, 422, 'base.dataset'],
  ];
  const before = await h.database.sql`select count(*)::int as n from sweeps`;
  for (const [body, status, path] of cases) {
    const res = await h.api('POST', '/v1/sweeps', body);
    assert.equal(res.status, status, `${JSON.stringify(body).slice(0, 120)} → ${JSON.stringify(res.body)}`);
    assert.ok(res.body.error.details.some((d: any) => d.path === path), `expected ${path}: ${JSON.stringify(res.body.error)}`);
  }
  const afterCount = await h.database.sql`select count(*)::int as n from sweeps`;
  assert.equal(afterCount[0]!.n, before[0]!.n);
  assert.equal((await h.api('GET', '/v1/sweeps/7f1c0a52-0000-4000-8000-000000000000')).status, 404);
});
