/**
 * `momentum`: the Momentum API from a terminal or CI. Reads MOMENTUM_URL and MOMENTUM_API_KEY.
 * Prints JSON on stdout (for jq), progress on stderr. Exit codes, for CI:
 *   0 ok · 1 usage or unexpected error · 2 the API refused the request (4xx) · 3 the job ended
 *   failed or canceled · 4 timed out waiting · 5 checksum mismatch on a download · 6 API unreachable or 5xx
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { ApiCallError, MomentumClient } from './client.js';

const EXIT = { ok: 0, usage: 1, refused: 2, jobFailed: 3, timeout: 4, checksum: 5, unavailable: 6 } as const;
const TERMINAL = ['succeeded', 'failed', 'canceled'];

class CliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

const USAGE = `usage: momentum <command> [options]     (env: MOMENTUM_URL, MOMENTUM_API_KEY)

  jobs submit <spec.json> [--idempotency-key K] [--wait] [--timeout S]
  jobs get <job> | jobs list [--state S] [--type T] [--label k:v] [--limit N]
  jobs cancel <job> | jobs wait <job> [--timeout S]
  jobs logs <job> [--follow] | jobs events <job> [--follow]
  retrain <job> --dataset name@N [--from-checkpoint latest] [--idempotency-key K] [--wait] [--timeout S]
  checkpoints list <job>
  checkpoints download <job> [version|alias] [--file backbone|state] [-o path]
  datasets create <name> [--description D]
  datasets upload <name> <archive> --format imagefolder|idx|cifar10|cifar100|unlabeled [--image-size N] [--wait] [--timeout S]
  datasets get <name> [version]
  sweeps submit <sweep.json> [--idempotency-key K] [--wait] [--timeout S]
  sweeps get <sweep> [--csv] | sweeps wait <sweep> [--timeout S] | sweeps cancel <sweep>

exit codes: 0 ok, 1 usage, 2 refused by the API (4xx), 3 job failed/canceled, 4 timeout, 5 checksum mismatch, 6 API unreachable/5xx`;

const out = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + '\n');
const say = (msg: string) => process.stderr.write(msg + '\n');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function client(): MomentumClient {
  const baseUrl = process.env.MOMENTUM_URL ?? 'http://127.0.0.1:8787';
  const apiKey = process.env.MOMENTUM_API_KEY;
  if (!apiKey) throw new CliError(EXIT.usage, 'MOMENTUM_API_KEY is not set');
  return new MomentumClient({ baseUrl, apiKey });
}

function need(value: string | undefined, what: string): string {
  if (!value) throw new CliError(EXIT.usage, `missing ${what}\n\n${USAGE}`);
  return value;
}

/** Polls the job until it is finished; exit code 3 unless it succeeded. */
async function waitForJob(api: MomentumClient, jobId: string, timeoutSeconds: number): Promise<any> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let last = '';
  for (;;) {
    const job = await api.call('GET', `/v1/jobs/${jobId}`);
    const progress = job.progress ? ` ${JSON.stringify(job.progress)}` : '';
    const line = `${jobId} ${job.state}${progress}`;
    if (line !== last) say(line);
    last = line;
    if (TERMINAL.includes(job.state)) {
      if (job.state !== 'succeeded') {
        out(job);
        throw new CliError(EXIT.jobFailed, `job ${jobId} ended ${job.state}${job.error ? `: ${job.error}` : ''}`);
      }
      return job;
    }
    if (Date.now() > deadline) throw new CliError(EXIT.timeout, `job ${jobId} still ${job.state} after ${timeoutSeconds} s`);
    await sleep(2000);
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

async function jobs(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, arg] = args;
  switch (sub) {
    case 'submit': {
      const spec = JSON.parse(await readFile(need(arg, 'spec file'), 'utf8'));
      const headers: Record<string, string> = flags['idempotency-key'] ? { 'idempotency-key': flags['idempotency-key'] } : {};
      const job = await api.call('POST', '/v1/jobs', { body: spec, headers });
      say(`submitted ${job.id} (${job.dataset ?? job.type})`);
      return out(flags.wait ? await waitForJob(api, job.id, timeout(flags)) : job);
    }
    case 'get':
      return out(await api.call('GET', `/v1/jobs/${need(arg, 'job id')}`));
    case 'list': {
      const q = new URLSearchParams();
      if (flags.state) q.set('state', flags.state);
      if (flags.type) q.set('type', flags.type);
      if (flags.label) q.append('label', flags.label);
      q.set('limit', flags.limit ?? '50');
      return out(await api.call('GET', `/v1/jobs?${q}`));
    }
    case 'cancel':
      return out(await api.call('POST', `/v1/jobs/${need(arg, 'job id')}/cancel`));
    case 'wait':
      return out(await waitForJob(api, need(arg, 'job id'), timeout(flags)));
    case 'logs': {
      const id = need(arg, 'job id');
      let after = 0;
      for (;;) {
        const page = await api.call('GET', `/v1/jobs/${id}/logs?after=${after}`);
        for (const l of page.logs) process.stdout.write(`${l.at} [${l.level}] (attempt ${l.attempt}) ${l.message}\n`);
        after = page.nextAfter;
        if (!flags.follow) return;
        if (!page.logs.length) {
          const job = await api.call('GET', `/v1/jobs/${id}`);
          if (TERMINAL.includes(job.state)) return;
          await sleep(2000);
        }
      }
    }
    case 'events': {
      const id = need(arg, 'job id');
      if (!flags.follow) return out(await api.call('GET', `/v1/jobs/${id}/events`));
      const res = await api.raw('GET', `/v1/jobs/${id}/events`, { accept: 'text/event-stream' });
      if (!res.ok) return out(await api.call('GET', `/v1/jobs/${id}/events`)); // surfaces the API's error
      // Each SSE message's data is one event as JSON: print it as a line.
      let buffer = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += Buffer.from(chunk).toString();
        let i;
        while ((i = buffer.indexOf('\n\n')) >= 0) {
          const message = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          const data = message.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          if (/^event: end$/m.test(message)) return;
          if (data) process.stdout.write(data + '\n');
        }
      }
      return;
    }
    default:
      throw new CliError(EXIT.usage, USAGE);
  }
}

