/**
 * What the scripts that drive Momentum through its public API share (quickstart, the Fashion-MNIST
 * experiment, the ablation sweep): a free port, our own processes (API, runner) started as children
 * with their output in log files and stopped again, a one-shot script whose last line is JSON, and
 * a small REST client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync } from 'node:fs';
import { createServer } from 'node:net';
import { UserFacingError } from '../../common/errors.js';

export const TERMINAL_STATES = ['succeeded', 'failed', 'canceled'];

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A TCP port nothing listens on right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Processes of ours (node + tsx) started by one script, each logging to a file, stopped together. */
export class ChildProcesses {
  private readonly children: { name: string; proc: ChildProcess }[] = [];
  private stopping = false;

  /** `onUnexpectedExit` runs when the process ends before {@link stopAll} was called. */
  start(name: string, script: string, args: string[], env: NodeJS.ProcessEnv, logFile: string, onUnexpectedExit?: (why: string) => void): ChildProcess {
    const out = openSync(logFile, 'a');
    const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], { env, stdio: ['ignore', out, out] });
    this.children.push({ name, proc });
    proc.on('exit', (code, signal) => {
      if (!this.stopping) onUnexpectedExit?.(signal ?? `code ${code}`);
    });
    return proc;
  }

  /** SIGTERM to each (they drain and checkpoint), SIGKILL after 30 s; resolves when all have exited. */
  async stopAll(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.children.map(
        ({ proc }) =>
          new Promise<void>((resolve) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
            const hard = setTimeout(() => proc.kill('SIGKILL'), 30_000);
            proc.once('exit', () => {
              clearTimeout(hard);
              resolve();
            });
            proc.kill('SIGTERM');
          }),
      ),
    );
  }
}

/** Runs one of our scripts to its end and parses the last line it printed as JSON. */
export function runToJson(script: string, args: string[], env: NodeJS.ProcessEnv): Promise<any> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (err += d));
    proc.on('exit', (code) => {
      if (code !== 0) return reject(new UserFacingError(`${script} failed: ${err.trim() || out.trim()}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!));
      } catch {
        reject(new UserFacingError(`${script} printed no JSON: ${out.trim()}`));
      }
    });
  });
}

export interface ApiResponse<T = any> {
  status: number;
  body: T;
}

/** A REST client with an API key that answers every status with its parsed body (JSON or text). */
export function rawClient(base: string, key: string) {
  return async <T = any>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = (res.headers.get('content-type') ?? '').includes('json');
    return { status: res.status, body: (json && text ? JSON.parse(text) : text || null) as T };
  };
}

export type Api = <T = any>(method: string, path: string, body?: unknown) => Promise<T>;

/** A REST client that answers the body of a 2xx and throws the API's own message on anything else. */
export function client(base: string, key: string): Api {
  const raw = rawClient(base, key);
  return async (method, path, body) => {
    const res = await raw(method, path, body);
    if (res.status >= 300) throw new UserFacingError(`${method} ${path}: HTTP ${res.status} ${res.body?.error?.message ?? String(res.body).slice(0, 300)}`);
    return res.body;
  };
}

/** Polls a job until it ends; `onUpdate` sees every state it passes through (for live progress). */
export async function waitForJob(api: Api, id: string, pollMs: number, onUpdate?: (job: any) => void): Promise<any> {
  for (;;) {
    const job = await api('GET', `/v1/jobs/${id}`);
    onUpdate?.(job);
    if (TERMINAL_STATES.includes(job.state)) return job;
    await sleep(pollMs);
  }
}
