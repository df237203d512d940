/**
 * Headers on the hot paths, read and written on Node's own request and response objects when the
 * app runs under @hono/node-server, and through Hono otherwise (`app.request` in tests).
 *
 * Why: under @hono/node-server, `c.req.header(name)` builds a WHATWG Headers object (undici) from
 * every raw header of the request, and one `c.header(name, value)` before the response makes Hono
 * build a second Headers object for the response, which the server then converts back to Node's
 * form. A bare route that sets no header and reads none pays neither, and both show per request.
 * Node merges headers set with `setHeader` into the `writeHead` the server calls later (the
 * response's own headers win), so a header set here reaches every response of the request.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Context } from 'hono';

interface NodeBindings {
  incoming?: IncomingMessage;
  outgoing?: ServerResponse;
}

const bindings = (c: Context) => c.env as NodeBindings | undefined;

export function nodeIncoming(c: Context): IncomingMessage | undefined {
  return bindings(c)?.incoming;
}

/** A request header by its lower-case name. */
export function requestHeader(c: Context, lowerCaseName: string): string | undefined {
  const incoming = bindings(c)?.incoming;
  // Only a real IncomingMessage has parsed headers (a test's bindings may carry just a socket address).
  if (!incoming?.headers) return c.req.header(lowerCaseName);
  const v = incoming.headers[lowerCaseName];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** A response header for whatever response this request ends with. */
export function setResponseHeader(c: Context, name: string, value: string): void {
  const outgoing = bindings(c)?.outgoing;
  if (outgoing && !outgoing.headersSent) outgoing.setHeader(name, value);
  else c.header(name, value);
}
