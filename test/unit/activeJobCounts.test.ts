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

test('an expired estimate: one submission counts, those arriving while its count is out keep the estimate', () => {
  const c = new ActiveJobCounts(1000);
  c.counted('t', 10, true, 0); // estimate 11
  assert.equal(c.maySkipCount('t', 100, 1000), false, 'expired: this one counts');
  assert.deepEqual([1001, 1002, 1500].map((now) => c.maySkipCount('t', 100, now)), [true, true, true], 'its count is out: the estimate still serves');
  c.counted('t', 14, true, 1600); // the count saw the three skipped ones too: 14, then itself
  assert.equal(c.maySkipCount('t', 100, 1700), true);
  assert.equal(c.maySkipCount('t', 100, 2600), false, 'expired again: the next one counts');
  assert.equal(c.maySkipCount('t', 100, 3600), false, 'a count that never reported back frees the turn after ttlMs');
  c.counted('t', 94, true, 3700); // estimate 95: within a tenth of the limit
  assert.equal(c.maySkipCount('t', 100, 3800), false);
  assert.equal(c.maySkipCount('t', 100, 3801), false, 'near the limit every submission counts, count out or not');
});
