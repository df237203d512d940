/**
 * The web dashboard: one self-contained page (no CDN, no build step) that talks to /v1 with the
 * user's API key, kept in the browser's localStorage. Served by the API at /dashboard.
 */
import { readFileSync } from 'node:fs';
import { Hono } from 'hono';

const page = readFileSync(new URL('./index.html', import.meta.url), 'utf8');

export function dashboardRoutes(): Hono {
  const app = new Hono();
  app.get('/', (c) =>
    c.html(page, 200, {
      // The page runs only its own inline script and talks only to this origin.
      'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
      'cache-control': 'no-cache',
    }),
  );
  return app;
}
