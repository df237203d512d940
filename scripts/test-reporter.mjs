/**
 * The test reporter of `npm test`: Node's spec reporter for the tests, and instead of its
 * file-by-file coverage table (hundreds of lines, test files included) a short summary of line
 * coverage: per folder, the total over the project's own source, and every file of the folders
 * held to the 80 % aim that falls below it, including files no test loaded at all (Node 20's
 * coverage only knows files that were loaded, so those are found on disk and counted as 0 %).
 */
import { readdirSync, statSync, writeFileSync } from 'node:fs';
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

/** @typedef {{ path: string, totalLineCount: number, coveredLineCount: number, lines?: { line: number, count: number }[] }} FileCoverage */
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
 * Wall time per test file, printed as the slowest few to show where the suite's minutes go. Node
 * reports each file's end as a `test:complete` event named after the file itself, with the
 * duration of its process (start-up, imports, tests); that holds when files run side by side too.
 */
export class FileClock {
  /** @type {Map<string, number>} */
  seconds = new Map();

  /** @param {{ type: string, data: any }} event */
  observe(event) {
    const { file, name, details } = event.data ?? {};
    if (event.type === 'test:complete' && file && name === file && typeof details?.duration_ms === 'number') {
      this.seconds.set(file, details.duration_ms / 1000);
    }
  }

  /** @param {number} n */
  slowest(n, root = process.cwd()) {
    return slowestFiles(this.seconds, n, root);
  }
}

/** @param {Map<string, number>} seconds @param {number} n */
export function slowestFiles(seconds, n, root = process.cwd()) {
  const rows = [...seconds].sort(([, a], [, b]) => b - a).slice(0, n);
  const total = [...seconds.values()].reduce((a, b) => a + b, 0);
  return [
    `== slowest test files (wall seconds; ${seconds.size} files, ${total.toFixed(0)} s in all)`,
    ...rows.map(([file, sec]) => `  ${sec.toFixed(1).padStart(6)}  ${path.relative(root, file)}`),
    '',
  ].join('\n');
}

/** The run's closing counts (`tests 412`, `pass 410`, …), as Node's root diagnostics state them. */
export class Counts {
  static NAMES = ['tests', 'pass', 'fail', 'cancelled', 'skipped', 'todo'];
  /** @type {Record<string, number>} */
  values = {};

  /** @param {{ type: string, data: any }} event */
  observe(event) {
    if (event.type !== 'test:diagnostic' || event.data?.nesting !== 0 || event.data?.file) return;
    const m = /^(\w+) (\d+)$/.exec(String(event.data.message));
    if (m && Counts.NAMES.includes(m[1])) this.values[m[1]] = Number(m[2]);
  }
}

/**
 * Coverage of several runs (the lanes of scripts/test.sh) as one: a line is covered when any run
 * covered it. Only the project's own source is kept, with its lines, so a lane's file stays small.
 * @param {FileCoverage[]} files
 * @returns {{ path: string, lines: { line: number, count: number }[] }[]}
 */
export function ownSourceCoverage(files, root = process.cwd()) {
  return files
    .filter((f) => {
      const rel = path.relative(root, f.path).split(path.sep).join('/');
      return !rel.startsWith('..') && !NOT_SOURCE.test(rel);
    })
    .map((f) => ({ path: f.path, lines: (f.lines ?? []).map(({ line, count }) => ({ line, count })) }));
}

/** @param {{ path: string, lines: { line: number, count: number }[] }[][]} runs @returns {FileCoverage[]} */
export function mergeCoverage(runs) {
  /** @type {Map<string, Map<number, number>>} */
  const byPath = new Map();
  for (const files of runs) {
    for (const f of files) {
      const lines = byPath.get(f.path) ?? new Map();
      for (const { line, count } of f.lines) lines.set(line, (lines.get(line) ?? 0) + count);
      byPath.set(f.path, lines);
    }
  }
  return [...byPath].map(([p, lines]) => ({
    path: p,
    totalLineCount: lines.size,
    coveredLineCount: [...lines.values()].filter((c) => c > 0).length,
  }));
}

/**
 * With TEST_LANE_SUMMARY set (scripts/test.sh runs files in two lanes), the counts, file times and
 * coverage go to that JSON file instead, for scripts/test-summary.mjs to print once for both lanes.
 * @param {AsyncIterable<{ type: string, data: any }>} source
 */
export default async function* reporter(source) {
  /** @type {FileCoverage[] | undefined} */
  let coverage;
  const clock = new FileClock();
  const counts = new Counts();
  async function* withoutCoverage() {
    for await (const event of source) {
      clock.observe(event);
      counts.observe(event);
      if (event.type === 'test:coverage') coverage = event.data.summary.files;
      else yield event;
    }
  }
  const spec = Readable.from(withoutCoverage()).pipe(new Spec());
  for await (const chunk of spec) yield String(chunk);
  const laneSummary = process.env.TEST_LANE_SUMMARY;
  if (laneSummary) {
    const lane = { counts: counts.values, seconds: [...clock.seconds], coverage: coverage ? ownSourceCoverage(coverage) : null };
    writeFileSync(laneSummary, JSON.stringify(lane));
    return;
  }
  yield '\n' + clock.slowest(12);
  if (coverage) yield summarize(coverage);
}
