import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counts, FileClock, mergeCoverage, ownSourceCoverage } from '../../scripts/test-reporter.mjs';

test("the reporter's file clock: each file's own duration, from the event Node names after the file", () => {
  const clock = new FileClock();
  const done = (file: string, name: string, ms: number) => clock.observe({ type: 'test:complete', data: { file, name, nesting: 0, details: { duration_ms: ms, passed: true } } });
  // Files running side by side: their events interleave; only the file-level completion counts.
  clock.observe({ type: 'test:dequeue', data: { file: '/r/test/a.test.ts', name: '/r/test/a.test.ts', nesting: 0 } });
  done('/r/test/b.test.ts', 'a test in b', 60_000);
  done('/r/test/a.test.ts', '/r/test/a.test.ts', 5_000);
  done('/r/test/b.test.ts', '/r/test/b.test.ts', 65_000);
  clock.observe({ type: 'test:coverage', data: {} });
  done('/r/test/c.test.ts', '/r/test/c.test.ts', 1_000);
  assert.deepEqual([...clock.seconds], [['/r/test/a.test.ts', 5], ['/r/test/b.test.ts', 65], ['/r/test/c.test.ts', 1]]);
  assert.deepEqual(clock.slowest(2, '/r').trim().split('\n'), [
    '== slowest test files (wall seconds; 3 files, 71 s in all)',
    '    65.0  test/b.test.ts',
    '     5.0  test/a.test.ts',
  ]);
});

test("the reporter's counts come from the run's closing diagnostics, not a file's", () => {
  const counts = new Counts();
  const diagnostic = (message: string, file?: string) => counts.observe({ type: 'test:diagnostic', data: { message, nesting: 0, ...(file ? { file } : {}) } });
  diagnostic('tests 3', '/r/test/a.test.ts');
  for (const m of ['tests 412', 'suites 9', 'pass 410', 'fail 2', 'duration_ms 1000.5']) diagnostic(m);
  assert.deepEqual(counts.values, { tests: 412, pass: 410, fail: 2 });
});

test('coverage of two lanes: a line is covered when either covered it; only own source is kept', () => {
  const file = (p: string, counts: number[]) => ({ path: p, totalLineCount: counts.length, coveredLineCount: counts.filter((c) => c > 0).length, lines: counts.map((count, i) => ({ line: i + 1, count })) });
  const laneA = ownSourceCoverage([file('/r/api/app.ts', [1, 0, 0, 2]), file('/r/node_modules/x/index.js', [1]), file('/r/test/a.test.ts', [1])], '/r');
  const laneB = ownSourceCoverage([file('/r/api/app.ts', [0, 3, 0, 0]), file('/r/common/config.ts', [0, 1])], '/r');
  assert.deepEqual(laneA.map((f) => f.path), ['/r/api/app.ts']);
  assert.deepEqual(mergeCoverage([laneA, laneB]), [
    { path: '/r/api/app.ts', totalLineCount: 4, coveredLineCount: 3 },
    { path: '/r/common/config.ts', totalLineCount: 2, coveredLineCount: 1 },
  ]);
});
