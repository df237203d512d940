/**
 * A flood of bad API keys does not reach Postgres (issue 10): failed authentications are limited per
 * client address before the key lookup, and uncached lookups share a per-process budget.
 * Postgres's own statistics on api_keys count the queries that reached it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createHarness, type Harness } from './harness.js';
import { createApp } from '../../../api/app.js';
import { AuthGuard } from '../../../api/auth/guard.js';
import { ApiError } from '../../../api/errors.js';

let h: Harness;
const FAILURES_PER_MINUTE = 20;
const FLOOD = 300;

before(async () => {
  // A long cache: the admin key, once looked up, stays cached through the flood.
  h = await createHarness({ API_AUTH_FAILURES_PER_MINUTE: FAILURES_PER_MINUTE }, { authCacheMs: 600_000 });
});
after(async () => h.close());

/** A request as the Node server hands it to the app: with the client's socket address. */
function from(address: string, key: string, path = '/v1/jobs') {
  return h.app.request(path, { headers: { authorization: `Bearer ${key}` } }, { incoming: { socket: { remoteAddress: address } } });
}

/** Index and sequential scans of api_keys as Postgres counts them (its statistics lag; wait for them to settle). */
async function apiKeyScans(): Promise<number> {
  let last = -1;
  for (;;) {
    await new Promise((r) => setTimeout(r, 1500));
    const [row] = await h.database.sql<{ n: string }[]>`
      select pg_stat_clear_snapshot(), (coalesce(idx_scan, 0) + coalesce(seq_scan, 0))::text as n from pg_stat_user_tables where relname = 'api_keys'`;
    const n = Number(row!.n);
    if (n === last) return n;
    last = n;
  }
}

describe('bad keys are limited before their lookup', () => {
  test(`${FLOOD} bad keys from one address: ${FAILURES_PER_MINUTE} lookups, then 429 without touching Postgres; good keys still pass`, { timeout: 180_000 }, async () => {
    const attacker = '203.0.113.7';
    assert.equal((await from(attacker, h.keys.admin)).status, 200, 'the admin key is cached before the flood');
    const scansBefore = await apiKeyScans();
    const lookupsBefore = h.keyCache.dbLookups;
    const statuses: Record<number, number> = {};
    for (let i = 0; i < FLOOD; i++) {
      const res = await from(attacker, `mom_${randomBytes(6).toString('base64url')}_${randomBytes(32).toString('base64url')}`);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status === 429) {
        const body = (await res.json()) as any;
        assert.equal(body.error.code, 'rate_limited');
        assert.ok(Number(res.headers.get('retry-after')) >= 1);
      } else {
        await res.body?.cancel();
      }
    }
    assert.deepEqual(statuses, { 401: FAILURES_PER_MINUTE, 429: FLOOD - FAILURES_PER_MINUTE });
    assert.equal(h.keyCache.dbLookups - lookupsBefore, FAILURES_PER_MINUTE);
    const scans = (await apiKeyScans()) - scansBefore;
    assert.ok(scans <= FAILURES_PER_MINUTE + 2, `Postgres scanned api_keys ${scans} times for ${FLOOD} bad keys`);

    // The flooded address keeps the key it was seen to hold (cached: no lookup); others are untouched.
    assert.equal((await from(attacker, h.keys.admin)).status, 200);
    assert.equal((await from('198.51.100.9', h.keys.adminB)).status, 200);
    assert.equal((await from('198.51.100.9', 'mom_nope_nope')).status, 401);
  });
});

describe('one lookup per key at a time', () => {
  test('50 requests with one uncached key at once: one Postgres lookup, all admitted under a budget of 1 lookup a second', async () => {
    const { app, keyCache } = createApp({ ...h.deps, config: { ...h.config, API_KEY_LOOKUPS_PER_SECOND: 1 } });
    const statuses = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const res = await app.request('/v1/jobs', { headers: { authorization: `Bearer ${h.keys.readOnly}` } }, { incoming: { socket: { remoteAddress: '192.0.2.1' } } });
        await res.body?.cancel();
        return res.status;
      }),
    );
    assert.deepEqual([...new Set(statuses)], [200]);
    assert.equal(keyCache.dbLookups, 1);
  });
});

describe('AuthGuard', () => {
  test('the lookup budget is shared by every address and refills with time', () => {
    let now = 1_000_000;
    const guard = new AuthGuard({ failuresPerMinute: 1000, lookupsPerSecond: 5, trustProxy: false, now: () => now });
    for (let i = 0; i < 5; i++) guard.admitLookup(`10.0.0.${i}`);
    assert.throws(() => guard.admitLookup('10.0.0.99'), (e: unknown) => e instanceof ApiError && e.status === 429 && e.headers['Retry-After'] === '1');
    now += 400; // 2 tokens back
    guard.admitLookup('10.0.1.1');
    guard.admitLookup('10.0.1.2');
    assert.throws(() => guard.admitLookup('10.0.1.3'));
  });

  test('failures are counted per address per minute; the next minute starts afresh', () => {
    let now = 60_000 * 100;
    const guard = new AuthGuard({ failuresPerMinute: 3, lookupsPerSecond: 1000, trustProxy: false, now: () => now });
    for (let i = 0; i < 3; i++) {
      guard.admitLookup('a');
      guard.recordFailure('a');
    }
    assert.throws(() => guard.admitLookup('a'), (e: unknown) => e instanceof ApiError && e.status === 429 && /3 a minute/.test(e.message));
    guard.admitLookup('b');
    now += 60_000;
    guard.admitLookup('a');
  });
});
