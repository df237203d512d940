/**
 * Two real servers on one harness app, to compare a fast path (api/fastPath.ts) with the generic
 * route: `fast` has the app's fast paths in front (api/httpServer.ts), `generic` has none.
 * `counter.taken` counts the requests a fast path answered.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { serveApi } from '../../../api/httpServer.js';
import type { Harness } from './harness.js';

export interface Answer {
  status: number;
  body: string;
  headers: Record<string, string>;
}

export interface Call {
  method?: string;
  key: string | null;
  headers?: Record<string, string>;
  body?: string | ReadableStream<Uint8Array>;
}

export async function fastPathServers(h: Harness) {
  const counter = { taken: 0 };
  const fast = serveApi({ app: h.app, fastPath: (req, res) => (h.fastPath(req, res) ? (counter.taken++, true) : false) }, { port: 0, hostname: '127.0.0.1' });
  const generic = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
  await Promise.all([fast, generic].map((s) => new Promise((r) => (s.listening ? r(null) : s.once('listening', r)))));
  const base = (s: typeof fast) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  const call = async (server: typeof fast, path: string, c: Call): Promise<Answer> => {
    const res = await fetch(base(server) + path, {
      method: c.method ?? 'GET',
      headers: { ...(c.key ? { authorization: `Bearer ${c.key}` } : {}), ...c.headers },
      body: c.body,
      ...(c.body instanceof ReadableStream ? { duplex: 'half' } : {}),
    } as RequestInit);
    const headers: Record<string, string> = {};
    res.headers.forEach((v, k) => (headers[k] = v));
    return { status: res.status, body: await res.text(), headers };
  };
  return {
    counter,
    fast: (path: string, c: Call) => call(fast, path, c),
    generic: (path: string, c: Call) => call(generic, path, c),
    close: () => Promise.all([fast, generic].map((s) => new Promise((r) => s.close(r)))),
  };
}

/** What may differ between two answers a moment apart: the date, the rate-limit count, and the seconds to the next window. */
export function comparable(a: Answer) {
  const { date: _date, 'ratelimit-remaining': _remaining, 'ratelimit-reset': _reset, 'retry-after': retryAfter, ...headers } = a.headers;
  if (retryAfter !== undefined) headers['retry-after'] = retryAfter.replace(/\d+/, 'N');
  return { status: a.status, body: a.body.replace(/retry in \d+ s/, 'retry in N s'), headers };
}

/** The count of the request histogram for one method, route template and status (from /metrics). */
export async function requestCount(h: Harness, method: string, route: string, status: number): Promise<number> {
  const text = await (await h.app.request('/metrics')).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith('momentum_http_request_duration_seconds_count{') && l.includes(`route="${route}"`) && l.includes(`status="${status}"`) && l.includes(`method="${method}"`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

/**
 * With `API_RATE_LIMIT_PER_MINUTE: 5`: five requests alternating between the two paths count down
 * one budget per key (RateLimit-Remaining 4 … 0), and the sixth, taken by the fast path, is its 429,
 * answered as the generic route answers it. `call` makes a fresh request each time.
 */
export async function assertOneRateLimitAcrossPaths(s: Awaited<ReturnType<typeof fastPathServers>>, path: string, call: () => Call): Promise<void> {
  const remaining: string[] = [];
  for (const send of [s.generic, s.fast, s.generic, s.fast, s.fast]) remaining.push((await send(path, call())).headers['ratelimit-remaining']!);
  assert.deepEqual(remaining, ['4', '3', '2', '1', '0']);
  const before = s.counter.taken;
  const fast = await s.fast(path, call());
  assert.equal(s.counter.taken, before + 1, 'the sixth request is the fast path\'s');
  const generic = await s.generic(path, call());
  assert.equal(fast.status, 429);
  assert.match(fast.headers['retry-after'] ?? '', /^\d+$/);
  assert.equal(fast.headers['ratelimit-remaining'], '0');
  assert.deepEqual(comparable(fast), comparable(generic));
}
