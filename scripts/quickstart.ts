/**
 * `npm run quickstart [-- --small] [-- --generated]`: Momentum end to end on a fresh clone, the way
 * a new user drives it. `npm run quickstart` first runs scripts/services.sh (starts Postgres, Redis
 * and the S3 server when absent, migrates); this script then starts the API and one runner as child
 * processes, creates an API key, uploads Fashion-MNIST from Debian's package (generated images when
 * it is not installed) through the API, waits for its ingestion, trains a small ViT with MoCo v3 at
 * the images' native 28 px with the small-image recipe under a time budget (the runner sizes the
 * step count from its own throughput) while showing live progress, probes the newest checkpoint
 * beside its two baselines (the same ViT at random init, and raw pixels, same protocol), prints the
 * three rows with the gains, and a signed download URL of the backbone export. It stops what it
 * started (not the services) and exits 0.
 *
 * --small (or QUICKSTART_SMALL=1): a few dozen steps on a thousand images (tests, slow machines).
 * --generated: use generated images even where Fashion-MNIST is installed.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { config } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain, UserFacingError } from '../common/errors.js';
import { checkDependencies } from '../common/startup.js';
import { ChildProcesses, freePort, rawClient, runToJson, waitForJob as waitForJobOf } from './support/localStack.js';
import { FASHION_MNIST_DIR, fashionMnistIdxArchive, generateSyntheticDataset, writeIdxArchive } from '../runner/datasets/index.js';

const started = Date.now();

interface Plan {
  trainImages: number;
  valImages: number;
  /** A fixed step count (tests), or a wall-clock budget for the pretraining that the runner sizes. */
  steps?: number;
  budgetMinutes?: number;
  batch: number;
  checkpointEvery: number;
  probeEpochs: number;
  /** The probe's lr candidates (chosen on held-out training images), and the kNN monitor's subset. */
  probeLrs: number[];
  monitor: { knnBank: number; knnQueries: number; knnEvery?: number };
}

