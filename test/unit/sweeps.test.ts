/** The pure parts of sweeps: settings from grid × variants × seeds, paths, the table's columns and CSV. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sweepSpec } from '../../contracts/sweepSpec.js';
import { expandSweep, getPath, setPath, settingsOf } from '../../api/sweeps/grid.js';
import { resultsCsv, resultsTable } from '../../api/sweeps/results.js';
import type { SweepRow, SweepRunState } from '../../db/sweeps.js';

const base = { dataset: 'fmnist@1', optim: { batch: 64 } };

test('settings: grid axes in order (first slowest), then variants, then seeds', () => {
  const spec = sweepSpec.parse({
    base,
    grid: { 'optim.lr': [1e-3, 2e-3], method: ['mocov3', 'byol'] },
    variants: [{}, { 'model.posEmbed': 'none' }],
    seeds: [0, 1],
  });
  const s = settingsOf(spec);
  assert.equal(s.length, 16);
  assert.deepEqual(s[0]!.values, { 'optim.lr': 1e-3, method: 'mocov3', seed: 0 });
  assert.deepEqual(s[3]!.values, { 'optim.lr': 1e-3, method: 'mocov3', 'model.posEmbed': 'none', seed: 1 });
  assert.deepEqual(s[15]!.values, { 'optim.lr': 2e-3, method: 'byol', 'model.posEmbed': 'none', seed: 1 });
  assert.equal(s[3]!.origins['model.posEmbed'], 'variants[1].model.posEmbed');

  const runs = expandSweep(spec, '00000000-0000-4000-8000-000000000001');
  assert.equal(runs[15]!.spec.method, 'byol');
  assert.equal(runs[15]!.spec.optim.lr, 2e-3);
  assert.equal(runs[15]!.spec.model.posEmbed, 'none');
  assert.equal(runs[15]!.spec.seed, 1);
  assert.equal(runs[0]!.spec.model.posEmbed, 'sincos', 'the base keeps its defaults');
  assert.deepEqual(runs[15]!.spec.labels, { sweep: '00000000-0000-4000-8000-000000000001', sweepRun: '15' });
});

test('paths: set creates what is missing and never mutates the base; get reads nested values', () => {
  const obj = { optim: { batch: 64 } };
  const out = setPath(obj, 'optim.lr', 0.1);
  assert.deepEqual(out, { optim: { batch: 64, lr: 0.1 } });
  assert.deepEqual(obj, { optim: { batch: 64 } });
  assert.deepEqual(setPath({}, 'moco.predictor.enabled', false), { moco: { predictor: { enabled: false } } });
  assert.throws(() => setPath({ epochs: 3 }, 'epochs.x', 1), /epochs is not an object/);
  assert.equal(getPath({ a: { b: { c: 2 } } }, 'a.b.c'), 2);
  assert.equal(getPath({ a: 1 }, 'a.b'), undefined);
});

test('a probe with subjects gives the row its kNN and both baselines', () => {
  const sweep = { id: 's', state: 'completed' } as SweepRow;
  const subjects = {
    model: { linear: { top1: 0.74 }, knn: { top1: 0.71 } },
    random_init: { linear: { top1: 0.66 }, knn: { top1: 0.6 } },
    raw_pixels: { linear: { top1: 0.8 }, knn: { top1: 0.79 } },
  };
  const run: SweepRunState = {
    index: 0,
    setting: {},
    spec: {},
    error: null,
    pretrain: { id: 'p', state: 'succeeded', result: {}, error: null, startedAt: null, finishedAt: null, spikes: 0 },
    probe: { id: 'q', state: 'succeeded', result: {}, error: null, startedAt: null, finishedAt: null },
    evaluation: { kind: 'linear', top1: 0.74, top5: 0.98, knnTop1: 0.71, subjects, details: { gains: {} } },
  };
  const [row] = resultsTable(sweep, [run]).rows;
  assert.equal(row!.knnTop1, 0.71);
  assert.deepEqual(row!.baselines, { randomInit: { linearTop1: 0.66, knnTop1: 0.6 }, rawPixels: { linearTop1: 0.8, knnTop1: 0.79 } });
});

test("a method's unused fields are null in the table: SimCLR reports no momentum", () => {
  const sweep = { id: 's', state: 'completed' } as SweepRow;
  const run = (index: number, method: string, momentum: number): SweepRunState => ({
    index,
    setting: { method, 'moco.momentum': momentum },
    spec: { method, moco: { momentum } },
    error: null,
    pretrain: { id: `p${index}`, state: 'succeeded', result: { config: { method, moco: { momentum } } }, error: null, startedAt: null, finishedAt: null, spikes: 0 },
    probe: null,
    evaluation: null,
  });
  const table = resultsTable(sweep, [run(0, 'mocov3', 0.99), run(1, 'simclr', 0.99), run(2, 'byol', 0.996)]);
  assert.deepEqual(table.rows.map((r) => r.values['moco.momentum']), [0.99, null, 0.996]);
});

test('the table keeps the columns that differ, reads resolved values, and quotes CSV cells', () => {
  const sweep = { id: 's', state: 'completed' } as SweepRow;
  const run = (index: number, setting: Record<string, unknown>, lr: number | undefined, extra: Partial<SweepRunState> = {}): SweepRunState => ({
    index,
    setting,
    spec: { optim: { batch: 64, ...(lr === undefined ? {} : { lr }) }, model: { posEmbed: 'sincos' } },
    error: null,
    pretrain: { id: `p${index}`, state: 'succeeded', result: { finalLoss: 1.5, steps: 10, config: { optim: { lr: lr ?? 1.5e-4 }, model: { posEmbed: 'sincos' } } }, error: null, startedAt: new Date(0), finishedAt: new Date(90_000), spikes: index },
    probe: { id: `q${index}`, state: 'succeeded', result: { top1: 0.5 }, error: null, startedAt: null, finishedAt: null },
    evaluation: { kind: 'linear', top1: 0.5 + index / 10, top5: 0.9, details: { knn: { top1: 0.4 }, baselines: { rawPixels: { linearTop1: 0.8 } } } },
    ...extra,
  });
  // The first run leaves lr to the trainer (resolved 1.5e-4); the variant sets posEmbed to the value all have.
  const table = resultsTable(sweep, [run(0, {}, undefined), run(1, { 'optim.lr': 3e-3, 'model.posEmbed': 'sincos' }, 3e-3)]);
  assert.deepEqual(table.columns, ['optim.lr']);
  assert.deepEqual(table.rows.map((r) => r.values['optim.lr']), [1.5e-4, 3e-3]);
  assert.equal(table.rows[1]!.linearTop1, 0.6);
  assert.equal(table.rows[1]!.knnTop1, 0.4);
  assert.equal(table.rows[1]!.minutes, 1.5);
  assert.deepEqual([table.rows[0]!.spiked, table.rows[1]!.spiked], [false, true]);
  const csv = resultsCsv({ ...table, rows: table.rows.map((r, i) => (i ? { ...r, error: 'a, "b"' } : r)) }).trim().split('\n');
  assert.equal(csv[0], 'index,optim.lr,linearTop1,linearTop5,knnTop1,finalLoss,steps,minutes,spikes,pretrainState,probeState,pretrainJobId,probeJobId,error,baselines.rawPixels.linearTop1');
  assert.equal(csv[2], '1,0.003,0.6,0.9,0.4,1.5,10,1.5,1,succeeded,succeeded,p1,q1,"a, ""b""",0.8');
});
