/**
 * The MoCo v3 paper's ablations, reproduced small, as ONE sweep through the public API:
 * `npx tsx scripts/ablations.ts [options]` (docs/experiments/ablations.md has the results).
 *
 * It starts its own API and runner (own database, queue prefix and bucket, so nothing else on the
 * machine is touched), uploads Fashion-MNIST at 28 px from Debian's dataset-fashion-mnist
 * (../shared is not needed; the files are under /usr/share/datasets/fashion-mnist), submits one
 * sweep whose variants are the paper's knobs:
 *
 *   MoCo v3 (reference: sin-cos, class token, frozen patch projection) · SimCLR · BYOL ·
 *   frozen vs trained patch projection at a high lr · learned / no position embedding ·
 *   average pooling with / without the last LayerNorm
 *
 * each for a fixed number of steps (the per-run budget), optionally repeated with seeds; waits for
 * the sweep; then writes `<out>/ablations.json` (the sweep with its table), `<out>/ablations.csv`
 * (the API's download) and `<out>/ablations-curves.svg` (loss, patch-projection gradient norm and,
 * when the runs report one, kNN accuracy per run), and prints the table as Markdown.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain, UserFacingError } from '../common/errors.js';
import { ChildProcesses, client, freePort, runToJson, sleep, waitForJob, type Api } from './support/localStack.js';
import { FASHION_MNIST_DIR, fashionMnistIdxArchive } from '../runner/datasets/index.js';

const USAGE = `npx tsx scripts/ablations.ts [--train 6400] [--val 2000] [--batch 128] [--steps 150] [--lr 1.5e-3] [--high-lr 6e-3]
  [--seeds 0] [--reference-seeds 1,2] [--probe-epochs 30] [--minutes 45] [--out docs/experiments] [--database momentum_ablations]`;

const children = new ChildProcesses();
const say = (line: string) => process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
const load = () => loadavg().map((x) => x.toFixed(1)).join(' ');

/** The paper's knobs as sweep variants; the first is MoCo v3 as the paper recommends it. */
function variants(highLr: number) {
  return [
    {},
    { method: 'simclr' },
    { method: 'byol' },
    { 'optim.lr': highLr },
    { 'optim.lr': highLr, 'model.freezePatchProjection': false },
    { 'model.posEmbed': 'learned' },
    { 'model.posEmbed': 'none' },
    { 'model.pooling': 'gap' },
    { 'model.pooling': 'gap_no_ln' },
  ];
}

/** Loss, patch-projection gradient norm and kNN (when reported) per run, side by side, as one SVG. */
function curvesSvg(runs: { label: string; series: Record<string, { step: number; value: number }[]> }[]): string {
  const panels = [
    { name: 'loss', title: 'loss' },
    { name: 'gradNormPatchProjection', title: 'patch projection gradient norm (trained only)' },
    { name: 'knn', title: 'kNN top-1 (monitor)' },
  ];
  const colors = ['#3a5bd9', '#c0392b', '#1f8a4c', '#b7791f', '#8e44ad', '#16a085', '#d35400', '#2c3e50', '#7f8c8d', '#e84393', '#00a8ff', '#6ab04c'];
  const W = 360, H = 240, P = 36;
  const parts: string[] = [];
  panels.forEach((panel, pi) => {
    const x0 = pi * (W + 10);
    parts.push(`<g transform="translate(${x0},0)"><rect width="${W}" height="${H}" fill="#fbfcfe" stroke="#e3e6ec"/><text x="8" y="16" font-size="12">${panel.title}</text>`);
    const all = runs.flatMap((r) => (r.series[panel.name] ?? []).filter((p) => Number.isFinite(p.value)));
    if (all.length >= 2) {
      const xs = all.map((p) => p.step), ys = all.map((p) => p.value);
      const [a, b, c, d] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
      const X = (v: number) => P + ((v - a) / (b - a || 1)) * (W - P - 8);
      const Y = (v: number) => H - P + -((v - c) / (d - c || 1)) * (H - P - 24);
      runs.forEach((r, ri) => {
        const pts = (r.series[panel.name] ?? []).filter((p) => Number.isFinite(p.value));
        if (pts.length < 2) return;
        const path = pts.map((p, i) => `${i ? 'L' : 'M'}${X(p.step).toFixed(1)},${Y(p.value).toFixed(1)}`).join('');
        parts.push(`<path d="${path}" fill="none" stroke="${colors[ri % colors.length]}" stroke-width="1.2"/>`);
      });
      parts.push(`<text x="4" y="30" font-size="10" fill="#6b7385">${d.toPrecision(3)}</text><text x="4" y="${H - P}" font-size="10" fill="#6b7385">${c.toPrecision(3)}</text>`);
      parts.push(`<text x="${P}" y="${H - 10}" font-size="10" fill="#6b7385">step ${a}</text><text x="${W - 8}" y="${H - 10}" font-size="10" fill="#6b7385" text-anchor="end">step ${b}</text>`);
    } else parts.push(`<text x="8" y="40" font-size="11" fill="#6b7385">no data</text>`);
    parts.push('</g>');
  });
  const legendY = H + 16;
  runs.forEach((r, ri) => {
    const x = (ri % 4) * 270, y = legendY + Math.floor(ri / 4) * 16;
    parts.push(`<rect x="${x}" y="${y - 9}" width="12" height="3" fill="${colors[ri % colors.length]}"/><text x="${x + 16}" y="${y}" font-size="11">${r.label.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>`);
  });
  const height = legendY + Math.ceil(runs.length / 4) * 16 + 6;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${3 * W + 20}" height="${height}" viewBox="0 0 ${3 * W + 20} ${height}" font-family="sans-serif">${parts.join('')}</svg>\n`;
}

