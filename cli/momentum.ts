/**
 * `momentum`: the Momentum API from a terminal or CI. Reads MOMENTUM_URL and MOMENTUM_API_KEY.
 *
 * Output, the same for every command: stdout holds what the API answered, as JSON (for jq):
 * one document (indented; with `--json` on one line), or for streams (`jobs events`, `jobs logs`)
 * one JSON object per line. stderr holds progress lines and, on failure, one line saying what went
 * wrong (with `--json`: one `{"error":{code,message,details},"exitCode":n}` line, and no progress).
 * Exit codes, for CI: 0 ok · 1 usage or unexpected error · 2 the API refused the request (4xx) ·
 * 3 the job ended failed or canceled · 4 timed out waiting · 5 checksum mismatch on a download ·
 * 6 API unreachable or 5xx · 7 a promotion's quality gate failed (the alias did not move)
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import type { Schemas } from '../contracts/api.gen.js';
import { parseGateRule } from '../contracts/gate.js';
import { parseModelRef } from '../contracts/models.js';
import { ApiCallError, MomentumClient, type OperationInput, type OperationOutput } from './client.js';

const EXIT = { ok: 0, usage: 1, refused: 2, jobFailed: 3, timeout: 4, checksum: 5, unavailable: 6, gateFailed: 7 } as const;
const TERMINAL = ['succeeded', 'failed', 'canceled'];

class CliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
    readonly code = 'usage',
  ) {
    super(message);
  }
}

const USAGE = `usage: momentum <command> [options]     (env: MOMENTUM_URL, MOMENTUM_API_KEY)

  jobs submit <spec.json> [--idempotency-key K] [--wait] [--timeout S]
  jobs get <job> | jobs cancel <job> | jobs retry <job> | jobs wait <job> [--timeout S]
  jobs list [--state S,..] [--type T,..] [--label k:v]... [--limit N] [--cursor C]
  jobs events <job> [--follow] [--after ID] [--limit N]              (JSON lines)
  jobs logs <job> [--follow] [--after ID] [--attempt N] [--limit N]  (JSON lines)
  jobs metrics <job> [--name loss,lr] [--from-step N] [--to-step N] [--limit N]
  retrain <job|model@ref> --dataset name@N [--from-checkpoint latest|model@ref] [--epochs N] [--max-steps N]
          [--label k:v]... [--idempotency-key K] [--wait] [--timeout S]
          [--promote ALIAS [--gate 'linear>=ALIAS-0.5']... [--model NAME] [--probe-epochs N] [--probe-lr X] [--probe-batch N]]
          --promote waits, probes the aliases the gate names and the new job under one protocol on its
          dataset version, and moves the model's ALIAS to it if every rule passes (exit 7 if not)
  checkpoints list <job> | checkpoints get <job> [version|alias]
  checkpoints download <job|model@ref> [version|alias] [--file backbone|state] [--ttl S] [-o path]
  checkpoints alias <job> <alias> <version> | checkpoints unalias <job> <alias>
  evaluations list <job> | evaluations compare <job>
  models list | models get <name> | models versions <name> | models gates <name>
  models register <name> <job> [version|alias] [--alias A]...
  models alias <name> <alias> <version> [--expect N|none] | models lineage <model@ref>
  datasets create <name> [--description D] | datasets list | datasets get <name> [version|latest]
  datasets versions <name> | datasets delete <name> [version]
  datasets upload <name> <archive> --format imagefolder|idx|cifar10|cifar100|unlabeled
          [--image-size N] [--channels 1|3] [--resize none|stretch|center-crop] [--val-fraction X] [--seed N]
          [--multipart] [--description D] [--wait] [--timeout S]
  sweeps submit <sweep.json> [--idempotency-key K] [--wait] [--timeout S]
  sweeps get <sweep> [--csv] | sweeps wait <sweep> [--timeout S] | sweeps cancel <sweep>

every command: --json (stdout on one line; errors as one JSON line on stderr), --help
exit codes: 0 ok, 1 usage, 2 refused by the API (4xx), 3 job failed/canceled, 4 timeout, 5 checksum mismatch, 6 API unreachable/5xx,
            7 a promotion's gate failed`;

const OPTIONS = {
  'idempotency-key': { type: 'string' },
  wait: { type: 'boolean' },
  follow: { type: 'boolean' },
  timeout: { type: 'string' },
  state: { type: 'string' },
  type: { type: 'string' },
  label: { type: 'string', multiple: true },
  limit: { type: 'string' },
  cursor: { type: 'string' },
  after: { type: 'string' },
  attempt: { type: 'string' },
  name: { type: 'string' },
  'from-step': { type: 'string' },
  'to-step': { type: 'string' },
  dataset: { type: 'string' },
  'from-checkpoint': { type: 'string' },
  epochs: { type: 'string' },
  'max-steps': { type: 'string' },
  file: { type: 'string' },
  ttl: { type: 'string' },
  output: { type: 'string', short: 'o' },
  format: { type: 'string' },
  'image-size': { type: 'string' },
  channels: { type: 'string' },
  resize: { type: 'string' },
  'val-fraction': { type: 'string' },
  seed: { type: 'string' },
  multipart: { type: 'boolean' },
  description: { type: 'string' },
  json: { type: 'boolean' },
  promote: { type: 'string' },
  gate: { type: 'string', multiple: true },
  model: { type: 'string' },
  'probe-epochs': { type: 'string' },
  'probe-lr': { type: 'string' },
  'probe-batch': { type: 'string' },
  alias: { type: 'string', multiple: true },
  expect: { type: 'string' },
  csv: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Flags = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

let jsonMode = process.argv.includes('--json');
/** The API's answer on stdout: indented, or on one line with --json. */
const out = (v: unknown) => process.stdout.write(JSON.stringify(v, null, jsonMode ? undefined : 2) + '\n');
/** One item of a stream: always one line. */
const line = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');
/** Progress for people; silent with --json. */
const say = (msg: string) => {
  if (!jsonMode) process.stderr.write(msg + '\n');
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function client(): MomentumClient {
  const baseUrl = process.env.MOMENTUM_URL ?? 'http://127.0.0.1:8787';
  const apiKey = process.env.MOMENTUM_API_KEY;
  if (!apiKey) throw new CliError(EXIT.usage, 'MOMENTUM_API_KEY is not set: create a key with `npm run create-key` and export it');
  return new MomentumClient({ baseUrl, apiKey });
}

function need(value: string | undefined, what: string, command: string): string {
  if (!value) throw new CliError(EXIT.usage, `${command}: missing ${what}; --help shows the usage`);
  return value;
}

/** A numeric flag, checked here so the mistake names the flag rather than an API field. */
function numberFlag(flags: Flags, name: keyof Flags & string, kind: 'integer' | 'number' = 'integer'): number | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw === '' || !Number.isFinite(n) || (kind === 'integer' && !Number.isInteger(n))) {
    throw new CliError(EXIT.usage, `--${name} must be ${kind === 'integer' ? 'an integer' : 'a number'}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function oneOf<T extends string>(flags: Flags, name: keyof Flags & string, allowed: readonly T[]): T | undefined {
  const raw = flags[name] as string | undefined;
  if (raw === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(raw)) throw new CliError(EXIT.usage, `--${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(raw)}`);
  return raw as T;
}

function labels(flags: Flags): Record<string, string> | undefined {
  if (!flags.label?.length) return undefined;
  const result: Record<string, string> = {};
  for (const item of flags.label) {
    const i = item.indexOf(':');
    if (i <= 0) throw new CliError(EXIT.usage, `--label must be key:value, got ${JSON.stringify(item)}`);
    result[item.slice(0, i)] = item.slice(i + 1);
  }
  return result;
}

const timeout = (flags: Flags) => numberFlag(flags, 'timeout', 'number') ?? 24 * 3600;
const idempotency = (flags: Flags) => (flags['idempotency-key'] ? { 'idempotency-key': flags['idempotency-key'] } : undefined);

/** Polls the job until it is finished; exit code 3 unless it succeeded. */
async function waitForJob(api: MomentumClient, jobId: string, timeoutSeconds: number): Promise<Schemas['Job']> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let last = '';
  for (;;) {
    const job = await api.op('getJob', { params: { id: jobId } });
    const progress = job.progress ? ` ${JSON.stringify(job.progress)}` : '';
    const status = `${jobId} ${job.state}${progress}`;
    if (status !== last) say(status);
    last = status;
    if (TERMINAL.includes(job.state)) {
      if (job.state !== 'succeeded') {
        out(job);
        throw new CliError(EXIT.jobFailed, `job ${jobId} ended ${job.state}${job.error ? `: ${job.error}` : ''}`, `job_${job.state}`);
      }
      return job;
    }
    if (Date.now() > deadline) throw new CliError(EXIT.timeout, `job ${jobId} still ${job.state} after ${timeoutSeconds} s`, 'timeout');
    await sleep(1000);
  }
}

async function readSpec(path: string): Promise<OperationInput<'submitJob'>['body']> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CliError(EXIT.usage, `${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  try {
    // The API validates the spec and names any wrong field.
    return JSON.parse(text) as OperationInput<'submitJob'>['body'];
  } catch (err) {
    throw new CliError(EXIT.usage, `${path}: not valid JSON: ${(err as Error).message}`);
  }
}

async function jobs(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, arg] = args;
  const id = () => need(arg, 'a job id', `jobs ${sub}`);
  switch (sub) {
    case 'submit': {
      const file = need(arg, 'a spec file', 'jobs submit');
      const spec = await readSpec(file);
      let job: Schemas['Job'];
      try {
        job = await api.op('submitJob', { body: spec, headers: idempotency(flags) });
      } catch (err) {
        // Name the file whose content the API refused.
        if (err instanceof ApiCallError && err.status < 500) throw new ApiCallError(err.status, err.code, `${file}: ${err.message}`, err.details);
        throw err;
      }
      say(`submitted ${job.id} (${job.dataset ?? job.type})`);
      return out(flags.wait ? await waitForJob(api, job.id, timeout(flags)) : job);
    }
    case 'get':
      return out(await api.op('getJob', { params: { id: id() } }));
    case 'list':
      return out(
        await api.op('listJobs', {
          query: { state: flags.state, type: flags.type, label: flags.label, limit: numberFlag(flags, 'limit'), cursor: flags.cursor },
        }),
      );
    case 'cancel':
      return out(await api.op('cancelJob', { params: { id: id() } }));
    case 'retry':
      return out(await api.op('retryJob', { params: { id: id() } }));
    case 'wait':
      return out(await waitForJob(api, id(), timeout(flags)));
    case 'metrics':
      return out(
        await api.op('listJobMetrics', {
          params: { id: id() },
          query: { name: flags.name, from_step: numberFlag(flags, 'from-step'), to_step: numberFlag(flags, 'to-step'), limit: numberFlag(flags, 'limit') },
        }),
      );
    case 'logs':
      return followLogs(api, id(), flags);
    case 'events':
      return flags.follow ? streamEvents(api, id(), flags) : printEvents(api, id(), flags);
    default:
      throw unknownCommand(`jobs ${sub ?? ''}`.trim());
  }
}

/** Log lines as JSON lines, oldest first; --follow keeps polling until the job is finished. */
async function followLogs(api: MomentumClient, id: string, flags: Flags) {
  let after = numberFlag(flags, 'after') ?? 0;
  const attempt = numberFlag(flags, 'attempt');
  const limit = numberFlag(flags, 'limit');
  for (;;) {
    const page = await api.op('getJobLogs', { params: { id }, query: { after, attempt, limit } });
    for (const l of page.logs) line(l);
    after = page.nextAfter;
    if (page.logs.length) {
      if (limit !== undefined && !flags.follow) return; // one page, as asked
      continue; // there may be more pages
    }
    if (!flags.follow) return;
    const job = await api.op('getJob', { params: { id } });
    if (TERMINAL.includes(job.state)) {
      // Lines written just before the end: one last page.
      const tail = await api.op('getJobLogs', { params: { id }, query: { after, attempt } });
      for (const l of tail.logs) line(l);
      return;
    }
    await sleep(1000);
  }
}

/** Every event so far as JSON lines (the same lines --follow prints), page by page. */
async function printEvents(api: MomentumClient, id: string, flags: Flags) {
  let after = numberFlag(flags, 'after') ?? 0;
  const limit = numberFlag(flags, 'limit');
  for (;;) {
    const page = await api.op('listJobEvents', { params: { id }, query: { after, limit } });
    for (const e of page.events) line(e);
    if (!page.events.length || limit !== undefined) return;
    after = page.nextAfter;
  }
}

/**
 * Server-Sent Events: each message's data is one event as JSON, printed as one line, until the
 * stream's `end`. A stream that ends without it (the API replica drains on SIGTERM, a connection
 * drops) is resumed from the last event printed, on whichever replica answers, for up to
 * STREAM_RECONNECT_TRIES refused connections in a row.
 */
const STREAM_RECONNECT_TRIES = 60;
const STREAM_RECONNECT_DELAY_MS = 500;

/** The data lines of one server-sent event, joined. */
function dataOf(message: string): string {
  return message
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => l.slice(6))
    .join('\n');
}

