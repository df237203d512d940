/**
 * `momentum`: the Momentum API from a terminal or CI. Reads MOMENTUM_URL and MOMENTUM_API_KEY.
 * Prints JSON on stdout (for jq), progress on stderr. Exit codes, for CI:
 *   0 ok · 1 usage or unexpected error · 2 the API refused the request (4xx) · 3 the job ended
 *   failed or canceled · 4 timed out waiting · 5 checksum mismatch on a download · 6 API unreachable or 5xx
 *   · 7 a promotion's quality gate failed (the alias did not move)
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { ApiCallError, MomentumClient } from './client.js';
import { parseGateRule } from '../contracts/gate.js';
import { parseModelRef } from '../contracts/models.js';

const EXIT = { ok: 0, usage: 1, refused: 2, jobFailed: 3, timeout: 4, checksum: 5, unavailable: 6, gateFailed: 7 } as const;
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
  retrain <job|model@ref> --dataset name@N [--from-checkpoint latest|model@ref] [--idempotency-key K] [--wait] [--timeout S]
      [--promote ALIAS [--gate 'linear>=ALIAS-0.5']... [--model NAME] [--probe-epochs N] [--probe-lr X] [--probe-batch N]]
      --promote: wait, probe the gate's aliases and the new model under one protocol on its dataset,
      and move ALIAS of the model to it if every gate rule passes (exit 7 if not)
  checkpoints list <job>
  checkpoints download <job|model@ref> [version|alias] [--file backbone|state] [-o path]
  models list | models get <name> | models versions <name> | models gates <name>
  models register <name> <job> [version|alias] [--alias A]...
  models alias <name> <alias> <version> [--expect N|none]
  models lineage <model@ref>
  datasets create <name> [--description D]
  datasets upload <name> <archive> --format imagefolder|idx|cifar10|cifar100|unlabeled [--image-size N] [--wait] [--timeout S]
  datasets get <name> [version]

exit codes: 0 ok, 1 usage, 2 refused by the API (4xx), 3 job failed/canceled, 4 timeout, 5 checksum mismatch, 6 API unreachable/5xx,
            7 a promotion's gate failed`;

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
  const target = need(args[0], 'job id or model@ref');
  const fromModel = parseModelRef(target);
  const body: Record<string, unknown> = { dataset: need(flags.dataset, '--dataset name@N') };
  const headers: Record<string, string> = flags['idempotency-key'] ? { 'idempotency-key': flags['idempotency-key'] } : {};
  let job;
  if (fromModel) {
    // A model version: its job's spec, its weights.
    if (flags['from-checkpoint']) throw new CliError(EXIT.usage, '--from-checkpoint: a model version is its own starting point');
    job = await api.call('POST', `/v1/models/${fromModel.name}/versions/${target.slice(target.indexOf('@') + 1)}/retrain`, { body, headers });
  } else {
    if (flags['from-checkpoint']) body.initFrom = flags['from-checkpoint'];
    job = await api.call('POST', `/v1/jobs/${target}/retrain`, { body, headers });
  }
  const from = job.spec.initFrom ? ` from ${job.spec.initFrom.model ?? job.spec.initFrom.checkpoint}` : '';
  say(`retraining ${target} as ${job.id} on ${job.dataset}${from}`);
  if (!flags.promote) return out(flags.wait ? await waitForJob(api, job.id, timeout(flags)) : job);
  const model = flags.model ?? fromModel?.name;
  if (!model) throw new CliError(EXIT.usage, '--promote needs the model: retrain a model@ref, or name it with --model');
  await promote(api, await waitForJob(api, job.id, timeout(flags)), model, flags);
}

/**
 * The gated promotion of a freshly trained job. A gate compares numbers measured the same way on the
 * same data, so every alias the gate names is probed first under the protocol and on the dataset
 * version the new job's probe uses; then the new job is probed with `promote`, and the runner decides
 * and moves the alias (or not) in one transaction. Exit 7 when the gate failed.
 */
