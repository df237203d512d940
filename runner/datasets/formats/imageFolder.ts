/**
 * ImageFolder (labeled: `class/file.png`, optionally under `train/` and `val/`) and unlabeled
 * folders (images anywhere). Labels are decided once every path has been seen, because a common
 * top folder (`mydata/cat/1.png`) and a train/val layout can only be told apart from all of them:
 * while streaming, each image is staged with a provisional id for its directory.
 */
import { DatasetIngestError } from '../errors.js';
import { OrderedWindow } from '../orderedWindow.js';
import { SPLIT_TRAIN, SPLIT_UNASSIGNED, SPLIT_VAL } from '../staging.js';
import { DECODE_WINDOW, isJunkPath, type ReaderContext, type ReaderResult } from './context.js';

/** Files with these extensions are decoded (and an undecodable one fails the ingest); others are skipped. */
const IMAGE_EXT = /\.(png|jpe?g|webp|gif|tiff?|avif|bmp)$/i;
const SPLIT_DIRS: Record<string, typeof SPLIT_TRAIN | typeof SPLIT_VAL> = {
  train: SPLIT_TRAIN,
  val: SPLIT_VAL,
  valid: SPLIT_VAL,
  validation: SPLIT_VAL,
  test: SPLIT_VAL,
};

export async function readImageFolder(ctx: ReaderContext, labeled: boolean): Promise<ReaderResult> {
  const dirIds = new Map<string, number>();
  const dirEntries = new Set<string>();
  let topLevelImage: string | undefined;
  let skipped = 0;
  const window = new OrderedWindow<{ pixels: Uint8Array; dirId: number }>(DECODE_WINDOW, async ({ pixels, dirId }) =>
    ctx.staging.append(pixels, dirId, SPLIT_UNASSIGNED),
  );

  for await (const entry of ctx.archive.entries()) {
    if (isJunkPath(entry.name)) continue;
    if (entry.isDirectory) {
      dirEntries.add(entry.name.replace(/\/+$/, ''));
      continue;
    }
    if (!IMAGE_EXT.test(entry.name)) {
      skipped++;
      continue;
    }
    const dir = entry.name.includes('/') ? entry.name.slice(0, entry.name.lastIndexOf('/')) : '';
    if (dir === '') topLevelImage ??= entry.name;
    let dirId = dirIds.get(dir);
    if (dirId === undefined) dirIds.set(dir, (dirId = dirIds.size));
    const bytes = await entry.data();
    const work = ctx.normalizer.fromEncoded(entry.name, bytes).then((pixels) => ({ pixels, dirId }));
    // The first image fixes the shape: it must finish before any other starts.
    if (!ctx.normalizer.target) await work;
    await window.push(work);
  }
  await window.drain();
  if (skipped) ctx.log.info({ skipped }, 'skipped files that are not images');
  if (ctx.staging.count === 0) {
    throw new DatasetIngestError('no_examples', 'no images found (expected .png or .jpg files' + (labeled ? ' in class folders)' : ')'), ctx.uploadName);
  }
  if (!labeled) {
    ctx.staging.remapLabels(new Int32Array(dirIds.size).fill(-1));
    return { classes: [] };
  }
  if (topLevelImage) {
    throw new DatasetIngestError('no_examples', 'image outside any class folder; ImageFolder expects class/image.png (or use format "unlabeled")', topLevelImage);
  }
  return assignClasses(ctx, [...dirIds.keys()], dirEntries);
}

function assignClasses(ctx: ReaderContext, imageDirs: string[], dirEntries: Set<string>): ReaderResult {
  const paths = imageDirs.map((d) => d.split('/'));
  // Strip a common top folder while every image keeps at least its class folder.
  let strip = 0;
  while (paths.every((p) => p.length >= strip + 2 && p[strip] === paths[0][strip])) strip++;
  const rel = paths.map((p) => p.slice(strip));
  const splitLayout = rel.every((p) => p.length >= 2 && p[0].toLowerCase() in SPLIT_DIRS);
  const classOf = (p: string[]) => (splitLayout ? p[1] : p[0]);

  const classes = [...new Set(rel.map(classOf))].sort();
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const dirToClass = Int32Array.from(rel.map((p) => classIndex.get(classOf(p))!));
  const dirToHint = rel.map((p) => (splitLayout ? SPLIT_DIRS[p[0].toLowerCase()] : SPLIT_UNASSIGNED));

  // Hints first, while the staged labels still hold directory ids.
  const labels = ctx.staging.labels;
  const hints = ctx.staging.hints;
  for (let i = 0; i < labels.length; i++) hints[i] = dirToHint[labels[i]];
  ctx.staging.remapLabels(dirToClass);

  // A folder the archive lists at class level, with no image under it, is an empty class.
  const prefix = paths[0].slice(0, strip).join('/');
  for (const dir of [...dirEntries].sort()) {
    const parts = dir.split('/');
    if (strip && parts.slice(0, strip).join('/') !== prefix) continue;
    const r = parts.slice(strip);
    const depth = splitLayout ? 2 : 1;
    if (r.length !== depth || (splitLayout && !(r[0].toLowerCase() in SPLIT_DIRS))) continue;
    if (!classIndex.has(classOf(r))) {
      throw new DatasetIngestError('empty_class', `empty class "${classOf(r)}": the folder holds no images`, `${dir}/`);
    }
  }
  if (splitLayout) {
    const trainCounts = new Int32Array(classes.length);
    for (let i = 0; i < labels.length; i++) if (hints[i] === SPLIT_TRAIN) trainCounts[labels[i]]++;
    const missing = classes.findIndex((_, k) => trainCounts[k] === 0);
    if (missing >= 0) {
      throw new DatasetIngestError('empty_class', `empty class "${classes[missing]}": it has images in val but none in train`, ctx.uploadName);
    }
  }
  return { classes };
}