async function streamEvents(api: MomentumClient, id: string, flags: Flags) {
  let after = numberFlag(flags, 'after');
  let refused = 0;
  for (;;) {
    let res: Response;
    try {
      res = await api.stream('listJobEvents', { params: { id }, query: { after } }, 'text/event-stream');
    } catch (err) {
      if (++refused > STREAM_RECONNECT_TRIES) throw err;
      await new Promise((r) => setTimeout(r, STREAM_RECONNECT_DELAY_MS));
      continue;
    }
    if (res.status === 503 && ++refused <= STREAM_RECONNECT_TRIES) {
      // A replica that is draining refuses new streams: another one (or this one, restarted) will not.
      await new Promise((r) => setTimeout(r, STREAM_RECONNECT_DELAY_MS));
      continue;
    }
    if (!res.ok || !res.body) {
      await api.op('listJobEvents', { params: { id } }); // surfaces the API's error
      throw new CliError(EXIT.unavailable, `the event stream answered ${res.status}`, `http_${res.status}`);
    }
    refused = 0;
    let buffer = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += Buffer.from(chunk).toString();
        let i;
        while ((i = buffer.indexOf('\n\n')) >= 0) {
          const message = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          if (/^event: end$/m.test(message)) return;
          // The server ended the stream (its lifetime, or it is draining): reconnect after the last id.
          if (/^event: close$/m.test(message)) continue;
          if (/^event: error$/m.test(message)) throw new CliError(EXIT.refused, `the event stream ended: ${dataOf(message)}`, 'stream_error');
          const data = dataOf(message);
          if (data) process.stdout.write(data + '\n');
          const eventId = /^id: (\d+)$/m.exec(message)?.[1];
          if (eventId) after = Number(eventId);
        }
      }
    } catch {
      // The connection dropped mid-stream: resume below like any other ending without `end`.
    }
    await new Promise((r) => setTimeout(r, STREAM_RECONNECT_DELAY_MS));
  }
}