async function promote(api: MomentumClient, job: any, model: string, flags: Flags) {
  const alias = flags.promote!;
  const gate = flags.gate ?? [];
  const rules = gate.map((text) => parseGateRule(text) ?? usage(`--gate ${JSON.stringify(text)}: not a gate rule (e.g. 'linear>=${alias}-0.5')`));
  const protocol: Record<string, unknown> = { epochs: Number(flags['probe-epochs'] ?? 10) };
  if (flags['probe-lr']) protocol.lr = Number(flags['probe-lr']);
  if (flags['probe-batch']) protocol.batch = Number(flags['probe-batch']);
  const key = flags['idempotency-key'];
  const probe = async (spec: Record<string, unknown>, suffix: string) => {
    const headers: Record<string, string> = key ? { 'idempotency-key': `${key}:${suffix}` } : {};
    const submitted = await api.call('POST', '/v1/jobs', { body: { type: 'probe', dataset: job.dataset, ...protocol, ...spec }, headers });
    return waitForJob(api, submitted.id, timeout(flags));
  };
  for (const baseline of new Set(rules.map((r) => r.alias).filter((a): a is string => a !== null))) {
    const current = await api.call('GET', `/v1/models/${model}/versions/${baseline}`).catch((e) => {
      if (e instanceof ApiCallError && e.status === 404) return null;
      throw e;
    });
    if (!current) {
      say(`${model}@${baseline} does not exist yet: nothing to compare with`);
      continue;
    }
    say(`probing ${model}@${baseline} (v${current.version}) on ${job.dataset} for the gate`);
    await probe({ source: { model: `${model}@${current.version}` } }, `baseline-${baseline}`);
  }
  say(`probing ${job.id} and promoting it to ${model}@${alias} if ${gate.length ? gate.join(' and ') : 'it finishes'}`);
  const probed = await probe({ source: { job: job.id, checkpoint: 'latest' }, promote: { model, alias, gate } }, 'promote');
  const decision = probed.result?.gate;
  out({ job: job.id, probe: probed.id, top1: probed.result?.top1 ?? null, gate: decision ?? null });
  if (!decision) throw new CliError(EXIT.gateFailed, `probe ${probed.id} recorded no gate decision`);
  for (const r of decision.rules ?? []) say(`${r.passed ? 'pass' : 'FAIL'} ${r.rule}: ${r.reason}`);
  if (!decision.passed) throw new CliError(EXIT.gateFailed, `gate failed: ${model}@${alias} stays at ${decision.previousVersion === null ? 'nothing' : `v${decision.previousVersion}`}`);
  say(decision.moved ? `${model}@${alias} → v${decision.version} (was ${decision.previousVersion === null ? 'unset' : `v${decision.previousVersion}`})` : `${model}@${alias} is already v${decision.version}`);
}

function usage(message: string): never {
  throw new CliError(EXIT.usage, message);
}

async function models(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, name, third, fourth] = args;
  switch (sub) {
    case 'list':
      return out(await api.call('GET', '/v1/models'));
    case 'get':
      return out(await api.call('GET', `/v1/models/${need(name, 'model name')}`));
    case 'versions':
      return out(await api.call('GET', `/v1/models/${need(name, 'model name')}/versions`));
    case 'gates':
      return out(await api.call('GET', `/v1/models/${need(name, 'model name')}/gates`));
    case 'register': {
      const body = { job: need(third, 'job id'), checkpoint: fourth ?? 'latest', aliases: flags.alias ?? [] };
      const version = await api.call('POST', `/v1/models/${need(name, 'model name')}/versions`, { body });
      say(`registered ${body.job} ${body.checkpoint} as ${version.ref}${version.aliases.length ? ` (${version.aliases.join(', ')})` : ''}`);
      return out(version);
    }
    case 'alias': {
      const body: Record<string, unknown> = { version: Number(need(fourth, 'version')) };
      if (flags.expect !== undefined) body.expectedVersion = flags.expect === 'none' ? null : Number(flags.expect);
      return out(await api.call('PUT', `/v1/models/${need(name, 'model name')}/aliases/${need(third, 'alias')}`, { body }));
    }
    case 'lineage': {
      const ref = parseModelRef(need(name, 'model@ref')) ?? usage(`${name}: expected model@version or model@alias`);
      return out(await api.call('GET', `/v1/models/${ref.name}/versions/${name!.slice(name!.indexOf('@') + 1)}/lineage`));
    }
    default:
      throw new CliError(EXIT.usage, USAGE);
  }
}

async function checkpoints(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, id, ref = 'latest'] = args;
  if (sub === 'list') return out(await api.call('GET', `/v1/jobs/${need(id, 'job id')}/checkpoints`));
  if (sub !== 'download') throw new CliError(EXIT.usage, USAGE);
  const file = flags.file ?? 'backbone';
  // `model@ref` downloads a model version; anything else names a job and one of its checkpoints.
  const model = parseModelRef(need(id, 'job id or model@ref'));
  const link = model
    ? await api.call('GET', `/v1/models/${model.name}/versions/${id!.slice(id!.indexOf('@') + 1)}/download?file=${encodeURIComponent(file)}`)
    : await api.call('GET', `/v1/jobs/${id}/checkpoints/${ref}/download?file=${encodeURIComponent(file)}`);
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

type Flags = Record<string, string | undefined> & { wait?: any; follow?: any; gate?: string[]; alias?: string[] };
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
      promote: { type: 'string' },
      gate: { type: 'string', multiple: true },
      model: { type: 'string' },
      'probe-epochs': { type: 'string' },
      'probe-lr': { type: 'string' },
      'probe-batch': { type: 'string' },
      alias: { type: 'string', multiple: true },
      expect: { type: 'string' },
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
  else if (command === 'models') await models(api, rest, flags);
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