async function retrain(api: MomentumClient, args: string[], flags: Flags) {
  const id = need(args[0], 'job id');
  const body: Record<string, unknown> = { dataset: need(flags.dataset, '--dataset name@N') };
  if (flags['from-checkpoint']) body.initFrom = flags['from-checkpoint'];
  const headers: Record<string, string> = flags['idempotency-key'] ? { 'idempotency-key': flags['idempotency-key'] } : {};
  const job = await api.call('POST', `/v1/jobs/${id}/retrain`, { body, headers });
  say(`retraining ${id} as ${job.id} on ${job.dataset}${job.spec.initFrom ? ` from ${job.spec.initFrom.checkpoint}` : ''}`);
  out(flags.wait ? await waitForJob(api, job.id, timeout(flags)) : job);
}

async function checkpoints(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, id, ref = 'latest'] = args;
  if (sub === 'list') return out(await api.call('GET', `/v1/jobs/${need(id, 'job id')}/checkpoints`));
  if (sub !== 'download') throw new CliError(EXIT.usage, USAGE);
  const file = flags.file ?? 'backbone';
  const link = await api.call('GET', `/v1/jobs/${need(id, 'job id')}/checkpoints/${ref}/download?file=${encodeURIComponent(file)}`);
  const target = flags.output ?? link.fileName;
  const partial = `${target}.partial`;
  const res = await fetch(link.url);
  if (!res.ok || !res.body) throw new CliError(EXIT.unavailable, `download failed: storage answered ${res.status}`);
  await pipeline(Readable.fromWeb(res.body as any), createWriteStream(partial));
  const digest = await sha256File(partial);
  if (digest !== link.sha256) {
    await unlink(partial).catch(() => {});
    throw new CliError(EXIT.checksum, `sha256 mismatch for ${link.fileName}: expected ${link.sha256}, got ${digest}`);
  }
  await rename(partial, target);
  say(`saved ${target} (${link.bytes} bytes, sha256 ${digest}, checkpoint v${link.version})`);
  out({ path: target, version: link.version, bytes: link.bytes, sha256: digest });
}

