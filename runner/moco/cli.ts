/**
 * Train MoCo v3 locally, without any service: `npm run train:local -- [options]`.
 *
 *   --method mocov3|simclr|byol                  default mocov3
 *   --data synthetic | <folder with IDX files>   (train-images-idx3-ubyte[.gz], train-labels-…,
 *                                                 t10k-… for the probe), default synthetic
 *   --out <folder>          checkpoints go to <out>/step-<n>/, default var/moco-local
 *   --backend auto|tensorflow|wasm|cpu           default auto
 *   --arch vit_tiny|vit_small|vit_base|resnet18|resnet50, --dim, --depth, --heads, --patch,
 *   --image-size, --pos-embed, --pooling, --train-patch-projection
 *   --batch, --micro-batch, --lr, --epochs, --max-steps, --warmup-epochs, --optimizer,
 *   --hidden-dim, --out-dim, --no-predictor, --temperature, --checkpoint-every, --seed
 *   --limit <n>             use the first n training examples
 *   --resume                continue from <out>/latest
 *   --probe                 afterwards: kNN and linear probe on the test split
 *
 * Ctrl-C / SIGTERM stop between steps after a checkpoint. Progress goes to stderr.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { selectBackend, type BackendPreference } from './backend.js';
import type { CheckpointFiles } from './checkpoint.js';
import type { Method, TrainConfigInput } from './config.js';
import type { ImageDataset, InMemoryImageDataset } from './dataset.js';
import { loadIdxDataset } from './idx.js';
import { knnEvaluate, linearProbe } from './probe.js';
import { syntheticTextures } from './synthetic.js';
import { train, type StepMetrics } from './train.js';

const FILES: (keyof CheckpointFiles)[] = ['state.safetensors', 'state.json', 'backbone.safetensors', 'backbone.json'];

const USAGE = `usage: npm run train:local -- [--method mocov3|simclr|byol] [--data synthetic|<IDX folder>] [--out var/moco-local] [--backend auto|tensorflow|wasm|cpu]
  [--arch vit_tiny|vit_small|vit_base|resnet18|resnet50] [--dim N] [--depth N] [--heads N] [--patch N] [--image-size N]
  [--pos-embed sincos|learned|none] [--pooling cls|gap|gap_no_ln] [--train-patch-projection] [--batch N] [--micro-batch N]
  [--lr X] [--optimizer adamw|lars] [--warmup-epochs X] [--epochs N] [--max-steps N] [--hidden-dim N] [--out-dim N]
  [--no-predictor] [--temperature X] [--checkpoint-every N] [--seed N] [--limit N] [--resume] [--probe]`;

/** The command line; a mistake in it is one line plus the usage, not a stack trace. */
function parseOptions() {
  try {
    return parseArgs({ options: OPTIONS });
  } catch (err) {
    process.stderr.write(`train:local: ${(err as Error).message.split(/\.(\s|$)/)[0]}; --help lists the options\n`);
    process.exit(2);
  }
}

const OPTIONS = {
  method: { type: 'string', default: 'mocov3' },
  data: { type: 'string', default: 'synthetic' },
  out: { type: 'string', default: 'var/moco-local' },
  backend: { type: 'string', default: 'auto' },
  arch: { type: 'string', default: 'vit_tiny' },
  dim: { type: 'string' },
  depth: { type: 'string' },
  heads: { type: 'string' },
  patch: { type: 'string' },
  'image-size': { type: 'string' },
  'pos-embed': { type: 'string' },
  pooling: { type: 'string' },
  'train-patch-projection': { type: 'boolean', default: false },
  batch: { type: 'string', default: '64' },
  'micro-batch': { type: 'string' },
  lr: { type: 'string' },
  optimizer: { type: 'string' },
  'warmup-epochs': { type: 'string' },
  epochs: { type: 'string', default: '10' },
  'max-steps': { type: 'string' },
  'hidden-dim': { type: 'string', default: '1024' },
  'out-dim': { type: 'string', default: '256' },
  'no-predictor': { type: 'boolean', default: false },
  temperature: { type: 'string' },
  'checkpoint-every': { type: 'string', default: '100' },
  seed: { type: 'string', default: '0' },
  limit: { type: 'string' },
  resume: { type: 'boolean', default: false },
  probe: { type: 'boolean', default: false },
  help: { type: 'boolean', default: false },
} as const;
const { values: a } = parseOptions();
if (a.help) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}

const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));

