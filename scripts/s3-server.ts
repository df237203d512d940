/**
 * The local S3-compatible server for development and tests (s3rver). Objects live as plain files
 * under S3_DATA_DIR (default ./var/s3), so a user can look at what Momentum stored.
 * Usage: tsx scripts/s3-server.ts [--port 4568] [--dir ./var/s3]
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import S3rver from 's3rver';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.S3_PORT ?? '4568' },
    host: { type: 'string', default: '127.0.0.1' },
    dir: { type: 'string', default: process.env.S3_DATA_DIR ?? './var/s3' },
  },
});
const directory = resolve(values.dir!);
mkdirSync(directory, { recursive: true });
const server = new S3rver({
  port: Number(values.port),
  address: values.host,
  directory,
  silent: true,
  // Browsers upload datasets straight to presigned URLs: allow any origin locally.
  allowMismatchedSignatures: true,
});
const { port } = (await server.run()) as { port: number };
console.log(`s3rver listening on http://${values.host}:${port}, data in ${directory}`);
const stop = () => server.close().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
