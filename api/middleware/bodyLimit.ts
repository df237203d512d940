/**
 * The request-body size limit, and the fast way to read JSON bodies on Node.
 *
 * Under @hono/node-server, the first touch of `c.req.raw.body` builds a WHATWG Request around the
 * Node stream (undici Request, AbortController, web ReadableStream), and reading JSON through it
 * goes chunk by chunk through web streams: ~10 % of a job submission's CPU in the profile. For a
 * JSON body this middleware reads Node's IncomingMessage directly instead, counting bytes against
 * the limit as they arrive, and hands the text to Hono's body cache, where `c.req.json()` (and so
 * the route's schema validator, with its malformed-JSON 400) finds it. Anything else (other
 * runtimes, `app.request` in tests, non-JSON bodies) goes through Hono's own bodyLimit.
 */
import type { IncomingMessage } from 'node:http';
import type { MiddlewareHandler } from 'hono';
import { bodyLimit as honoBodyLimit } from 'hono/body-limit';
import { ApiError } from '../errors.js';
import { nodeIncoming } from '../nodeHttp.js';

const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;

const tooLarge = (maxBytes: number) => new ApiError(413, 'payload_too_large', `request body exceeds ${maxBytes} bytes`);

/** The whole body as text, or a 413 as soon as it passes `maxBytes` (the rest is drained unread). */
export function readBodyText(incoming: IncomingMessage, maxBytes: number): Promise<string> {
  const declared = Number(incoming.headers['content-length']);
  if (declared > maxBytes) {
    incoming.resume();
    return Promise.reject(tooLarge(maxBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        done();
        incoming.resume(); // drain the rest so the connection can answer
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      // TextDecoder, like Request.text(), strips a leading BOM and replaces invalid UTF-8.
      resolve(new TextDecoder().decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const done = () => {
      incoming.off('data', onData);
      incoming.off('end', onEnd);
      incoming.off('error', onError);
    };
    incoming.on('data', onData);
    incoming.on('end', onEnd);
    incoming.on('error', onError);
  });
}

export function bodyLimit(maxBytes: number): MiddlewareHandler {
  const generic = honoBodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw tooLarge(maxBytes);
    },
  });
  return async (c, next) => {
    // GET/HEAD carry no body; skipping the check for them also spares building a full Request object
    // (touching `body` forces it): measured ~15 % of a read.
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const incoming = nodeIncoming(c);
    const type = incoming?.headers['content-type']?.split(';')[0]!.trim();
    if (!incoming || !type || !JSON_MEDIA_TYPE.test(type) || incoming.readableDidRead) return generic(c, next);
    // Hono stores promises in its body cache (its type says otherwise).
    (c.req.bodyCache as Record<string, unknown>).text = Promise.resolve(await readBodyText(incoming, maxBytes));
    return next();
  };
}
