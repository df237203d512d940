/**
 * Writes Debian's Fashion-MNIST files as one IDX tar.gz ready to upload with `format: "idx"`, and
 * prints what it holds.
 *
 *   npx tsx scripts/import-fashion-mnist.ts [out.tar.gz] [--train N] [--val N] [--dir /usr/share/datasets/fashion-mnist]
 *
 * In code: `importFashionMnist()` (in-memory train/val ImageDatasets) and `fashionMnistIdxArchive()`
 * (the archive bytes), both from runner/datasets.
 */
import { writeFile } from 'node:fs/promises';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain, UserFacingError } from '../common/errors.js';
import { FASHION_MNIST_DIR, fashionMnistIdxArchive } from '../runner/datasets/index.js';

runMain(async () => {
  const { values, positionals } = parseCommandLine(
    `npx tsx scripts/import-fashion-mnist.ts [out.tar.gz] [--train N] [--val N] [--dir ${FASHION_MNIST_DIR}]   (writes an IDX archive to upload with --format idx)`,
    { train: { type: 'string' }, val: { type: 'string' }, dir: { type: 'string', default: FASHION_MNIST_DIR } },
    { allowPositionals: true },
  );
  if (positionals.length > 1) throw new UserFacingError(`one output file, got ${positionals.length}; --help lists the options`);
  const count = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new UserFacingError(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
  const out = positionals[0] ?? 'fashion-mnist-idx.tar.gz';
  const limit = { train: count(values.train, 'train'), val: count(values.val, 'val') };
  let archive: Buffer;
  try {
    archive = await fashionMnistIdxArchive(values.dir, limit);
  } catch (err) {
    throw new UserFacingError(`cannot read Fashion-MNIST from ${values.dir} (apt-get install fashion-mnist?): ${(err as Error).message}`);
  }
  await writeFile(out, archive);
  console.log(`${out}: ${(archive.length / 1e6).toFixed(1)} MB, train ${limit.train ?? 60000} + val ${limit.val ?? 10000} images, 28x28 grayscale, 10 classes; upload with {"format":"idx"}`);
});