async function datasets(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, name, third] = args;
  switch (sub) {
    case 'create':
      return out(await api.call('POST', '/v1/datasets', { body: { name: need(name, 'dataset name'), ...(flags.description ? { description: flags.description } : {}) } }));
    case 'get':
      return out(await api.call('GET', third ? `/v1/datasets/${need(name, 'dataset name')}/versions/${third}` : `/v1/datasets/${need(name, 'dataset name')}`));
    case 'upload': {
      const archive = need(third, 'archive path');
      const size = (await stat(archive)).size;
      const options: Record<string, unknown> = { format: need(flags.format, '--format') };
      if (flags['image-size']) options.imageSize = Number(flags['image-size']);
      const fileName = basename(archive).replace(/[^A-Za-z0-9._-]/g, '_');
      // Create the dataset on first upload; an existing one is fine.
      await api.call('POST', '/v1/datasets', { body: { name: need(name, 'dataset name') } }).catch((e) => {
        if (!(e instanceof ApiCallError && e.code === 'dataset_exists')) throw e;
      });
      const version = await api.call('POST', `/v1/datasets/${name}/versions`, { body: { options, fileName, sizeBytes: size } });
      say(`uploading ${archive} (${size} bytes) as ${version.ref} (${version.upload.method})`);
      await uploadArchive(api, archive, version.upload);
      const started = await api.call('POST', `/v1/datasets/${name}/versions/${version.version}/finalize`);
      say(`ingesting ${version.ref} (job ${started.job.id})`);
      if (flags.wait) await waitForJob(api, started.job.id, timeout(flags));
      return out(flags.wait ? await api.call('GET', `/v1/datasets/${name}/versions/${version.version}`) : started);
    }
    default:
      throw new CliError(EXIT.usage, USAGE);
  }
}

/** Polls the sweep until it is no longer running; prints a line per change of its counts on stderr. */
async function waitForSweep(api: MomentumClient, id: string, timeoutSeconds: number): Promise<any> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let last = '';
  for (;;) {
    const sweep = await api.call('GET', `/v1/sweeps/${id}`);
    const r = sweep.runs;
    const line = `${id} ${sweep.state}: ${r.submitted}/${r.total} submitted, ${r.finished} finished, ${r.probed} probed`;
    if (line !== last) say(line);
    last = line;
    if (sweep.state !== 'running') {
      if (sweep.state === 'canceled') {
        out(sweep);
        throw new CliError(EXIT.jobFailed, `sweep ${id} was canceled${sweep.reason ? `: ${sweep.reason}` : ''}`);
      }
      return sweep;
    }
    if (Date.now() > deadline) throw new CliError(EXIT.timeout, `sweep ${id} still running after ${timeoutSeconds} s`);
    await sleep(5000);
  }
}

async function sweeps(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, arg] = args;
  switch (sub) {
    case 'submit': {
      const spec = JSON.parse(await readFile(need(arg, 'sweep file'), 'utf8'));
      const headers: Record<string, string> = flags['idempotency-key'] ? { 'idempotency-key': flags['idempotency-key'] } : {};
      const sweep = await api.call('POST', '/v1/sweeps', { body: spec, headers });
      say(`submitted sweep ${sweep.id} (${sweep.runs.total} settings)`);
      return out(flags.wait ? await waitForSweep(api, sweep.id, timeout(flags)) : sweep);
    }
    case 'get': {
      const id = need(arg, 'sweep id');
      if (!flags.csv) return out(await api.call('GET', `/v1/sweeps/${id}`));
      const res = await api.raw('GET', `/v1/sweeps/${id}/results?format=csv`, { accept: 'text/csv' });
      if (!res.ok) return out(await api.call('GET', `/v1/sweeps/${id}`)); // surfaces the API's error
      process.stdout.write(await res.text());
      return;
    }
    case 'wait':
      return out(await waitForSweep(api, need(arg, 'sweep id'), timeout(flags)));
    case 'cancel':
      return out(await api.call('POST', `/v1/sweeps/${need(arg, 'sweep id')}/cancel`));
    default:
      throw new CliError(EXIT.usage, USAGE);
  }
}

