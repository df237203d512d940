/**
 * A run's child process starts with an allowlisted environment (issue 10): the ingest child, which
 * parses users' archives, gets the database and S3 settings it uses and nothing else of value; a
 * training child does not even get the database. Read from the kernel's record of the real child
 * process (/proc/<pid>/environ), with secrets planted in the environment the runner hands it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { RunChild } from '../../../runner/supervisor/childProcess.js';
import { childEnvironment } from '../../../runner/supervisor/childEnv.js';
import { configEnv } from '../../../runner/supervisor/context.js';
import { createTestDatabase, testConfig, type TestDatabase } from '../../support/services.js';

const PLANTED = {
  AWS_SECRET_ACCESS_KEY: 'planted-aws-secret',
  AWS_ACCESS_KEY_ID: 'planted-aws-id',
  AWS_SESSION_TOKEN: 'planted-aws-session',
  GITHUB_TOKEN: 'planted-github-token',
  WEBHOOK_SIGNING_KEY: 'planted-webhook-signing-key',
  METRICS_TOKEN: 'planted-metrics-token-0123456789',
  REDIS_URL: 'redis://:planted-redis-password@127.0.0.1:6379',
};

let database: TestDatabase;
before(async () => (database = await createTestDatabase()));
after(async () => database.cleanup());

/** What the runner passes: its own environment, the configuration, the slot's device variables. */
function runnerEnv(): NodeJS.ProcessEnv {
  return { ...process.env, ...configEnv(testConfig({ DATABASE_URL: database.url })), ...PLANTED, CUDA_VISIBLE_DEVICES: '' };
}

function environOf(pid: number): Record<string, string> {
  const raw = readFileSync(`/proc/${pid}/environ`, 'utf8');
  return Object.fromEntries(raw.split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

describe('child environment', () => {
  test('the allowlist: ingest keeps the database, training does not; planted secrets never pass', () => {
    const env = runnerEnv();
    const ingest = childEnvironment('ingest', env);
    const pretrain = childEnvironment('pretrain', env);
    for (const e of [ingest, pretrain]) {
      for (const name of Object.keys(PLANTED)) assert.equal(e[name], undefined, name);
      assert.equal(e.S3_ENDPOINT, env.S3_ENDPOINT);
      assert.equal(e.PATH, env.PATH);
      assert.equal(e.CUDA_VISIBLE_DEVICES, '');
    }
    assert.equal(ingest.DATABASE_URL, database.url);
    assert.equal(pretrain.DATABASE_URL, undefined);
    assert.equal(childEnvironment('probe', env).DATABASE_URL, undefined);
  });

  test('a real ingest child sees none of the planted secrets, and still reaches its database', { skip: !existsSync('/proc/self/environ') }, async () => {
    const child = RunChild.start({ kind: 'ingest', jobId: randomUUID(), attempt: 1, datasetVersionId: randomUUID() }, {}, { env: runnerEnv(), mirrorStderr: false });
    // The process has exec'd when start returns: its environment is fixed from here on.
    const seen = environOf(child.pid!);
    for (const [name, value] of Object.entries(PLANTED)) {
      assert.equal(seen[name], undefined, name);
      assert.ok(!Object.values(seen).some((v) => v.includes(value)), `${name}'s value under another name`);
    }
    assert.equal(seen.DATABASE_URL, database.url);
    const outcome = await child.outcome;
    // It asked its database for the (unknown) version: the connection it was given works.
    assert.equal(outcome.kind, 'failed', JSON.stringify(outcome));
    assert.match((outcome as { message: string }).message, /no dataset version/);
  });

  test('a real training child gets no database URL either', { skip: !existsSync('/proc/self/environ') }, async () => {
    const child = RunChild.start(
      { kind: 'probe', jobId: randomUUID(), attempt: 1, backboneDir: '/nonexistent', manifest: {} as never, probeConfig: {}, backend: 'cpu', cacheDir: '/nonexistent' },
      {},
      { env: runnerEnv(), mirrorStderr: false },
    );
    const seen = environOf(child.pid!);
    child.kill();
    await child.outcome;
    assert.equal(seen.DATABASE_URL, undefined);
    for (const name of Object.keys(PLANTED)) assert.equal(seen[name], undefined, name);
    assert.ok(seen.S3_BUCKET, 'storage settings pass');
  });
});
