/**
 * Private service instances for tests that stop, restart or flush a service: never the shared
 * Postgres/Redis/S3 of the machine. Each listens on a free port of its own, keeps its data in a
 * temporary directory, and `remove()` stops it and deletes that directory.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../scripts/support/localStack.js';

export { freePort };

async function waitFor(what: string, ok: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await ok()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function portOpen(port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export interface PrivateService {
  url: string;
  port: number;
  /** Stops the process (data kept). */
  stop(): Promise<void>;
  /** Starts it again on the same port with the same data. */
  start(): Promise<void>;
  remove(): Promise<void>;
}

/**
 * A redis-server without persistence: a restart loses everything, like a flush. `pause` stops the
 * process (SIGSTOP): connections stay open and nothing answers, a hung Redis; `resume` continues it.
 */
export async function startPrivateRedis(): Promise<PrivateService & { flush(): Promise<void>; pause(): void; resume(): void }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'momentum-redis-'));
  let child: ChildProcess | undefined;
  const service = {
    url: `redis://127.0.0.1:${port}`,
    port,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
      await waitFor(`redis on ${port}`, () => portOpen(port));
    },
    async stop() {
      await stopChild(child);
    },
    async flush() {
      spawnSync('redis-cli', ['-p', String(port), 'flushall']);
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    async remove() {
      child?.kill('SIGCONT'); // a stopped process would not act on SIGTERM
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await service.start();
  return service;
}

function postgresBin(name: string): string {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (existsSync(join(root, v, 'bin', name))) return join(root, v, 'bin', name);
  }
  return name;
}

/** A Postgres cluster of its own (initdb in a temporary directory, trust auth; fsync off, which survives a process kill, unlike synchronous_commit off, which would lose acknowledged commits on an immediate stop). */
export async function startPrivatePostgres(): Promise<PrivateService> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'momentum-pg-'));
  const data = join(dir, 'data');
  const asPostgres = process.getuid?.() === 0;
  const run = (bin: string, args: string[]) => {
    const cmd = asPostgres ? 'runuser' : postgresBin(bin);
    const full = asPostgres ? ['-u', 'postgres', '--', postgresBin(bin), ...args] : args;
    const r = spawnSync(cmd, full, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${bin} ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  };
  if (asPostgres) spawnSync('chown', ['postgres', dir]);
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  const service = {
    url: `postgres://postgres@127.0.0.1:${port}/momentum`,
    port,
    async start() {
      run('pg_ctl', ['-D', data, '-l', join(dir, 'log'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`, '-w', 'start']);
      await waitFor(`postgres on ${port}`, () => portOpen(port));
    },
    async stop() {
      run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
    },
    async remove() {
      try {
        run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await service.start();
  return service;
}

/** The project's S3 server (scripts/s3-server.ts) on a port and directory of its own. */
export async function startPrivateS3(): Promise<PrivateService> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'momentum-s3-'));
  const script = fileURLToPath(new URL('../../scripts/s3-server.ts', import.meta.url));
  let child: ChildProcess | undefined;
  const service = {
    url: `http://127.0.0.1:${port}`,
    port,
    async start() {
      child = spawn(process.execPath, ['--import', 'tsx', script, '--port', String(port), '--dir', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
      await waitFor(`s3 on ${port}`, () => portOpen(port));
    },
    async stop() {
      await stopChild(child);
    },
    async remove() {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await service.start();
  return service;
}
