import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FileClock } from '../../scripts/test-reporter.mjs';

test("the reporter's file clock: each file from the previous file's last event to its own last", () => {
  const clock = new FileClock(0);
  const at = (file: string, ms: number, type = 'test:pass') => clock.observe({ type, data: { file } }, ms);
  at('/r/test/a.test.ts', 2_000, 'test:start');
  at('/r/test/a.test.ts', 5_000);
  at('/r/test/b.test.ts', 65_000);
  at('/r/test/b.test.ts', 70_000);
  clock.observe({ type: 'test:coverage', data: {} }, 90_000);
  at('/r/test/c.test.ts', 71_000);
  assert.deepEqual([...clock.seconds], [['/r/test/a.test.ts', 5], ['/r/test/b.test.ts', 65], ['/r/test/c.test.ts', 1]]);
  assert.deepEqual(clock.slowest(2, '/r').trim().split('\n'), [
    '== slowest test files (wall seconds; 3 files, 71 s in all)',
    '    65.0  test/b.test.ts',
    '     5.0  test/a.test.ts',
  ]);
});