async function retrain(api: MomentumClient, args: string[], flags: Flags) {
  const target = need(args[0], 'a job id or model@ref', 'retrain');
  const fromModel = parseModelRef(target);
  const body = {
    dataset: need(flags.dataset, '--dataset name@N', 'retrain'),
    epochs: numberFlag(flags, 'epochs'),
    maxSteps: numberFlag(flags, 'max-steps'),
    labels: labels(flags),
  };
  let job: Schemas['Job'];
  if (fromModel) {
    // A model version: its job's spec, its weights.
    if (flags['from-checkpoint']) throw new CliError(EXIT.usage, 'retrain: --from-checkpoint does not go with a model version (it is its own starting point)');
    job = await api.op('retrainModelVersion', { params: { name: fromModel.name, ref: target.slice(target.indexOf('@') + 1) }, headers: idempotency(flags), body });
  } else {
    job = await api.op('retrainJob', { params: { id: target }, headers: idempotency(flags), body: { ...body, initFrom: flags['from-checkpoint'] } });
  }
  const initFrom = (job.spec as { initFrom?: { checkpoint?: string; model?: string } }).initFrom;
  say(`retraining ${target} as ${job.id} on ${job.dataset}${initFrom ? ` from ${initFrom.model ?? initFrom.checkpoint}` : ''}`);
  if (!flags.promote) return out(flags.wait ? await waitForJob(api, job.id, timeout(flags)) : job);
  const model = flags.model ?? fromModel?.name;
  if (!model) throw new CliError(EXIT.usage, 'retrain: --promote needs the model: retrain a model@ref, or name it with --model');
  await promote(api, await waitForJob(api, job.id, timeout(flags)), model, flags);
}