/** Submits a sweep, prints its progress until it ends, and returns it with the mean load average. */
async function runSweep(api: Api, body: unknown, what: string): Promise<{ sweep: any; meanLoad: number }> {
  const created = await api('POST', '/v1/sweeps', body);
  say(`sweep ${created.id}: ${created.runs.total} runs of ${what}, one at a time`);
  let last = '';
  let s = created;
  const loads: number[] = [];
  while (s.state === 'running') {
    await sleep(10_000);
    s = await api('GET', `/v1/sweeps/${created.id}`);
    loads.push(loadavg()[0]!);
    const line = `${s.runs.finished}/${s.runs.total} trained, ${s.runs.probed} probed, ${s.budget.usedMinutes.toFixed(1)} min used`;
    if (line !== last) say(`${line}; load average ${load()}`);
    last = line;
  }
  const meanLoad = loads.reduce((a, b) => a + b, 0) / Math.max(1, loads.length);
  say(`sweep ${s.state}${s.reason ? ` (${s.reason})` : ''}; mean 1-minute load average while it ran ${meanLoad.toFixed(1)}`);
  return { sweep: s, meanLoad };
}

const label = (values: Record<string, unknown>) => Object.entries(values).map(([k, v]) => `${k.split('.').pop()}=${v}`).join(' ') || 'reference';

