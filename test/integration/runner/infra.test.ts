/**
 * The deployment files hold what the runner relies on: a GPU for the runner, a stop grace period
 * longer than RUNNER_GRACE_SECONDS, KEDA watching the Redis list BullMQ really keeps waiting jobs
 * in, and Dockerfiles that start entry points which exist. There is no Docker engine or cluster
 * here, so this parses the files and checks the queue key against a real BullMQ queue.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { parse, parseAllDocuments } from 'yaml';
import { BULLMQ_CONNECTION_OPTIONS, QUEUES } from '../../../contracts/queues.js';
import { baseConfig, uniqueName } from '../../support/services.js';

const REPO = join(import.meta.dirname, '..', '..', '..');
const read = (p: string) => readFileSync(join(REPO, p), 'utf8');
const k8s = (file: string) => parseAllDocuments(read(`infra/k8s/${file}`)).map((d) => d.toJS());
const byKind = (docs: any[], kind: string) => docs.find((d) => d.kind === kind);

test('compose: the services, a GPU for the runner, a stop grace period above the runner\'s', () => {
  // merge: the file shares its environment between services with `<<: *momentum-env`.
  const compose = parse(read('infra/compose.yaml'), { merge: true });
  assert.deepEqual(Object.keys(compose.services).sort(), ['api', 'minio', 'postgres', 'redis', 'runner']);
  const runner = compose.services.runner;
  assert.deepEqual(runner.deploy.resources.reservations.devices[0].capabilities, ['gpu']);
  const grace = Number(runner.environment.RUNNER_GRACE_SECONDS);
  assert.ok(parseInt(runner.stop_grace_period) > grace, `${runner.stop_grace_period} > ${grace}s`);
  assert.equal(runner.environment.S3_ENDPOINT, 'http://minio:9000');
  // One run per GPU: as many concurrent runs and GPU slots as reserved devices.
  const devices = runner.deploy.resources.reservations.devices[0].count;
  assert.equal(Number(runner.environment.RUNNER_GPUS), devices);
  assert.equal(Number(runner.environment.RUNNER_CONCURRENCY), devices);
  for (const name of ['api', 'runner']) assert.ok(existsSync(join(REPO, compose.services[name].build.dockerfile)));
});

test('kubernetes: runner with a GPU, grace above RUNNER_GRACE_SECONDS, preStop; KEDA from zero on the train queue', () => {
  const config = byKind(k8s('config.yaml'), 'ConfigMap').data;
  const runner = byKind(k8s('runner.yaml'), 'Deployment');
  const pod = runner.spec.template.spec;
  assert.equal(pod.containers[0].resources.limits['nvidia.com/gpu'], 1);
  // One run per GPU: as many concurrent runs and GPU slots as the pod's GPUs, like compose.
  assert.equal(Number(config.RUNNER_GPUS), pod.containers[0].resources.limits['nvidia.com/gpu']);
  assert.equal(Number(config.RUNNER_CONCURRENCY), Number(config.RUNNER_GPUS));
  assert.ok(pod.terminationGracePeriodSeconds > Number(config.RUNNER_GRACE_SECONDS));
  assert.ok(pod.containers[0].lifecycle.preStop.exec.command.join(' ').includes('kill -TERM 1'));
  const scaled = byKind(k8s('keda.yaml'), 'ScaledObject');
  assert.equal(scaled.spec.scaleTargetRef.name, runner.metadata.name);
  assert.equal(scaled.spec.minReplicaCount, 0);
  const lists = scaled.spec.triggers.map((t: any) => t.metadata.listName);
  assert.deepEqual(lists, [`${config.QUEUE_PREFIX}:${QUEUES.train}:wait`, `${config.QUEUE_PREFIX}:${QUEUES.train}:active`]);
  const api = k8s('api.yaml');
  assert.equal(byKind(api, 'Service').spec.selector['app.kubernetes.io/name'], byKind(api, 'Deployment').metadata.name);
  const kustomize = parse(read('infra/k8s/kustomization.yaml'));
  for (const r of kustomize.resources) assert.ok(existsSync(join(REPO, 'infra/k8s', r)), r);
});

test('dockerfiles start entry points that exist and copy folders that exist', () => {
  for (const [file, entry] of [
    ['infra/docker/runner.Dockerfile', 'runner/main.ts'],
    ['infra/docker/api.Dockerfile', 'api/server.ts'],
  ] as const) {
    const text = read(file);
    assert.match(text, new RegExp(`CMD \\["node", "--import", "tsx", "${entry}"\\]`));
    assert.ok(existsSync(join(REPO, entry)), entry);
    for (const m of text.matchAll(/^COPY (\S+) /gm)) assert.ok(existsSync(join(REPO, m[1])), `${file}: COPY ${m[1]}`);
  }
  assert.match(read('infra/docker/runner.Dockerfile'), /^FROM nvidia\/cuda:/m);
  // The API image carries no ML dependency: native packages skipped, the JS ones removed.
  assert.match(read('infra/docker/api.Dockerfile'), /npm ci --omit=optional[^\n]*\n && rm -rf node_modules\/@tensorflow/);
});

test('a waiting BullMQ job sits in the Redis list KEDA counts', async () => {
  const prefix = uniqueName('keda');
  const connection = new Redis(baseConfig.REDIS_URL, { ...BULLMQ_CONNECTION_OPTIONS });
  const queue = new Queue(QUEUES.train, { connection, prefix });
  try {
    await queue.add('pretrain', { jobId: 'x' });
    assert.equal(await connection.llen(`${prefix}:${QUEUES.train}:wait`), 1);
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
    connection.disconnect();
  }
});