/**
 * The gated promotion of a freshly trained job. A gate compares numbers measured the same way on the
 * same data, so every alias the gate names is probed first under the protocol and on the dataset
 * version of the new job's probe; then the new job is probed with `promote`, and the runner decides
 * and moves the alias (or not) in one transaction with the model locked. Exit 7 when the gate failed.
 */
async function promote(api: MomentumClient, job: Schemas['Job'], model: string, flags: Flags) {
  const alias = flags.promote!;
  const gate = flags.gate ?? [];
  const rules = gate.map((text) => {
    const rule = parseGateRule(text);
    if (!rule) throw new CliError(EXIT.usage, `--gate ${JSON.stringify(text)}: not a gate rule; write e.g. 'linear>=${alias}-0.5', 'knn>${alias}' or 'linear>=80'`);
    return rule;
  });
  const protocol = { epochs: numberFlag(flags, 'probe-epochs') ?? 10, lr: numberFlag(flags, 'probe-lr', 'number'), batch: numberFlag(flags, 'probe-batch') };
  const key = flags['idempotency-key'];
  const probe = async (spec: Record<string, unknown>, suffix: string) => {
    const body = { type: 'probe', dataset: job.dataset ?? undefined, ...protocol, ...spec } as OperationInput<'submitJob'>['body'];
    const submitted = await api.op('submitJob', { body, headers: key ? { 'idempotency-key': `${key}:${suffix}` } : undefined });
    return waitForJob(api, submitted.id, timeout(flags));
  };
  for (const baseline of new Set(rules.map((r) => r.alias).filter((a): a is string => a !== null))) {
    const current = await api.op('getModelVersion', { params: { name: model, ref: baseline } }).catch((err: unknown) => {
      if (err instanceof ApiCallError && err.status === 404) return null;
      throw err;
    });
    if (!current) {
      say(`${model}@${baseline} does not exist yet: nothing to compare with`);
      continue;
    }
    say(`probing ${model}@${baseline} (v${current.version} now) on ${job.dataset} for the gate`);
    // The gate compares with the version the alias points at when it decides; had it moved since this
    // probe, the gate finds no comparable number and fails rather than compare with a stale one.
    await probe({ source: { model: `${model}@${baseline}` } }, `baseline-${baseline}`);
  }
  say(`probing ${job.id}; ${model}@${alias} moves to it if ${gate.length ? gate.join(' and ') : 'the probe succeeds'}`);
  const probed = await probe({ source: { job: job.id, checkpoint: 'latest' }, promote: { model, alias, gate } }, 'promote');
  const result = (probed.result ?? {}) as { top1?: number; gate?: { passed: boolean; moved: boolean; version: number | null; previousVersion: number | null; rules: { rule: string; passed: boolean; reason: string }[] } };
  const decision = result.gate;
  out({ job: job.id, probe: probed.id, top1: result.top1 ?? null, gate: decision ?? null });
  if (!decision) throw new CliError(EXIT.gateFailed, `probe ${probed.id} recorded no gate decision`, 'gate_failed');
  for (const r of decision.rules) say(`${r.passed ? 'pass' : 'FAIL'} ${r.rule}: ${r.reason}`);
  const was = decision.previousVersion === null ? 'unset' : `v${decision.previousVersion}`;
  if (!decision.passed) throw new CliError(EXIT.gateFailed, `gate failed: ${model}@${alias} stays ${was}`, 'gate_failed');
  say(decision.moved ? `${model}@${alias} → v${decision.version} (was ${was})` : `${model}@${alias} is already v${decision.version}`);
}