runMain(async () => {
  const { values: o } = parseCommandLine(USAGE, {
    train: { type: 'string', default: '6400' },
    val: { type: 'string', default: '2000' },
    batch: { type: 'string', default: '128' },
    steps: { type: 'string', default: '150' },
    lr: { type: 'string', default: '1.5e-3' },
    'high-lr': { type: 'string', default: '6e-3' },
    seeds: { type: 'string', default: '0' },
    'reference-seeds': { type: 'string' },
    'probe-epochs': { type: 'string', default: '30' },
    minutes: { type: 'string', default: '45' },
    out: { type: 'string', default: 'docs/experiments' },
    database: { type: 'string', default: 'momentum_ablations' },
  });
  const n = (v: string) => Number(v);
  const [train, val, batch, steps] = [n(o.train), n(o.val), n(o.batch), n(o.steps)];
  const seeds = o.seeds.split(',').map(Number);
  const tag = `ablations-${Date.now()}`;
  const dataDir = join('var', tag);
  mkdirSync(join(dataDir, 'log'), { recursive: true });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = {
    ...process.env,
    API_HOST: '127.0.0.1',
    API_PORT: String(port),
    DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${o.database}`,
    QUEUE_PREFIX: tag,
    S3_BUCKET: tag,
    DATA_DIR: dataDir,
    TFJS_BACKEND: process.env.TFJS_BACKEND ?? 'wasm',
    LOG_LEVEL: 'info',
  };
  const onSignal = () => void children.stopAll().then(() => process.exit(130));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    children.start('API', 'api/server.ts', [], env, join(dataDir, 'log', 'api.log'));
    for (let i = 0; ; i++) {
      if (await fetch(`${base}/readyz`).then((r) => r.ok, () => false)) break;
      if (i > 240) throw new UserFacingError(`the API did not come up; see ${dataDir}/log/api.log`);
      await sleep(500);
    }
    children.start('runner', 'runner/main.ts', [], env, join(dataDir, 'log', 'runner.log'));
    const key = await runToJson('scripts/create-api-key.ts', ['--tenant', 'ablations', '--name', tag, '--json'], env);
    const api = client(base, key.key);
    say(`api ${base}, runner started; load average ${load()}`);

    const archive = await fashionMnistIdxArchive(FASHION_MNIST_DIR, { train, val });
    await api('POST', '/v1/datasets', { name: 'fashion-mnist' }).catch(() => {});
    const version = await api('POST', '/v1/datasets/fashion-mnist/versions', { options: { format: 'idx' }, fileName: 'fmnist.tar.gz', sizeBytes: archive.byteLength });
    const put = await fetch(version.upload.url, { method: 'PUT', body: new Uint8Array(archive) });
    if (!put.ok) throw new UserFacingError(`upload: HTTP ${put.status}`);
    const ingest = await api('POST', `/v1/datasets/fashion-mnist/versions/${version.version}/finalize`);
    const ingested = await waitForJob(api, ingest.job.id, 1000);
    if (ingested.state !== 'succeeded') throw new UserFacingError(`ingest ${ingested.state}: ${ingested.error}`);
    say(`Fashion-MNIST ${train} train + ${val} val images ingested as fashion-mnist@${version.version}`);

    // The small-image recipe of DESIGN.md section 8; epochs sized so the schedules end at the last step.
    const epochs = Math.max(1, Math.ceil(steps / Math.floor(train / batch)));
    const sweep = {
      base: {
        dataset: `fashion-mnist@${version.version}`,
        model: { arch: 'vit_tiny', imageSize: 28, patch: 7, dim: 64, depth: 4, heads: 4 },
        moco: { projector: { hiddenDim: 256, outDim: 64 }, predictor: { hiddenDim: 256 } },
        optim: { batch, lr: n(o.lr) },
        augment: { cropMinScale: 0.3, blurProb: [0, 0], grayscaleProb: 0, solarizeProb: [0, 0.2] },
        epochs,
        maxSteps: steps,
        checkpointEvery: steps,
        keepCheckpoints: 1,
        // Five kNN points a run on a small bank: the automatic 20 would cost as much as the training.
        monitor: { knnEvery: Math.max(1, Math.round(steps / 5)), knnBank: Math.min(2000, Math.floor(train * 0.8)), knnQueries: Math.min(500, Math.floor(train * 0.2)) },
        labels: { experiment: 'ablations' },
      },
      variants: variants(n(o['high-lr'])),
      ...(seeds.length > 1 ? { seeds } : {}),
      probe: { epochs: n(o['probe-epochs']), lr: 1, batch: 256 },
      budget: { maxConcurrent: 1, totalMinutes: n(o.minutes) },
    };
    const { sweep: s, meanLoad } = await runSweep(api, sweep, `${steps} steps (batch ${batch})`);
    // The seeds' spread: the reference again under other seeds, as a second sweep after the first.
    const repeats = o['reference-seeds'] ? o['reference-seeds'].split(',').map(Number) : [];
    const seedSweep = repeats.length ? (await runSweep(api, { ...sweep, variants: [{}], seeds: repeats }, 'reference repeats')).sweep : null;

    mkdirSync(o.out, { recursive: true });
    writeFileSync(join(o.out, 'ablations.json'), JSON.stringify({ ...s, meanLoad, seedRepeats: seedSweep }, null, 2) + '\n');
    writeFileSync(join(o.out, 'ablations.csv'), await api('GET', `/v1/sweeps/${s.id}/results?format=csv`));
    const curves = [];
    for (const row of s.rows) {
      if (!row.pretrainJobId) continue;
      const m = await api('GET', `/v1/jobs/${row.pretrainJobId}/metrics?limit=100000`);
      const series: Record<string, { step: number; value: number }[]> = {};
      for (const x of m.series) {
        const name = x.name.toLowerCase().includes('knn') ? 'knn' : x.name;
        series[name] = x.points;
      }
      curves.push({ label: `${row.index}: ${label(row.values)}`, series });
    }
    writeFileSync(join(o.out, 'ablations-curves.svg'), curvesSvg(curves));

    const pct = (v: number | null) => (v === null ? '–' : (100 * v).toFixed(1));
    const lines = [
      `| # | setting | linear top-1 | kNN top-1 | final loss | minutes | spikes |`,
      `|---|---|---|---|---|---|---|`,
      ...s.rows.map((r: any) => `| ${r.index} | ${label(r.values)} | ${pct(r.linearTop1)} | ${pct(r.knnTop1)} | ${r.finalLoss?.toFixed(3) ?? '–'} | ${r.minutes?.toFixed(1) ?? '–'} | ${r.spikes} |`),
    ];
    if (seedSweep) {
      const reference = [s.rows[0], ...seedSweep.rows].filter((r: any) => typeof r.linearTop1 === 'number');
      const spread = (key: 'linearTop1' | 'knnTop1') => {
        const xs = reference.map((r: any) => r[key]).filter((v: unknown): v is number => typeof v === 'number');
        const mean = xs.reduce((a: number, b: number) => a + b, 0) / Math.max(1, xs.length);
        const sd = Math.sqrt(xs.reduce((a: number, b: number) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1));
        return `${(100 * mean).toFixed(1)} ± ${(100 * sd).toFixed(1)} (n=${xs.length})`;
      };
      lines.push('', `reference over seeds 0,${repeats.join(',')}: linear ${spread('linearTop1')}, kNN ${spread('knnTop1')}`);
    }
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await children.stopAll();
  }
  process.exit(0);
});
