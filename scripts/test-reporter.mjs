/**
 * The test reporter of `npm test`: Node's spec reporter for the tests, and instead of its
 * file-by-file coverage table (hundreds of lines, test files included) a short summary of line
 * coverage: per folder, the total over the project's own source, and every file of the folders
 * held to the 80 % aim that falls below it, including files no test loaded at all (Node 20's
 * coverage only knows files that were loaded, so those are found on disk and counted as 0 %).
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { Readable } from 'node:stream';
import { spec as Spec } from 'node:test/reporters';

/** Folders where every file should reach AIM_PERCENT of its lines. */
const WATCHED = ['api', 'runner/supervisor', 'runner/datasets'];
const AIM_PERCENT = 80;
/** Folders reported on their own line; everything else under the root is grouped by its top folder. */
const SPLIT = new Set(['runner']);
const NOT_SOURCE = /^(test|node_modules|var|bench|scripts|baselines|reference|infra)\//;

/** @typedef {{ path: string, totalLineCount: number, coveredLineCount: number }} FileCoverage */
/** @typedef {{ lines: number, covered: number }} Tally */

/** @param {Tally} t */
const percent = (t) => (t.lines === 0 ? 100 : (100 * t.covered) / t.lines);
/** @param {Tally} t */
const fmt = (t) => `${percent(t).toFixed(1).padStart(5)} %  (${t.covered}/${t.lines} lines)`;

/** @param {string} rel */
function folderOf(rel) {
  const parts = rel.split('/');
  if (parts.length === 1) return '.';
  if (SPLIT.has(parts[0]) && parts.length > 2) return `${parts[0]}/${parts[1]}`;
  return parts[0];
}

/** @param {string} root @param {string} folder @returns {string[]} */
function sourceFilesUnder(root, folder) {
  const out = [];
  /** @param {string} dir */
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path.relative(root, full));
    }
  };
  walk(path.join(root, folder));
  return out;
}

/** @param {FileCoverage[]} files @returns {string} */
export function summarize(files, root = process.cwd()) {
  /** @type {Map<string, Tally>} */
  const byFile = new Map();
  for (const f of files) {
    const rel = path.relative(root, f.path).split(path.sep).join('/');
    if (rel.startsWith('..') || NOT_SOURCE.test(rel)) continue;
    byFile.set(rel, { lines: f.totalLineCount, covered: f.coveredLineCount });
  }
  /** @type {Map<string, Tally>} */
  const folders = new Map();
  const total = { lines: 0, covered: 0 };
  for (const [rel, t] of byFile) {
    const folder = folders.get(folderOf(rel)) ?? { lines: 0, covered: 0 };
    folder.lines += t.lines;
    folder.covered += t.covered;
    folders.set(folderOf(rel), folder);
    total.lines += t.lines;
    total.covered += t.covered;
  }
  const lines = ['', '== line coverage (files the tests loaded, test files excluded)'];
  for (const [folder, t] of [...folders].sort(([a], [b]) => a.localeCompare(b))) lines.push(`  ${folder.padEnd(20)} ${fmt(t)}`);
  lines.push(`  ${'total'.padEnd(20)} ${fmt(total)}`);
  const below = [];
  for (const folder of WATCHED) {
    for (const rel of sourceFilesUnder(root, folder).sort()) {
      const t = byFile.get(rel);
      if (!t) below.push(`  ${rel.padEnd(48)}   0.0 %  (never loaded by a test)`);
      else if (percent(t) < AIM_PERCENT) below.push(`  ${rel.padEnd(48)} ${fmt(t)}`);
    }
  }
  lines.push(`== files of ${WATCHED.join(', ')} under ${AIM_PERCENT} % of lines: ${below.length}`, ...below, '');
  return lines.join('\n');
}

/**
 * Wall time per test file. Files run one at a time (--test-concurrency=1) and Node 20 reports no
 * event per file, so a file's time is from the previous file's last event to its own last one:
 * its process start-up, imports and tests. Printed as the slowest few, to show where the suite's
 * minutes go.
 */
export class FileClock {
  /** @type {Map<string, number>} */
  seconds = new Map();
  /** @type {string | undefined} */
  current;
  /** When the current file began: the previous file's last event. */
  startedAt;
  lastEventAt;

  constructor(now = Date.now()) {
    this.startedAt = now;
    this.lastEventAt = now;
  }

  /** @param {{ type: string, data: any }} event @param {number} now */
  observe(event, now = Date.now()) {
    const file = event.data?.file;
    if (!file || !event.type.startsWith('test:')) return;
    if (file !== this.current) {
      this.current = file;
      this.startedAt = this.lastEventAt;
    }
    this.lastEventAt = now;
    this.seconds.set(file, (now - this.startedAt) / 1000);
  }

  /** @param {number} n */
  slowest(n, root = process.cwd()) {
    const rows = [...this.seconds].sort(([, a], [, b]) => b - a).slice(0, n);
    const total = [...this.seconds.values()].reduce((a, b) => a + b, 0);
    return [
      `== slowest test files (wall seconds; ${this.seconds.size} files, ${total.toFixed(0)} s in all)`,
      ...rows.map(([file, sec]) => `  ${sec.toFixed(1).padStart(6)}  ${path.relative(root, file)}`),
      '',
    ].join('\n');
  }
}

/** @param {AsyncIterable<{ type: string, data: any }>} source */
export default async function* reporter(source) {
  /** @type {string | undefined} */
  let summary;
  const clock = new FileClock();
  async function* withoutCoverage() {
    for await (const event of source) {
      clock.observe(event);
      if (event.type === 'test:coverage') summary = summarize(event.data.summary.files);
      else yield event;
    }
  }
  const spec = Readable.from(withoutCoverage()).pipe(new Spec());
  for await (const chunk of spec) yield String(chunk);
  yield '\n' + clock.slowest(12);
  if (summary) yield summary;
}