async function models(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, nameArg, third, fourth] = args;
  const name = () => need(nameArg, 'a model name', `models ${sub}`);
  switch (sub) {
    case 'list':
      return out(await api.op('listModels'));
    case 'get':
      return out(await api.op('getModel', { params: { name: name() } }));
    case 'versions':
      return out(await api.op('listModelVersions', { params: { name: name() } }));
    case 'gates':
      return out(await api.op('listModelGateResults', { params: { name: name() } }));
    case 'register': {
      const body = { job: need(third, 'a job id', 'models register'), checkpoint: fourth ?? 'latest', aliases: flags.alias ?? [] };
      const version = await api.op('registerModelVersion', { params: { name: name() }, body });
      say(`registered ${body.job} ${body.checkpoint} as ${version.ref}${version.aliases.length ? ` (${version.aliases.join(', ')})` : ''}`);
      return out(version);
    }
    case 'alias': {
      const version = Number(need(fourth, 'a version', 'models alias'));
      if (!Number.isInteger(version)) throw new CliError(EXIT.usage, `models alias: the version must be an integer, got ${JSON.stringify(fourth)}`);
      const expect = flags.expect === undefined ? undefined : flags.expect === 'none' ? null : Number(flags.expect);
      if (expect !== undefined && expect !== null && !Number.isInteger(expect)) throw new CliError(EXIT.usage, `--expect must be a version or none, got ${JSON.stringify(flags.expect)}`);
      return out(await api.op('setModelAlias', { params: { name: name(), alias: need(third, 'an alias', 'models alias') }, body: { version, expectedVersion: expect } }));
    }
    case 'lineage': {
      const ref = need(nameArg, 'model@ref', 'models lineage');
      const parsed = parseModelRef(ref);
      if (!parsed) throw new CliError(EXIT.usage, `models lineage: expected model@version or model@alias, got ${JSON.stringify(ref)}`);
      return out(await api.op('getModelVersionLineage', { params: { name: parsed.name, ref: ref.slice(ref.indexOf('@') + 1) } }));
    }
    default:
      throw unknownCommand(`models ${sub ?? ''}`.trim());
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

async function checkpoints(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, jobArg, third, fourth] = args;
  const id = () => need(jobArg, 'a job id', `checkpoints ${sub}`);
  switch (sub) {
    case 'list':
      return out(await api.op('listCheckpoints', { params: { id: id() } }));
    case 'get':
      return out(await api.op('getCheckpoint', { params: { id: id(), ref: third ?? 'latest' } }));
    case 'alias': {
      const version = Number(need(fourth, 'a version', 'checkpoints alias'));
      if (!Number.isInteger(version)) throw new CliError(EXIT.usage, `checkpoints alias: the version must be an integer, got ${JSON.stringify(fourth)}`);
      return out(await api.op('setCheckpointAlias', { params: { id: id(), alias: need(third, 'an alias', 'checkpoints alias') }, body: { version } }));
    }
    case 'unalias':
      await api.op('deleteCheckpointAlias', { params: { id: id(), alias: need(third, 'an alias', 'checkpoints unalias') } });
      return out({ deleted: third });
    case 'download':
      return download(api, id(), third ?? 'latest', flags);
    default:
      throw unknownCommand(`checkpoints ${sub ?? ''}`.trim());
  }
}

