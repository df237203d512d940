/**
 * Dataset benchmark: Fashion-MNIST (70,000 images) from Debian's package files, uploaded to the
 * local S3 server, ingested end to end into shards (images/s), then loaded back and read in random
 * batches of 256 (batches/s), compared with the trainer's step rate on this machine's cores.
 *
 *   bash scripts/services.sh && npm run bench:datasets
 *
 * Uses its own database and bucket (removed afterwards). TRAINER_IMAGES_PER_SEC_PER_CORE overrides
 * the trainer figure (default 20: the top of DESIGN.md's 5–20 images/s/core for ViT-tiny on wasm).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { createTestDatabase, createTestStorage } from '../test/support/services.js';
import { uploadVersion } from '../test/integration/datasets/fixtures.js';
import { fashionMnistIdxArchive, generateSyntheticDataset, ingestDatasetVersion, openDatasetSplit, writeImageFolderArchive } from '../runner/datasets/index.js';
import { seededRandom, shuffleInPlace } from '../runner/datasets/random.js';

const BATCH = 256;
const trainerPerCore = Number(process.env.TRAINER_IMAGES_PER_SEC_PER_CORE ?? 20);
const cores = availableParallelism();

async function main(): Promise<void> {
  const [pg, s3] = await Promise.all([createTestDatabase(), createTestStorage()]);
  const work = await mkdtemp(join(tmpdir(), 'bench-datasets-'));
  try {
    let t = performance.now();
    const archive = await fashionMnistIdxArchive();
    const v = await uploadVersion(pg.db, s3.storage, archive, { format: 'idx' }, 'fashion-mnist.tar.gz');
    const uploadS = (performance.now() - t) / 1000;

    t = performance.now();
    const manifest = await ingestDatasetVersion({ db: pg.db, storage: s3.storage, log: createLogger('warn'), workDir: work }, v.id);
    const ingestS = (performance.now() - t) / 1000;
    const images = manifest.splits.train.count + (manifest.splits.val?.count ?? 0);

    t = performance.now();
    const cacheDir = join(work, 'cache');
    const cold = openDatasetSplit(s3.storage, manifest, 'train', { cacheDir });
    await cold.read([0]);
    const firstBatchColdS = (performance.now() - t) / 1000;
    await cold.ready();
    const allColdS = (performance.now() - t) / 1000;

    t = performance.now();
    const warm = openDatasetSplit(s3.storage, manifest, 'train', { cacheDir });
    await warm.ready();
    const openWarmS = (performance.now() - t) / 1000;

    // One epoch in a seeded order, batch by batch, as the trainer reads it.
    const order = shuffleInPlace(Int32Array.from({ length: warm.size }, (_, i) => i), seededRandom(1));
    const batches = Math.floor(order.length / BATCH);
    t = performance.now();
    for (let b = 0; b < batches; b++) await warm.read(order.subarray(b * BATCH, (b + 1) * BATCH));
    const readS = (performance.now() - t) / 1000;
    const loaderBatchesPerS = batches / readS;
    const trainerBatchesPerS = (trainerPerCore * cores) / BATCH;

    // The same upload resized to 32×32 (ViT patch 4): every image is resampled.
    const v32 = await uploadVersion(pg.db, s3.storage, archive, { format: 'idx', imageSize: 32, resize: 'stretch' }, 'fashion-mnist.tar.gz');
    t = performance.now();
    await ingestDatasetVersion({ db: pg.db, storage: s3.storage, log: createLogger('warn'), workDir: work }, v32.id);
    const ingest32S = (performance.now() - t) / 1000;

    // ImageFolder: every file is a PNG that sharp decodes (3,000 synthetic 32×32 RGB images).
    const pngs = await writeImageFolderArchive(generateSyntheticDataset({ numClasses: 10, perClass: 300, size: 32 }), { container: 'tar.gz' });
    const vPng = await uploadVersion(pg.db, s3.storage, pngs, { format: 'imagefolder' }, 'synthetic.tar.gz');
    t = performance.now();
    await ingestDatasetVersion({ db: pg.db, storage: s3.storage, log: createLogger('warn'), workDir: work }, vPng.id);
    const ingestPngS = (performance.now() - t) / 1000;

    const rows: [string, string][] = [
      ['upload archive (IDX tar.gz, 4 .gz files)', `${(archive.length / 1e6).toFixed(1)} MB in ${uploadS.toFixed(2)} s`],
      ['ingest end to end (S3 → shards → S3 + Postgres)', `${images} images in ${ingestS.toFixed(2)} s = ${Math.round(images / ingestS)} images/s`],
      ['ingest with resize 28→32 (bilinear)', `${images} images in ${ingest32S.toFixed(2)} s = ${Math.round(images / ingest32S)} images/s`],
      ['ingest ImageFolder PNGs (sharp decode per image)', `3000 images in ${ingestPngS.toFixed(2)} s = ${Math.round(3000 / ingestPngS)} images/s`],
      ['shards', `${manifest.splits.train.shards.length} train + ${manifest.splits.val?.shards.length ?? 0} val`],
      ['loader, cold cache: first batch ready', `${firstBatchColdS.toFixed(2)} s (all ${manifest.splits.train.shards.length} train shards: ${allColdS.toFixed(2)} s)`],
      ['loader, warm cache: open + verify sha256', `${openWarmS.toFixed(2)} s`],
      [`loader read, batch ${BATCH}, random order`, `${loaderBatchesPerS.toFixed(0)} batches/s (${Math.round(loaderBatchesPerS * BATCH)} images/s)`],
      [`trainer (${trainerPerCore} images/s/core × ${cores} cores)`, `${trainerBatchesPerS.toFixed(3)} batches/s`],
      ['loader / trainer', `${Math.round(loaderBatchesPerS / trainerBatchesPerS)}x`],
    ];
    for (const [k, val] of rows) console.log(`${k.padEnd(52)} ${val}`);
  } finally {
    await Promise.all([pg.cleanup(), s3.cleanup(), rm(work, { recursive: true, force: true })]);
  }
}

runMain(async () => {
  parseCommandLine('npm run bench:datasets   (no options; env TRAINER_IMAGES_PER_SEC_PER_CORE)', {});
  await main();
});