// About 5 minutes on 2 cores: 3 of pretraining, the rest ingestion, probing and the baselines.
const FULL: Plan = { trainImages: 20_000, valImages: 5000, budgetMinutes: 3, batch: 128, checkpointEvery: 50, probeEpochs: 10, probeLrs: [0.01, 0.1, 1], monitor: { knnBank: 2000, knnQueries: 500 } };
const SMALL: Plan = { trainImages: 1000, valImages: 300, steps: 24, batch: 32, checkpointEvery: 12, probeEpochs: 5, probeLrs: [0.1], monitor: { knnBank: 200, knnQueries: 100, knnEvery: 12 } };

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function seconds(ms: number): string {
  const s = ms / 1000;
  return s < 90 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

const children = new ChildProcesses();

/** A Momentum process of ours; when it dies on its own, the quickstart stops and says where to look. */
function startProcess(name: string, script: string, env: NodeJS.ProcessEnv, logFile: string) {
  return children.start(name, script, [], env, logFile, (why) => {
    process.stderr.write(`quickstart: the ${name} exited unexpectedly (${why}); see ${logFile}\n`);
    void children.stopAll().then(() => process.exit(1));
  });
}

type Api = ReturnType<typeof rawClient>;

function expectStatus(res: { status: number; body: any }, ok: number[], what: string): any {
  if (!ok.includes(res.status)) {
    throw new UserFacingError(`${what}: HTTP ${res.status} ${res.body?.error?.message ?? JSON.stringify(res.body)}`);
  }
  return res.body;
}

async function waitForApi(base: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new UserFacingError('the API did not become ready within 2 minutes');
}

/** Polls a job until it ends; `onUpdate` sees every state (for live progress). */
function waitForJob(api: Api, id: string, onUpdate?: (job: any) => void): Promise<any> {
  const get = async (method: string, path: string) => expectStatus(await api(method, path), [200], `job ${id}`);
  return waitForJobOf(get, id, 500, onUpdate);
}

async function datasetArchive(plan: Plan, generated: boolean): Promise<{ archive: Buffer; source: string }> {
  if (!generated && existsSync(join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz'))) {
    const archive = await fashionMnistIdxArchive(FASHION_MNIST_DIR, { train: plan.trainImages, val: plan.valImages });
    return { archive, source: `Fashion-MNIST from ${FASHION_MNIST_DIR} (${plan.trainImages} train + ${plan.valImages} val images)` };
  }
  const make = (n: number, seed: number) => generateSyntheticDataset({ numClasses: 10, perClass: Math.ceil(n / 10), size: 28, channels: 1, seed });
  const archive = await writeIdxArchive({ train: make(plan.trainImages, 1), val: make(plan.valImages, 2) });
  return { archive, source: `generated shapes (Fashion-MNIST is not installed at ${FASHION_MNIST_DIR}; apt install dataset-fashion-mnist for it)` };
}

async function uploadDataset(api: Api, name: string, archive: Buffer): Promise<{ version: number }> {
  const created = await api('POST', '/v1/datasets', { name, description: 'uploaded by npm run quickstart' });
  if (created.status !== 201 && created.body?.error?.code !== 'dataset_exists') expectStatus(created, [201], 'create dataset');
  const version = expectStatus(
    await api('POST', `/v1/datasets/${name}/versions`, { options: { format: 'idx' }, fileName: 'fashion-mnist-idx.tar.gz', sizeBytes: archive.byteLength }),
    [201],
    'create dataset version',
  );
  const put = await fetch(version.upload.url, { method: 'PUT', body: new Uint8Array(archive) });
  if (!put.ok) throw new UserFacingError(`upload to the presigned URL failed: HTTP ${put.status}`);
  const finalized = expectStatus(await api('POST', `/v1/datasets/${name}/versions/${version.version}/finalize`), [200, 202], 'finalize');
  const t0 = Date.now();
  const ingest = await waitForJob(api, finalized.job.id);
  if (ingest.state !== 'succeeded') throw new UserFacingError(`ingestion ${ingest.state}: ${ingest.error ?? 'no reason given'}`);
  const r = ingest.result ?? {};
  say(`  ingested in ${seconds(Date.now() - t0)}: ${r.train} train + ${r.val} val images, ${r.classes} classes, ${r.height}×${r.width}×${r.channels}`);
  return { version: version.version };
}

/** One line of live progress: rewritten in place on a terminal, every ~10% otherwise. */
function progressPrinter(total: number) {
  const tty = process.stdout.isTTY;
  let lastPrinted = -1;
  let lastLine = '';
  return {
    update(job: any) {
      const p = job.progress;
      if (!p || typeof p.step !== 'number' || p.step === 0) return;
      // A budgeted run's length is known once the runner has measured its throughput.
      const all: number = p.total ?? total;
      const line = `  step ${String(p.step).padStart(String(all).length)}/${all}  loss ${p.loss?.toFixed(4) ?? '-'}  ${Math.round(p.imagesPerSec ?? 0)} img/s  (${job.state}, attempt ${job.attempt})`;
      if (tty) {
        if (line !== lastLine) process.stdout.write(`\r${line}\x1b[K`);
      } else if (p.step === all || p.step - lastPrinted >= Math.max(1, Math.round(all / 10))) {
        say(line);
        lastPrinted = p.step;
      }
      lastLine = line;
    },
    done() {
      if (tty && lastLine) process.stdout.write('\n');
    },
  };
}

const pct = (v: number) => `${(100 * v).toFixed(1)} %`.padStart(7);
const points = (v: number) => `${v >= 0 ? '+' : ''}${(100 * v).toFixed(1)}`;

/** The three rows (model, random init, raw pixels) and the gains, as the probe job stored them. */
function printComparison(evaluation: any, gains: Record<string, { linearTop1: number; knnTop1: number }>): void {
  const rows: [string, any][] = [
    ['MoCo v3 (this run)', evaluation.subjects.model],
    ['same ViT, random init', evaluation.subjects.random_init],
    ['raw pixels', evaluation.subjects.raw_pixels],
  ];
  say('  features                 linear top-1   kNN-20 top-1');
  for (const [name, s] of rows) if (s) say(`  ${name.padEnd(24)} ${pct(s.linear.top1)}        ${pct(s.knn.top1)}`);
  const g = (name: string) => gains[name];
  if (g('random_init')) {
    say(`  gain: ${points(g('random_init').linearTop1)} points linear / ${points(g('random_init').knnTop1)} kNN over random init; ${points(g('raw_pixels').linearTop1)} / ${points(g('raw_pixels').knnTop1)} over raw pixels`);
  }
}

runMain(async () => {
  const { values } = parseCommandLine(
    'npm run quickstart [-- --small] [-- --generated]   (--small: a few dozen steps; --generated: generated images even where Fashion-MNIST is installed)',
    { small: { type: 'boolean', default: false }, generated: { type: 'boolean', default: false }, services: { type: 'boolean', default: false } },
  );
  // `npm run quickstart` passes --services: start what is missing first (after --help was handled).
  if (values.services) {
    const services = spawnSync('bash', ['scripts/services.sh'], { stdio: 'inherit' });
    if (services.status !== 0) throw new UserFacingError(`scripts/services.sh exited ${services.status}; its output above says why`);
  }
  const small = values.small || ['1', 'true', 'yes'].includes((process.env.QUICKSTART_SMALL ?? '').toLowerCase());
  const plan = small ? SMALL : FULL;
  const c = config();
  say(`momentum quickstart${small ? ' (--small)' : ''}`);
  await checkDependencies(c, { s3: true });
  say(`  services: postgres, redis and s3 (bucket ${c.S3_BUCKET}) answer`);

  const logDir = join(c.DATA_DIR, 'log');
  mkdirSync(logDir, { recursive: true });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = { ...process.env, API_HOST: '127.0.0.1', API_PORT: String(port), LOG_LEVEL: process.env.LOG_LEVEL ?? 'info' };
  const onSignal = () => void children.stopAll().then(() => process.exit(130));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const apiLog = join(logDir, 'quickstart-api.log');
    const runnerLog = join(logDir, 'quickstart-runner.log');
    const api = startProcess('API', 'api/server.ts', env, apiLog);
    const runner = startProcess('runner', 'runner/main.ts', env, runnerLog);
    await waitForApi(base);
    say(`  api: ${base} (pid ${api.pid}, log ${apiLog}); runner: pid ${runner.pid} (log ${runnerLog})`);
    const key = await runToJson('scripts/create-api-key.ts', ['--tenant', 'quickstart', '--name', `quickstart-${Date.now()}`, '--json'], env);
    say(`  api key for tenant "${key.tenant}": ${String(key.key).slice(0, 12)}… (export MOMENTUM_API_KEY=${key.key})`);
    const call = rawClient(base, key.key);

    // 1. Data, uploaded through the API as a user would (presigned PUT), ingested by the runner.
    const { archive, source } = await datasetArchive(plan, values.generated);
    const datasetName = 'fashion-mnist';
    say(`dataset ${datasetName}: ${source}, ${(archive.byteLength / 1e6).toFixed(1)} MB`);
    const { version } = await uploadDataset(call, datasetName, archive);

    // 2. Pretrain: a small ViT at the native 28 px (patch 7: 16 tokens). Everything not given here
    //    (crops ≥ 0.3, no blur, no hue/saturation on grayscale, lr 1.5e-3...) is the small-image
    //    recipe, and the schedules end at the last step the budget (or maxSteps) allows.
    const spec = {
      type: 'pretrain',
      dataset: `${datasetName}@${version}`,
      model: { arch: 'vit_tiny', patch: 7, dim: 64, depth: 4, heads: 4 },
      moco: { projector: { hiddenDim: 512 }, predictor: { hiddenDim: 512 } },
      optim: { batch: plan.batch },
      monitor: plan.monitor,
      ...(plan.steps ? { maxSteps: plan.steps } : { budget: { minutes: plan.budgetMinutes } }),
      checkpointEvery: plan.checkpointEvery,
      labels: { source: 'quickstart' },
    };
    const job = expectStatus(await call('POST', '/v1/jobs', spec), [201], 'submit pretrain');
    const length = plan.steps ? `${plan.steps} steps` : `a ${plan.budgetMinutes}-minute budget`;
    say(`pretrain ${job.id}: ViT (dim 64, depth 4, patch 7, 28 px), ${length}, batch ${plan.batch}`);
    const t0 = Date.now();
    const printer = progressPrinter(plan.steps ?? 0);
    const trained = await waitForJob(call, job.id, (j) => printer.update(j));
    printer.done();
    if (trained.state !== 'succeeded') throw new UserFacingError(`pretrain ${trained.state}: ${trained.error ?? 'no reason given'}`);
    const checkpoints = expectStatus(await call('GET', `/v1/jobs/${job.id}/checkpoints`), [200], 'list checkpoints').checkpoints as any[];
    const rt = trained.runtime ?? {};
    say(
      `  succeeded in ${seconds(Date.now() - t0)}: final loss ${Number(trained.result?.finalLoss).toFixed(4)}, ` +
        `${checkpoints.length} checkpoint version(s) kept, latest at step ${trained.result?.checkpoint?.step}; backend ${rt.backend} (${rt.device})`,
    );

    // 3. Probe the newest checkpoint beside its baselines: the same ViT at random init (same seed)
    //    and raw pixels, one protocol (standardized features, lr chosen on held-out training images).
    const probe = expectStatus(
      await call('POST', '/v1/jobs', { type: 'probe', source: { job: job.id, checkpoint: 'latest' }, epochs: plan.probeEpochs, batch: 256, lrCandidates: plan.probeLrs, readout: { lastBlocks: 4 } }),
      [201],
      'submit probe',
    );
    const t1 = Date.now();
    const probed = await waitForJob(call, probe.id);
    if (probed.state !== 'succeeded') throw new UserFacingError(`probe ${probed.state}: ${probed.error ?? 'no reason given'}`);
    const r = probed.result;
    say(`probe ${probe.id}: checkpoint v${r.checkpoint.version}, frozen backbone, class tokens of the last ${r.evaluation.protocol.readout.lastBlocks} blocks`);
    say(`  top-1 accuracy ${(r.top1 * 100).toFixed(1)} %, top-5 ${(r.top5 * 100).toFixed(1)} % on the val split, in ${seconds(Date.now() - t1)}`);
    printComparison(r.evaluation, r.gains);

    // 4. The backbone export through a signed URL, checked against its registered sha256.
    const link = expectStatus(await call('GET', `/v1/jobs/${job.id}/checkpoints/latest/download?file=backbone`), [200], 'download link');
    const bytes = new Uint8Array(await (await fetch(link.url)).arrayBuffer());
    const verified = createHash('sha256').update(bytes).digest('hex') === link.sha256;
    say(`backbone export v${link.version} (${(link.bytes / 1024).toFixed(0)} KiB, sha256 ${String(link.sha256).slice(0, 16)}…, ${verified ? 'verified' : 'MISMATCH'}), valid until ${link.expiresAt}:`);
    say(`  ${link.url}`);
    if (!verified) throw new UserFacingError('the downloaded backbone does not match its registered sha256');
  } finally {
    await children.stopAll();
  }
  say(`done in ${seconds(Date.now() - started)}; stopped the API and the runner (Postgres, Redis and S3 keep running)`);
  process.exit(0);
});