async function download(api: MomentumClient, id: string, ref: string, flags: Flags) {
  const file = oneOf(flags, 'file', ['backbone', 'state'] as const) ?? 'backbone';
  // `model@ref` names a model version; anything else a job and one of its checkpoints.
  const model = parseModelRef(id);
  const query = { file, ttl: numberFlag(flags, 'ttl') };
  const link = model
    ? ((await api.op('downloadModelVersion', { params: { name: model.name, ref: id.slice(id.indexOf('@') + 1) }, query })) as Schemas['Download'])
    : ((await api.op('getCheckpointDownloadUrl', { params: { id, ref }, query })) as Schemas['Download']);
  const target = flags.output ?? link.fileName;
  const partial = `${target}.partial`;
  const res = await fetch(link.url);
  if (!res.ok || !res.body) throw new CliError(EXIT.unavailable, `download failed: storage answered ${res.status}`, 'download_failed');
  await pipeline(Readable.fromWeb(res.body as never), createWriteStream(partial));
  const digest = await sha256File(partial);
  if (digest !== link.sha256) {
    await unlink(partial).catch(() => {});
    throw new CliError(EXIT.checksum, `sha256 mismatch for ${link.fileName}: expected ${link.sha256}, got ${digest}`, 'checksum_mismatch');
  }
  await rename(partial, target);
  say(`saved ${target} (${link.bytes} bytes, sha256 ${digest}, checkpoint v${link.version})`);
  out({ path: target, version: link.version, bytes: link.bytes, sha256: digest });
}

async function evaluations(api: MomentumClient, args: string[]) {
  const [sub, jobArg] = args;
  if (sub === 'list') {
    const listed = await api.op('listEvaluations', { params: { id: need(jobArg, 'a job id', 'evaluations list') } });
    if (listed.evaluations.length) say(evaluationTable(listed.evaluations));
    return out(listed);
  }
  if (sub === 'compare') return out(await api.op('compareEvaluations', { params: { id: need(jobArg, 'a job id', 'evaluations compare') } }));
  throw unknownCommand(`evaluations ${sub ?? ''}`.trim());
}

type EvaluationItem = OperationOutput<'listEvaluations'>['evaluations'][number];

/**
 * The evaluations as people read them: the model beside both baselines of its probe and its gain
 * over each, in points (stderr; stdout keeps the JSON for scripts).
 */
function evaluationTable(evaluations: EvaluationItem[]): string {
  const pct = (v: unknown) => (typeof v === 'number' ? `${(100 * v).toFixed(1)}%` : '-');
  const points = (v: number | undefined) => (v === undefined ? '-' : `${v >= 0 ? '+' : ''}${(100 * v).toFixed(1)}`);
  const subject = (e: EvaluationItem, name: string) => {
    const s = e.subjects?.[name] as { linear?: { top1?: number }; knn?: { top1?: number } } | undefined;
    return s ? `${pct(s.linear?.top1)} / ${pct(s.knn?.top1)}` : '-';
  };
  const gain = (e: EvaluationItem, name: string) => {
    const g = e.gains?.[name];
    return g ? `${points(g.linearTop1)} / ${points(g.knnTop1)}` : '-';
  };
  const rows = [
    ['version', 'model linear / kNN', 'random init', 'raw pixels', 'gain vs random init', 'gain vs raw pixels'],
    ...evaluations.map((e) => [
      `v${e.checkpointVersion}`,
      `${pct(e.top1)} / ${pct(e.knnTop1)}`,
      subject(e, 'random_init'),
      subject(e, 'raw_pixels'),
      gain(e, 'random_init'),
      gain(e, 'raw_pixels'),
    ]),
  ];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()).join('\n');
}

