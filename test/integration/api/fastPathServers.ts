/**
 * Two real servers on one harness app, to compare a fast path (api/fastPath.ts) with the generic
 * route: `fast` has the app's fast paths in front (api/httpServer.ts), `generic` has none.
 * `counter.taken` counts the requests a fast path answered.
 */
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
