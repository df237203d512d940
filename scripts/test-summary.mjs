/**
 * The closing note of `npm test` when its files ran in lanes (scripts/test.sh): the lanes' counts
 * added up, the slowest files of both, and one line-coverage summary over both (a line counts as
 * covered when either lane covered it). Arguments: the lanes' TEST_LANE_SUMMARY files.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { Counts, mergeCoverage, slowestFiles, summarize } from './test-reporter.mjs';

// A lane stopped by the watchdog leaves no file: the others are still summarized.
const files = process.argv.slice(2);
const missing = files.filter((file) => !existsSync(file));
const lanes = files.filter((file) => existsSync(file)).map((file) => JSON.parse(readFileSync(file, 'utf8')));
const totals = Counts.NAMES.map((name) => `${name} ${lanes.reduce((n, lane) => n + (lane.counts[name] ?? 0), 0)}`);
const out = [`== all lanes: ${totals.join(', ')}${missing.length ? ` (no summary from the ${missing.map((file) => path.basename(file, '.json')).join(', ')} lane)` : ''}`, ''];
out.push(slowestFiles(new Map(lanes.flatMap((lane) => lane.seconds)), 12));
const coverage = lanes.map((lane) => lane.coverage).filter(Boolean);
if (coverage.length) out.push(summarize(mergeCoverage(coverage)));
process.stdout.write(out.join('\n') + '\n');
