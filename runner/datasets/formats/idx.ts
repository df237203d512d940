/**
 * IDX files in the MNIST / Fashion-MNIST layout: `*-images-idx3-ubyte` (count × rows × cols, uint8)
 * and `*-labels-idx1-ubyte` (count, uint8), each gzipped or not, recognised by their IDX header.
 * A name with "t10k" or "test" is the validation split, one with "train" the training split; with
 * only one pair and no such names the seeded split applies. One IDX file is in memory at a time.
 * An optional `classes.txt` (one name per line, label order) names the classes.
 */
import { gunzipSync } from 'node:zlib';
import { idxHeaderOf, type IdxHeader } from '../archive/detect.js';
import { DatasetIngestError } from '../errors.js';
import { formatBytes, tooLarge } from '../limits.js';
import { OrderedWindow } from '../orderedWindow.js';
import { SPLIT_TRAIN, SPLIT_UNASSIGNED, SPLIT_VAL, type SplitHint } from '../staging.js';
import { DECODE_WINDOW, isJunkPath, type ReaderContext, type ReaderResult } from './context.js';

/** IDX carries no class names; an optional text file beside the IDX files gives them, one a line. */
export const CLASS_NAMES_FILE = 'classes.txt';

interface ImagesPart {
  file: string;
  start: number;
  count: number;
}
interface LabelsPart {
  file: string;
  labels: Uint8Array;
}

export async function readIdx(ctx: ReaderContext): Promise<ReaderResult> {
  const images = new Map<SplitHint, ImagesPart>();
  const labels = new Map<SplitHint, LabelsPart>();
  let names: { file: string; list: string[] } | undefined;
  for await (const entry of ctx.archive.entries()) {
    if (entry.isDirectory || isJunkPath(entry.name)) continue;
    if (entry.name.split('/').pop() === CLASS_NAMES_FILE) {
      const list = (await entry.data()).toString('utf8').split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
      names = { file: entry.name, list };
      continue;
    }
    let bytes = await entry.data();
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = gunzipEntry(entry.name, bytes, ctx.limits.maxEntryBytes);
    const header = idxHeaderOf(bytes);
    if (!header) continue; // READMEs and the like
    const hint = splitFromName(entry.name);
    checkBodyLength(entry.name, bytes, header);
    if (header.dims.length === 1) {
      if (labels.has(hint)) throw duplicate(entry.name, labels.get(hint)!.file);
      labels.set(hint, { file: entry.name, labels: bytes.subarray(header.headerBytes) });
    } else if (header.dims.length === 3) {
      if (images.has(hint)) throw duplicate(entry.name, images.get(hint)!.file);
      const start = ctx.staging.count;
      await stageImages(ctx, entry.name, bytes.subarray(header.headerBytes), header.dims[0], header.dims[1], header.dims[2], hint);
      images.set(hint, { file: entry.name, start, count: header.dims[0] });
    } else {
      throw new DatasetIngestError('unknown_format', `IDX file with ${header.dims.length} dimensions; expected 3 (images) or 1 (labels)`, entry.name);
    }
  }
  if (images.size === 0) {
    throw new DatasetIngestError('no_examples', 'no IDX image file found (expected e.g. train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz)', ctx.uploadName);
  }
  let maxLabel = -1;
  for (const [hint, part] of images) {
    const lab = labels.get(hint);
    if (!lab) throw new DatasetIngestError('count_mismatch', `no labels file for these images (expected a *-labels-idx1-ubyte beside it)`, part.file);
    if (lab.labels.length !== part.count) {
      throw new DatasetIngestError('count_mismatch', `holds ${lab.labels.length} labels but ${part.file} holds ${part.count} images`, lab.file);
    }
    ctx.staging.setLabels(part.start, lab.labels);
    for (const l of lab.labels) if (l > maxLabel) maxLabel = l;
  }
  for (const [hint, lab] of labels) if (!images.has(hint)) throw new DatasetIngestError('count_mismatch', 'labels without a matching images file', lab.file);

  if (names && names.list.length <= maxLabel) {
    throw new DatasetIngestError('bad_label', `names ${names.list.length} classes but labels run up to ${maxLabel}`, names.file);
  }
  const classes = names?.list ?? Array.from({ length: maxLabel + 1 }, (_, k) => String(k));
  const trainPart = images.get(SPLIT_TRAIN) ?? images.get(SPLIT_UNASSIGNED)!;
  const counts = new Int32Array(classes.length);
  for (const l of labels.get(images.has(SPLIT_TRAIN) ? SPLIT_TRAIN : SPLIT_UNASSIGNED)!.labels) counts[l]++;
  const empty = counts.findIndex((c) => c === 0);
  if (empty >= 0) {
    throw new DatasetIngestError('empty_class', `empty class ${empty}: no training image has this label (labels run 0..${maxLabel})`, trainPart.file);
  }
  return { classes };
}

async function stageImages(ctx: ReaderContext, file: string, body: Uint8Array, count: number, rows: number, cols: number, hint: SplitHint): Promise<void> {
  const per = rows * cols;
  const shape = { height: rows, width: cols, channels: 1 as const };
  let i = 0;
  if (!ctx.normalizer.target && count > 0) {
    await ctx.staging.append(await ctx.normalizer.fromRaw(`${file}[0]`, body.subarray(0, per), shape), -1, hint);
    i = 1;
  }
  if (ctx.normalizer.passesThrough(shape)) {
    // The fast path (Fashion-MNIST as is): whole blocks, no per-image work.
    const block = 4096;
    for (; i < count; i += block) {
      const n = Math.min(block, count - i);
      await ctx.staging.append(body.subarray(i * per, (i + n) * per), -1, hint, n);
    }
    return;
  }
  const window = new OrderedWindow<Uint8Array>(DECODE_WINDOW, (pixels) => ctx.staging.append(pixels, -1, hint));
  for (; i < count; i++) await window.push(ctx.normalizer.fromRaw(`${file}[${i}]`, body.subarray(i * per, (i + 1) * per), shape));
  await window.drain();
}

function splitFromName(name: string): SplitHint {
  const base = name.split('/').pop()!.toLowerCase();
  if (/t10k|test|val/.test(base)) return SPLIT_VAL;
  if (/train/.test(base)) return SPLIT_TRAIN;
  return SPLIT_UNASSIGNED;
}

function checkBodyLength(file: string, bytes: Uint8Array, header: IdxHeader): void {
  const expected = header.headerBytes + header.dims.reduce((a, b) => a * b, 1);
  if (bytes.length !== expected) {
    throw new DatasetIngestError('corrupt_archive', `IDX file holds ${bytes.length} bytes but its header (${header.dims.join('×')}) says ${expected}`, file);
  }
}

function gunzipEntry(file: string, bytes: Buffer, maxBytes: number): Buffer {
  try {
    return gunzipSync(bytes, { maxOutputLength: maxBytes });
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge('maxEntryBytes', `gunzips to more than ${formatBytes(maxBytes)}`, file);
    throw new DatasetIngestError('corrupt_archive', `gzip data is corrupt (${(err as Error).message})`, file);
  }
}

function duplicate(file: string, other: string): DatasetIngestError {
  return new DatasetIngestError('unknown_format', `two IDX files of the same kind for the same split (also ${other})`, file);
}