/** What `datasets upload` sends as the version's options: every option the API takes. */
function versionOptions(flags: Flags): OperationInput<'createDatasetVersion'>['body']['options'] {
  const format = oneOf(flags, 'format', ['imagefolder', 'idx', 'cifar10', 'cifar100', 'unlabeled'] as const);
  if (!format) throw new CliError(EXIT.usage, 'datasets upload: missing --format imagefolder|idx|cifar10|cifar100|unlabeled');
  const channels = numberFlag(flags, 'channels');
  if (channels !== undefined && channels !== 1 && channels !== 3) throw new CliError(EXIT.usage, `--channels must be 1 or 3, got ${channels}`);
  return {
    format,
    imageSize: numberFlag(flags, 'image-size'),
    channels,
    resize: oneOf(flags, 'resize', ['none', 'stretch', 'center-crop'] as const),
    valFraction: numberFlag(flags, 'val-fraction', 'number'),
    seed: numberFlag(flags, 'seed'),
  };
}

async function datasets(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, nameArg, third] = args;
  const name = () => need(nameArg, 'a dataset name', `datasets ${sub}`);
  switch (sub) {
    case 'create':
      return out(await api.op('createDataset', { body: { name: name(), description: flags.description } }));
    case 'list':
      return out(await api.op('listDatasets'));
    case 'get':
      return out(third ? await api.op('getDatasetVersion', { params: { name: name(), version: third } }) : await api.op('getDataset', { params: { name: name() } }));
    case 'versions':
      return out(await api.op('listDatasetVersions', { params: { name: name() } }));
    case 'delete':
      if (third) await api.op('deleteDatasetVersion', { params: { name: name(), version: third } });
      else await api.op('deleteDataset', { params: { name: name() } });
      return out({ deleted: third ? `${nameArg}@${third}` : nameArg });
    case 'upload':
      return upload(api, name(), need(third, 'an archive path', 'datasets upload'), flags);
    default:
      throw unknownCommand(`datasets ${sub ?? ''}`.trim());
  }
}

