/**
 * The API's HTTP server: @hono/node-server serving the app, with the app's fast paths
 * (api/fastJobRead.ts) in front of it on Node's own request listener.
 */
import { createServer, type RequestListener, type ServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { FastPath } from './fastPath.js';

export interface ServableApp {
  app: { fetch: (request: Request, env?: unknown) => Response | Promise<Response> };
  fastPath?: FastPath;
}

export function serveApi(created: ServableApp, opts: { port: number; hostname?: string }, onListening?: (info: AddressInfo) => void) {
  const fastPath = created.fastPath;
  const withFastPath = ((options: ServerOptions, listener: RequestListener) => {
    const front: RequestListener = (req, res) => void (fastPath!(req, res) || listener(req, res));
    return createServer(options, fastPath ? front : listener);
  }) as typeof createServer;
  return serve({ fetch: created.app.fetch, port: opts.port, hostname: opts.hostname, createServer: withFastPath }, onListening);
}
