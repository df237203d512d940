/**
 * `npm run experiment:fashion-mnist [-- --minutes 60] [-- --phase pretrain|evaluate|all]`: the
 * experiment of docs/experiments/fashion-mnist.md, reproduced through the public REST API only.
 *
 *  1. pretrain: uploads the full Fashion-MNIST (60k train / 10k test, 28 px; Debian's
 *     `dataset-fashion-mnist`) through the API, pretrains a small ViT with MoCo v3 under a
 *     wall-clock budget (`budget: { minutes }`: the runner sizes the step count from its own
 *     throughput) with the kNN monitor on, and waits for it.
 *  2. evaluate: a probe job on the final checkpoint (linear probe with the honest protocol, kNN,
 *     and both baselines: random init of the same architecture and seed, raw pixels), then writes
 *     the table (results.md), the kNN-against-time curve (knn-curve.svg) and results.json.
 *
 * It starts its own API and runner (as `npm run quickstart` does; Postgres, Redis and S3 must be up:
 * `npm run services`) and stops them at the end. The two phases can run apart (`--phase evaluate`
 * reads the pretrain job from the state file), so the evaluation can be redone on a finished run.
 * Output goes to var/experiments/fashion-mnist/ (or --out).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseCommandLine } from '../../common/commandLine.js';
import { config } from '../../common/config.js';
import { runMain, UserFacingError } from '../../common/errors.js';
import { checkDependencies } from '../../common/startup.js';
import { FASHION_MNIST_DIR, fashionMnistIdxArchive } from '../../runner/datasets/index.js';
import { ChildProcesses, client, freePort, runToJson, waitForJob, type Api } from '../support/localStack.js';
import { knnCurveSvg } from './svgChart.js';

const children = new ChildProcesses();

function say(line: string): void {
  process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

const USAGE = `npm run experiment:fashion-mnist -- [--minutes 60] [--phase pretrain|evaluate|all] [--out DIR]
  [--dim 64] [--depth 4] [--patch 7] [--heads 4] [--readout 4] [--dataset NAME@N]
  [--probe-train N] [--probe-val M] [--knn-bank 5000] [--knn-queries 1000]`;

function createKey(env: NodeJS.ProcessEnv): Promise<string> {
  return runToJson('scripts/create-api-key.ts', ['--tenant', 'experiments', '--name', `fashion-mnist-${Date.now()}`, '--json'], env).then((k) => k.key);
}

interface State {
  datasetRef?: string;
  probeDatasetRef?: string;
  pretrainJob?: string;
  probeJob?: string;
}

runMain(async () => {
  const { values } = parseCommandLine(USAGE, {
    phase: { type: 'string', default: 'all' },
    minutes: { type: 'string', default: '60' },
    out: { type: 'string' },
    dim: { type: 'string', default: '64' },
    depth: { type: 'string', default: '4' },
    patch: { type: 'string', default: '7' },
    heads: { type: 'string', default: '4' },
    readout: { type: 'string', default: '4' },
    /** Reuse an ingested full dataset version (`name@N`) instead of uploading it again. */
    dataset: { type: 'string' },
    /** Probe on the first N / M images of the train / test files (default: all, 60000 / 10000). */
    'probe-train': { type: 'string' },
    'probe-val': { type: 'string' },
    'knn-bank': { type: 'string', default: '5000' },
    'knn-queries': { type: 'string', default: '1000' },
  });
  const phase = values.phase;
  if (!['pretrain', 'evaluate', 'all'].includes(phase)) throw new UserFacingError('--phase must be pretrain, evaluate or all');
  if (!existsSync(join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz'))) {
    throw new UserFacingError(`Fashion-MNIST is not installed at ${FASHION_MNIST_DIR}: apt install dataset-fashion-mnist`);
  }
  const c = config();
  const outDir = values.out ?? join(c.DATA_DIR, 'experiments', 'fashion-mnist');
  mkdirSync(outDir, { recursive: true });
  const statePath = join(outDir, 'state.json');
  const state: State = existsSync(statePath) && phase === 'evaluate' ? JSON.parse(readFileSync(statePath, 'utf8')) : {};
  const save = () => writeFileSync(statePath, JSON.stringify(state, null, 2));

  await checkDependencies(c, { s3: true });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = { ...process.env, API_HOST: '127.0.0.1', API_PORT: String(port) };
  process.on('SIGINT', () => void children.stopAll().then(() => process.exit(130)));
  process.on('SIGTERM', () => void children.stopAll().then(() => process.exit(143)));
  try {
    children.start('API', 'api/server.ts', [], env, join(outDir, 'api.log'));
    children.start('runner', 'runner/main.ts', [], env, join(outDir, 'runner.log'));
    for (let i = 0; ; i++) {
      if (i > 480) throw new UserFacingError('the API did not become ready');
      if (await fetch(`${base}/readyz`).then((r) => r.ok).catch(() => false)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const api = client(base, await createKey(env));

    if (phase !== 'evaluate') {
      // 1. The full data set through the API: presigned upload, then the runner ingests it.
      state.datasetRef = values.dataset ?? (await upload(api, 'fashion-mnist-full', 'Fashion-MNIST 60k/10k (experiment)', await fashionMnistIdxArchive(FASHION_MNIST_DIR)));
      if (values['probe-train'] || values['probe-val']) {
        const limit = { train: values['probe-train'] ? Number(values['probe-train']) : undefined, val: values['probe-val'] ? Number(values['probe-val']) : undefined };
        state.probeDatasetRef = await upload(api, 'fashion-mnist-probe', `Fashion-MNIST ${JSON.stringify(limit)} (experiment probe)`, await fashionMnistIdxArchive(FASHION_MNIST_DIR, limit));
      }

      // 2. Pretrain under a wall-clock budget; the small-image recipe fills what is not given here.
      const spec = {
        type: 'pretrain',
        dataset: state.datasetRef,
        model: { arch: 'vit_tiny', patch: Number(values.patch), dim: Number(values.dim), depth: Number(values.depth), heads: Number(values.heads) },
        optim: { batch: 256 },
        budget: { minutes: Number(values.minutes) },
        monitor: { knnBank: Number(values['knn-bank']), knnQueries: Number(values['knn-queries']) },
        epochs: 100,
        checkpointEvery: 200,
        labels: { experiment: 'fashion-mnist' },
      };
      const job = await api('POST', '/v1/jobs', spec);
      state.pretrainJob = job.id;
      save();
      say(`pretrain ${job.id}: ${JSON.stringify(spec.model)}, budget ${values.minutes} min, load average ${loadavg()[0].toFixed(1)}`);
      let lastSay = 0;
      const done = await waitForJob(api, job.id, 5000, (j) => {
        if (Date.now() - lastSay < 60_000 || !j.progress) return;
        lastSay = Date.now();
        say(`  step ${j.progress.step}/${j.progress.total} loss ${Number(j.progress.loss).toFixed(3)} ${Math.round(j.progress.imagesPerSec ?? 0)} img/s, load ${loadavg()[0].toFixed(1)}`);
      });
      if (done.state !== 'succeeded') throw new UserFacingError(`pretrain ${done.state}: ${done.error}`);
      say(`pretrain done: ${done.result.steps} steps, ${done.result.epochs.toFixed(2)} epochs, ${Math.round(done.result.imagesPerSec)} img/s`);
    }

    if (phase !== 'pretrain') {
      if (!state.pretrainJob) throw new UserFacingError(`no pretrain job in ${statePath}: run --phase pretrain first`);
      // 3. One probe job: linear + kNN on the model, a random-init twin and raw pixels, same protocol.
      const probe = await api('POST', '/v1/jobs', {
        type: 'probe',
        source: { job: state.pretrainJob, checkpoint: 'latest' },
        ...(state.probeDatasetRef ? { dataset: state.probeDatasetRef } : {}),
        readout: { lastBlocks: Number(values.readout) },
        labels: { experiment: 'fashion-mnist' },
      });
      state.probeJob = probe.id;
      save();
      say(`probe ${probe.id}`);
      const probed = await waitForJob(api, probe.id, 5000);
      if (probed.state !== 'succeeded') throw new UserFacingError(`probe ${probed.state}: ${probed.error}`);
      await report(api, state, outDir, probed.result);
    }
  } finally {
    await children.stopAll();
  }
  process.exit(0);
});

/** Uploads an IDX archive as a new version of `name` through the API and waits for its ingestion. */
async function upload(api: Api, name: string, description: string, archive: Buffer): Promise<string> {
  await api('POST', '/v1/datasets', { name, description }).catch((e: Error) => {
    if (!/exists/.test(e.message)) throw e;
  });
  const version = await api('POST', `/v1/datasets/${name}/versions`, { options: { format: 'idx' }, fileName: `${name}.tar.gz`, sizeBytes: archive.byteLength });
  const put = await fetch(version.upload.url, { method: 'PUT', body: new Uint8Array(archive) });
  if (!put.ok) throw new UserFacingError(`upload failed: HTTP ${put.status}`);
  const finalized = await api('POST', `/v1/datasets/${name}/versions/${version.version}/finalize`);
  const ingest = await waitForJob(api, finalized.job.id, 5000);
  if (ingest.state !== 'succeeded') throw new UserFacingError(`ingestion ${ingest.state}: ${ingest.error}`);
  say(`dataset ${name}@${version.version}: ${ingest.result.train} train + ${ingest.result.val} test images`);
  return `${name}@${version.version}`;
}

async function report(api: Api, state: State, outDir: string, result: any): Promise<void> {
  const pretrain = await api('GET', `/v1/jobs/${state.pretrainJob}`);
  const events = await api('GET', `/v1/jobs/${state.pretrainJob}/events`);
  const metrics = await api('GET', `/v1/jobs/${state.pretrainJob}/metrics?name=knnTop1`);
  const knn = (metrics.series.find((s: any) => s.name === 'knnTop1')?.points ?? []) as { step: number; value: number; at: string }[];
  const startedAt = knn.length ? Date.parse(knn[0].at) : 0;
  const curve = knn.map((p) => ({ minutes: (Date.parse(p.at) - startedAt) / 60_000, step: p.step, top1: p.value }));
  const ev = result.evaluation;
  const references = [
    { label: 'raw pixels kNN (test split)', top1: ev.subjects.raw_pixels?.knn?.top1 },
    { label: 'random init kNN (test split)', top1: ev.subjects.random_init?.knn?.top1 },
    { label: 'MoCo v3 kNN (test split)', top1: ev.subjects.model?.knn?.top1 },
  ].filter((r): r is { label: string; top1: number } => typeof r.top1 === 'number');
  writeFileSync(join(outDir, 'knn-curve.svg'), knnCurveSvg(curve, { title: 'Fashion-MNIST: kNN-20 top-1 on held-out training images during pretraining', references }));
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '–' : `${(100 * v).toFixed(1)} %`);
  const rows = (['raw_pixels', 'random_init', 'model'] as const).map((subject) => {
    const s = ev.subjects[subject];
    return `| ${subject.replace('_', ' ')} | ${s ? s.featureDim : '–'} | ${pct(s?.linear?.top1)} | ${pct(s?.linear?.top5)} | ${pct(s?.linear?.trainTop1)} | ${pct(s?.knn?.top1)} |`;
  });
  const plan = events.events.find((e: any) => e.kind === 'schedule-fixed')?.data;
  const table = [
    '| features | dim | linear top-1 | linear top-5 | linear train top-1 | kNN-20 top-1 |',
    '|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  const summary = {
    pretrainJob: state.pretrainJob,
    probeJob: state.probeJob,
    pretrain: pretrain.result,
    plan,
    protocol: ev.protocol,
    subjects: ev.subjects,
    knnCurve: curve,
  };
  writeFileSync(join(outDir, 'results.json'), JSON.stringify(summary, null, 2));
  writeFileSync(join(outDir, 'results.md'), `${table}\n`);
  const split = state.probeDatasetRef ? `probe on ${state.probeDatasetRef}` : 'full 60k train / 10k test';
  say(`results (${split}, 28 px):\n${table}`);
  say(`pretrain: ${pretrain.result?.steps} steps (${plan?.source ?? '?'}), ${Number(pretrain.result?.epochs).toFixed(2)} epochs, ${Math.round(pretrain.result?.imagesPerSec)} img/s`);
  say(`wrote ${join(outDir, 'results.md')}, results.json and knn-curve.svg`);
}
