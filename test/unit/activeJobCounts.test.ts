/** When a submission may skip counting the tenant's active jobs (api/quotas.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ActiveJobCounts } from '../../api/quotas.js';

test('no recent count: count; far below the limit: skip, counting each skip into the estimate', () => {
  const c = new ActiveJobCounts(1000);
  assert.equal(c.maySkipCount('t', 100, 0), false, 'never counted');
  c.counted('t', 80, true, 0); // estimate 81
  const skips = Array.from({ length: 20 }, () => c.maySkipCount('t', 100, 10)).filter(Boolean).length;
  assert.equal(skips, 9, 'from 81 up to 89: a tenth of the limit stays as margin');
  assert.equal(c.maySkipCount('other', 100, 10), false, 'per tenant');
});

test('an old count or a refusal makes the next submission count', () => {
  const c = new ActiveJobCounts(1000);
  c.counted('t', 0, true, 0);
  assert.equal(c.maySkipCount('t', 100, 999), true);
  assert.equal(c.maySkipCount('t', 100, 1000), false, 'older than ttlMs');
  c.counted('t', 100, false, 2000);
  assert.equal(c.maySkipCount('t', 100, 2001), false, 'at the limit');
  const off = new ActiveJobCounts(0);
  off.counted('t', 0, true, 0);
  assert.equal(off.maySkipCount('t', 100, 0), false, 'ttlMs 0: always count');
});

test('tiny limits: 1 always counts, 2 skips only from an estimate of 0', () => {
  const c = new ActiveJobCounts(1000);
  c.counted('t', 0, false, 0);
  assert.equal(c.maySkipCount('t', 1, 0), false);
  assert.equal(c.maySkipCount('t', 2, 0), true, 'estimate 0 < 2 - 1');
  assert.equal(c.maySkipCount('t', 2, 0), false);
});