async function uploadArchive(api: MomentumClient, path: string, upload: any): Promise<void> {
  if (upload.method === 'PUT') {
    const res = await fetch(upload.url, { method: 'PUT', body: await readFile(path) });
    if (!res.ok) throw new CliError(EXIT.unavailable, `upload failed: storage answered ${res.status}`);
    return;
  }
  const parts: { partNumber: number; etag: string }[] = [];
  for (const part of upload.parts as { partNumber: number; url: string }[]) {
    const start = (part.partNumber - 1) * upload.partSize;
    const chunks: Buffer[] = [];
    for await (const c of createReadStream(path, { start, end: start + upload.partSize - 1 })) chunks.push(c as Buffer);
    const res = await fetch(part.url, { method: 'PUT', body: Buffer.concat(chunks) });
    if (!res.ok) throw new CliError(EXIT.unavailable, `upload of part ${part.partNumber} failed: storage answered ${res.status}`);
    parts.push({ partNumber: part.partNumber, etag: res.headers.get('etag') ?? '' });
    say(`part ${part.partNumber}/${upload.parts.length} uploaded`);
  }
  await api.call('POST', upload.completeUrl, { body: { uploadId: upload.uploadId, parts } });
}

type Flags = Record<string, string | undefined> & { wait?: any; follow?: any; csv?: any };
const timeout = (flags: Flags) => Number(flags.timeout ?? 24 * 3600);

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'idempotency-key': { type: 'string' },
      wait: { type: 'boolean' },
      follow: { type: 'boolean' },
      timeout: { type: 'string' },
      state: { type: 'string' },
      type: { type: 'string' },
      label: { type: 'string' },
      limit: { type: 'string' },
      dataset: { type: 'string' },
      'from-checkpoint': { type: 'string' },
      file: { type: 'string' },
      output: { type: 'string', short: 'o' },
      format: { type: 'string' },
      'image-size': { type: 'string' },
      description: { type: 'string' },
      csv: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    say(USAGE);
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const flags = values as Flags;
  const api = client();
  if (command === 'jobs') await jobs(api, rest, flags);
  else if (command === 'retrain') await retrain(api, rest, flags);
  else if (command === 'checkpoints') await checkpoints(api, rest, flags);
  else if (command === 'datasets') await datasets(api, rest, flags);
  else if (command === 'sweeps') await sweeps(api, rest, flags);
  else throw new CliError(EXIT.usage, `unknown command ${command}\n\n${USAGE}`);
  return EXIT.ok;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof CliError) {
      say(`momentum: ${err.message}`);
      process.exit(err.exitCode);
    }
    if (err instanceof ApiCallError) {
      const details = err.details.map((d) => `\n  ${d.path || '(body)'}: ${d.message}`).join('');
      say(`momentum: ${err.status} ${err.code}: ${err.message}${details}`);
      process.exit(err.status >= 500 ? EXIT.unavailable : EXIT.refused);
    }
    if (err instanceof TypeError && /fetch failed/.test(err.message)) {
      say(`momentum: cannot reach the API at ${process.env.MOMENTUM_URL ?? 'http://127.0.0.1:8787'}: ${(err.cause as Error)?.message ?? err.message}`);
      process.exit(EXIT.unavailable);
    }
    if (err instanceof SyntaxError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (err as { code?: string }).code === 'ENOENT') {
      say(`momentum: ${(err as Error).message}`);
      process.exit(EXIT.usage);
    }
    say(`momentum: unexpected error: ${(err as Error)?.stack ?? String(err)}`);
    process.exit(EXIT.usage);
  },
);
