/**
 * The submission statement (db/jobQueries.ts insertJobs) runs on a plan Postgres made once per
 * connection, not one it plans again at every execution: whatever a submission asks of it (limits
 * counted or skipped, a numbered or `latest` dataset version), it must settle on the generic plan
 * after Postgres's five custom ones. A parameter that folds away part of the statement in a custom
 * plan (a CASE on it) keeps the custom plans looking cheaper, and every submission then pays for
 * planning.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createHarness, seedReadyDataset, type Harness } from '../api/harness.js';
import { insertJob, type JobDatasetInput } from '../../../db/jobQueries.js';
import { connectDatabase } from '../../../db/client.js';

let h: Harness;

before(async () => {
  h = await createHarness();
  const { versionIds } = await seedReadyDataset(h, h.tenantA, 'fmnist', 2);
  // A tenant with many active jobs, and statistics that know it: counting them then costs enough
  // that a plan with the count folded away looks much cheaper than the generic one.
  await h.database.sql`
    insert into jobs (tenant_id, type, state, spec, dataset_version_id)
    select ${h.tenantA}, 'pretrain', 'queued', '{}'::jsonb, ${versionIds[0]!} from generate_series(1, 20000)`;
  await h.database.sql`analyze jobs`;
});
after(async () => h.close());

test('each variant of the submission statement settles on a generic plan', async () => {
  // One connection (set up as the API's), so that every execution of a variant reuses the same prepared statement.
  const database = connectDatabase(h.database.url, { max: 1 });
  const { sql } = database;
  try {
    const variants: { maxActiveJobs: number | null; maxStoredBytes: number | null; dataset: JobDatasetInput }[] = [];
    for (const maxActiveJobs of [null, 1_000_000])
      for (const maxStoredBytes of [null, 1e15])
        for (const version of [1, 'latest'] as const) variants.push({ maxActiveJobs, maxStoredBytes, dataset: { kind: 'ref', name: 'fmnist', version } });
    const executions = 12;
    for (const v of variants) {
      for (let i = 0; i < executions; i++) {
        const r = await insertJob(sql, {
          id: randomUUID(),
          tenantId: h.tenantA,
          type: 'pretrain',
          specJson: JSON.stringify({ type: 'pretrain', dataset: 'fmnist' }),
          idempotencyKey: randomUUID(),
          requestHash: 'h',
          parentJobId: null,
          announceQueued: false,
          ...v,
        });
        assert.equal(r.outcome, 'created');
      }
    }
    const plans = await sql<{ custom_plans: number; generic_plans: number }[]>`
      select custom_plans::int, generic_plans::int from pg_prepared_statements where statement like '%insert into jobs%' and statement not like '%pg_prepared_statements%'`;
    assert.ok(plans.length >= 1);
    for (const p of plans) assert.ok(p.custom_plans <= 5, `a statement planned anew at ${p.custom_plans} of ${p.custom_plans + p.generic_plans} executions`);
    assert.equal(
      plans.reduce((n, p) => n + p.custom_plans + p.generic_plans, 0),
      variants.length * executions,
    );
  } finally {
    await database.close();
  }
});
