/**
 * CIFAR-10/100 binary batches. A CIFAR-10 record is 1 label byte + 3072 pixel bytes, a CIFAR-100
 * record 2 label bytes (coarse, fine; we keep fine) + 3072; pixels are planar (all R, then G, then
 * B, 32×32 each) and become HWC here. data_batch_* / train.bin train; test_batch / test.bin validate.
 * Class names come from batches.meta.txt / fine_label_names.txt when the archive has them.
 */
import { DatasetIngestError } from '../errors.js';
import { OrderedWindow } from '../orderedWindow.js';
import { SPLIT_TRAIN, SPLIT_VAL, type SplitHint } from '../staging.js';
import { DECODE_WINDOW, isJunkPath, type ReaderContext, type ReaderResult } from './context.js';

const SIDE = 32;
const PIXELS = SIDE * SIDE * 3;

export async function readCifar(ctx: ReaderContext, variant: 10 | 100): Promise<ReaderResult> {
  const labelBytes = variant === 10 ? 1 : 2;
  const record = labelBytes + PIXELS;
  const metaName = variant === 10 ? 'batches.meta.txt' : 'fine_label_names.txt';
  let names: string[] | undefined;
  const trainCounts = new Int32Array(variant);
  let batches = 0;
  let firstTrainFile: string | undefined;

  for await (const entry of ctx.archive.entries()) {
    if (entry.isDirectory || isJunkPath(entry.name)) continue;
    const base = entry.name.split('/').pop()!;
    if (base === metaName) {
      names = (await entry.data()).toString('utf8').split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
      continue;
    }
    const hint = splitOf(base, variant);
    if (!hint) continue;
    const bytes = await entry.data();
    if (bytes.length === 0 || bytes.length % record !== 0) {
      throw new DatasetIngestError(
        'corrupt_archive',
        `holds ${bytes.length} bytes, not a whole number of ${record}-byte CIFAR-${variant} records (truncated, or not CIFAR-${variant})`,
        entry.name,
      );
    }
    if (hint === SPLIT_TRAIN) firstTrainFile ??= entry.name;
    batches++;
    await stageBatch(ctx, entry.name, bytes, variant, labelBytes, hint, trainCounts);
  }
  if (batches === 0) {
    const expected = variant === 10 ? 'data_batch_1.bin … test_batch.bin' : 'train.bin, test.bin';
    throw new DatasetIngestError('no_examples', `no CIFAR-${variant} batches found (expected ${expected})`, ctx.uploadName);
  }
  if (names && names.length !== variant) {
    throw new DatasetIngestError('bad_label', `lists ${names.length} class names, CIFAR-${variant} has ${variant}`, metaName);
  }
  const classes = names ?? Array.from({ length: variant }, (_, k) => String(k));
  const empty = trainCounts.findIndex((c) => c === 0);
  if (empty >= 0) {
    throw new DatasetIngestError('empty_class', `empty class "${classes[empty]}" (${empty}): no training record has this label`, firstTrainFile ?? ctx.uploadName);
  }
  return { classes };
}

function splitOf(base: string, variant: 10 | 100): SplitHint | null {
  if (variant === 10) {
    if (/^data_batch_\d+\.bin$/.test(base)) return SPLIT_TRAIN;
    if (base === 'test_batch.bin') return SPLIT_VAL;
  } else {
    if (base === 'train.bin') return SPLIT_TRAIN;
    if (base === 'test.bin') return SPLIT_VAL;
  }
  return null;
}

async function stageBatch(
  ctx: ReaderContext,
  file: string,
  bytes: Uint8Array,
  variant: 10 | 100,
  labelBytes: number,
  hint: SplitHint,
  trainCounts: Int32Array,
): Promise<void> {
  const record = labelBytes + PIXELS;
  const count = bytes.length / record;
  const shape = { height: SIDE, width: SIDE, channels: 3 as const };
  const window = new OrderedWindow<{ pixels: Uint8Array; label: number }>(DECODE_WINDOW, ({ pixels, label }) =>
    ctx.staging.append(pixels, label, hint),
  );
  for (let i = 0; i < count; i++) {
    const r = bytes.subarray(i * record, (i + 1) * record);
    const label = r[labelBytes - 1];
    if (label >= variant) throw new DatasetIngestError('bad_label', `record ${i} has label ${label}, CIFAR-${variant} labels run 0..${variant - 1}`, file);
    if (hint === SPLIT_TRAIN) trainCounts[label]++;
    const hwc = planarToInterleaved(r.subarray(labelBytes));
    const work = ctx.normalizer.passesThrough(shape) ? Promise.resolve(hwc) : ctx.normalizer.fromRaw(`${file}[${i}]`, hwc, shape);
    if (!ctx.normalizer.target) await work;
    await window.push(work.then((pixels) => ({ pixels, label })));
  }
  await window.drain();
}

function planarToInterleaved(chw: Uint8Array): Uint8Array {
  const plane = SIDE * SIDE;
  const out = new Uint8Array(PIXELS);
  for (let p = 0, o = 0; p < plane; p++, o += 3) {
    out[o] = chw[p];
    out[o + 1] = chw[plane + p];
    out[o + 2] = chw[2 * plane + p];
  }
  return out;
}