async function upload(api: MomentumClient, name: string, archive: string, flags: Flags) {
  const options = versionOptions(flags);
  let size: number;
  try {
    size = (await stat(archive)).size;
  } catch (err) {
    throw new CliError(EXIT.usage, `${archive}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const fileName = basename(archive).replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z0-9]+/, '') || 'archive';
  // Create the dataset on first upload; an existing one is fine.
  await api.op('createDataset', { body: { name, description: flags.description } }).catch((e) => {
    if (!(e instanceof ApiCallError && e.code === 'dataset_exists')) throw e;
  });
  const version = await api.op('createDatasetVersion', { params: { name }, body: { options, fileName, sizeBytes: size, multipart: flags.multipart } });
  say(`uploading ${archive} (${size} bytes) as ${version.ref} (${version.upload.method})`);
  await uploadArchive(api, archive, version.upload);
  const started = await api.op('finalizeDatasetVersion', { params: { name, version: String(version.version) } });
  say(`ingesting ${version.ref} (job ${started.job.id})`);
  if (!flags.wait) return out(started);
  try {
    await waitForJob(api, started.job.id, timeout(flags));
  } catch (err) {
    if (err instanceof CliError && err.exitCode === EXIT.jobFailed && /set resize to/.test(err.message)) {
      throw new CliError(err.exitCode, `${err.message} (with the CLI: --resize stretch or --resize center-crop)`, err.code);
    }
    throw err;
  }
  out(await api.op('getDatasetVersion', { params: { name, version: String(version.version) } }));
}

async function uploadArchive(api: MomentumClient, path: string, upload: Schemas['Upload']): Promise<void> {
  if (upload.method === 'PUT') {
    const res = await fetch(upload.url!, { method: 'PUT', body: await readFile(path) });
    if (!res.ok) throw new CliError(EXIT.unavailable, `upload failed: storage answered ${res.status}`, 'upload_failed');
    return;
  }
  const parts: { partNumber: number; etag: string }[] = [];
  const partSize = upload.partSize!;
  for (const part of upload.parts ?? []) {
    const start = (part.partNumber - 1) * partSize;
    const chunks: Buffer[] = [];
    for await (const c of createReadStream(path, { start, end: start + partSize - 1 })) chunks.push(c as Buffer);
    const res = await fetch(part.url, { method: 'PUT', body: Buffer.concat(chunks) });
    if (!res.ok) throw new CliError(EXIT.unavailable, `upload of part ${part.partNumber} failed: storage answered ${res.status}`, 'upload_failed');
    parts.push({ partNumber: part.partNumber, etag: res.headers.get('etag') ?? '' });
    say(`part ${part.partNumber}/${upload.parts!.length} uploaded`);
  }
  await api.callPath('POST', upload.completeUrl!, { uploadId: upload.uploadId, parts });
}

/** Polls the sweep until it is no longer running (a line per change on stderr); exit code 3 when canceled. */
async function waitForSweep(api: MomentumClient, id: string, timeoutSeconds: number): Promise<Schemas['Sweep']> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let last = '';
  for (;;) {
    const sweep = await api.op('getSweep', { params: { id } });
    const r = sweep.runs;
    const status = `${id} ${sweep.state}: ${r.submitted}/${r.total} submitted, ${r.finished} finished, ${r.probed} probed`;
    if (status !== last) say(status);
    last = status;
    if (sweep.state !== 'running') {
      if (sweep.state === 'canceled') {
        out(sweep);
        throw new CliError(EXIT.jobFailed, `sweep ${id} was canceled${sweep.reason ? `: ${sweep.reason}` : ''}`, 'sweep_canceled');
      }
      return sweep;
    }
    if (Date.now() > deadline) throw new CliError(EXIT.timeout, `sweep ${id} still running after ${timeoutSeconds} s`, 'timeout');
    await sleep(5000);
  }
}

async function sweeps(api: MomentumClient, args: string[], flags: Flags) {
  const [sub, arg] = args;
  const id = () => need(arg, 'a sweep id', `sweeps ${sub}`);
  switch (sub) {
    case 'submit': {
      const file = need(arg, 'a sweep file', 'sweeps submit');
      const body = (await readSpec(file)) as unknown as OperationInput<'createSweep'>['body'];
      let sweep: Schemas['Sweep'];
      try {
        sweep = await api.op('createSweep', { body, headers: idempotency(flags) });
      } catch (err) {
        if (err instanceof ApiCallError && err.status < 500) throw new ApiCallError(err.status, err.code, `${file}: ${err.message}`, err.details);
        throw err;
      }
      say(`submitted sweep ${sweep.id} (${sweep.runs.total} settings)`);
      return out(flags.wait ? await waitForSweep(api, sweep.id, timeout(flags)) : sweep);
    }
    case 'get': {
      if (!flags.csv) return out(await api.op('getSweep', { params: { id: id() } }));
      const res = await api.stream('downloadSweepResults', { params: { id: id() }, query: { format: 'csv' } }, 'text/csv');
      if (!res.ok) return out(await api.op('getSweep', { params: { id: id() } })); // surfaces the API's error
      process.stdout.write(await res.text());
      return;
    }
    case 'wait':
      return out(await waitForSweep(api, id(), timeout(flags)));
    case 'cancel':
      return out(await api.op('cancelSweep', { params: { id: id() } }));
    default:
      throw new CliError(EXIT.usage, `sweeps: unknown subcommand ${JSON.stringify(sub ?? '')}; --help lists them`);
  }
}

function unknownCommand(command: string): CliError {
  return new CliError(EXIT.usage, command ? `unknown command "${command}"; --help lists the commands` : 'no command given; --help lists the commands');
}

const COMMANDS: Record<string, (api: MomentumClient, args: string[], flags: Flags) => Promise<unknown>> = {
  jobs,
  retrain,
  checkpoints,
  evaluations: (api, args) => evaluations(api, args),
  datasets,
  models,
  sweeps,
};

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (err) {
    throw new CliError(EXIT.usage, `${(err as Error).message.split(/\.(\s|$)/)[0]}; --help lists the commands and options`);
  }
  const { values, positionals } = parsed;
  jsonMode = Boolean(values.json);
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return EXIT.ok;
  }
  const [command, ...rest] = positionals;
  const run = command ? COMMANDS[command] : undefined;
  if (!run) throw unknownCommand(command ?? '');
  await run(client(), rest, values);
  return EXIT.ok;
}

/** One failure, printed once: one line for people, or one JSON line with --json. */
function fail(exitCode: number, code: string, message: string, details: { path: string; message: string }[] = []): never {
  if (jsonMode) {
    process.stderr.write(JSON.stringify({ error: { code, message, details }, exitCode }) + '\n');
  } else {
    // The API's message already names the first field; list only the others.
    const more = details.filter((d) => !message.includes(d.message)).map((d) => `; ${d.path || '(body)'}: ${d.message}`);
    process.stderr.write(`momentum: ${message}${more.join('')}\n`);
  }
  process.exit(exitCode);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof CliError) fail(err.exitCode, err.code, err.message);
    if (err instanceof ApiCallError) fail(err.status >= 500 ? EXIT.unavailable : EXIT.refused, err.code, `${err.message} (HTTP ${err.status} ${err.code})`, err.details);
    if (err instanceof TypeError && /fetch failed/.test(err.message)) {
      const url = process.env.MOMENTUM_URL ?? 'http://127.0.0.1:8787';
      fail(EXIT.unavailable, 'unreachable', `cannot reach the API at ${url}: ${(err.cause as Error)?.message ?? err.message}; is \`npm run api\` running and MOMENTUM_URL right?`);
    }
    fail(EXIT.usage, 'unexpected', `unexpected error: ${(err as Error)?.stack ?? String(err)}`);
  },
);