async function loadData(): Promise<{ train: ImageDataset; test?: ImageDataset }> {
  if (a.data === 'synthetic') {
    const all = syntheticTextures({ size: 2560, imageSize: 32, numClasses: 8, seed: 1 });
    return { train: all.subset(range(0, 2048)), test: all.subset(range(2048, 2560)) };
  }
  const file = (stem: string) => [join(a.data!, stem + '.gz'), join(a.data!, stem)].find(existsSync);
  const trainImages = file('train-images-idx3-ubyte');
  if (!trainImages) throw new Error(`${a.data}: no train-images-idx3-ubyte[.gz]`);
  let trainSet: InMemoryImageDataset = await loadIdxDataset(trainImages, file('train-labels-idx1-ubyte'));
  if (a.limit) trainSet = trainSet.subset(range(0, Math.min(Number(a.limit), trainSet.size)));
  const testImages = file('t10k-images-idx3-ubyte');
  const test = testImages ? await loadIdxDataset(testImages, file('t10k-labels-idx1-ubyte')) : undefined;
  return { train: trainSet, test };
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

function progressBar(m: StepMetrics, total: number): string {
  const width = 30;
  const done = Math.round((width * m.step) / total);
  return `\r[${'#'.repeat(done)}${'.'.repeat(width - done)}] ${m.step}/${total} ep ${m.epoch.toFixed(2)} loss ${m.loss.toFixed(4)} lr ${m.lr.toExponential(2)} m ${m.momentum.toFixed(4)} ${m.imagesPerSec.toFixed(1)} img/s `;
}

async function main() {
  const backend = await selectBackend(a.backend as BackendPreference);
  const blas = typeof backend.blas === 'string' ? backend.blas : `${backend.blas.library}, ${backend.blas.threads} thread(s)`;
  process.stderr.write(`backend ${backend.backend} (${backend.device}, ${backend.threads} thread(s), kernels ${backend.kernels}; BLAS: ${blas}); ${JSON.stringify(backend.versions)}\n`);
  const data = await loadData();
  const config: TrainConfigInput = {
    method: a.method as Method,
    model: {
      arch: a.arch as 'vit_tiny',
      dim: num(a.dim),
      depth: num(a.depth),
      heads: num(a.heads),
      patch: num(a.patch),
      imageSize: num(a['image-size']),
      posEmbed: a['pos-embed'] as 'sincos' | undefined,
      pooling: a.pooling as 'cls' | undefined,
      freezePatchProjection: !a['train-patch-projection'],
    },
    moco: {
      temperature: num(a.temperature),
      projector: { hiddenDim: num(a['hidden-dim']), outDim: num(a['out-dim']) },
      // SimCLR has no predictor: leave it to the method's default unless --no-predictor.
      predictor: { enabled: a['no-predictor'] ? false : undefined, hiddenDim: num(a['hidden-dim']) },
    },
    optim: { batch: num(a.batch), microBatch: num(a['micro-batch']), lr: num(a.lr), name: a.optimizer as 'adamw' | undefined, warmupEpochs: num(a['warmup-epochs']) },
    epochs: num(a.epochs),
    maxSteps: num(a['max-steps']) ?? null,
    checkpointEvery: num(a['checkpoint-every']),
    seed: num(a.seed),
  };
  await mkdir(a.out!, { recursive: true });
  let resumeFrom: CheckpointFiles | undefined;
  const latest = join(a.out!, 'latest');
  if (a.resume) {
    const dir = (await readFile(latest, 'utf8')).trim();
    resumeFrom = Object.fromEntries(await Promise.all(FILES.map(async (f) => [f, new Uint8Array(await readFile(join(a.out!, dir, f)))]))) as CheckpointFiles;
  }
  const controller = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => controller.abort());
  let total = 0;
  let lastBackbone: CheckpointFiles | undefined;
  const result = await train(config, { train: data.train }, {
    signal: controller.signal,
    resumeFrom,
    log: (msg, fields) => {
      if (msg === 'training') total = Number(fields?.steps);
      process.stderr.write(`\n${msg} ${JSON.stringify(fields ?? {})}\n`);
    },
    onStep: (m) => void process.stderr.write(progressBar(m, total)),
    onCheckpoint: async (c) => {
      const dir = `step-${String(c.step).padStart(7, '0')}`;
      await mkdir(join(a.out!, dir), { recursive: true });
      for (const f of FILES) await writeFile(join(a.out!, dir, f), c.files[f]);
      await writeFile(latest, dir + '\n');
      lastBackbone = c.files;
    },
  });
  process.stderr.write(`\n${result.stopped} after ${result.steps} steps, final loss ${result.finalLoss?.toFixed(4)}, ${result.imagesPerSec.toFixed(1)} img/s; checkpoints in ${a.out}\n`);
  if (a.probe && lastBackbone && data.test && data.train.numClasses > 1) {
    const split = { train: data.train, val: data.test };
    const knn = await knnEvaluate(lastBackbone, split);
    const probe = await linearProbe(lastBackbone, split, { epochs: 30, lr: 1, batch: 256 });
    process.stdout.write(JSON.stringify({ knn, probe }, null, 1) + '\n');
  }
}

main().catch((err) => {
  // Bad settings (RangeError naming the field) and divergence are the user's to fix: one line.
  const known = err instanceof RangeError || (err as Error).name === 'TrainingDivergedError';
  process.stderr.write(`\ntrain:local: ${known ? (err as Error).message : ((err as Error).stack ?? err)}\n`);
  process.exit(1);
});
