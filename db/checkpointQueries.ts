/**
 * Checkpoint versions, aliases and evaluations of a job. Callers check first that the job is the
 * tenant's (every route does): these queries take a job id that is already known to be allowed.
 *
 * Aliases: a row in checkpoint_aliases wins. Without one, `latest` is the highest version and `best`
 * the version with the highest probe top-1, so both work even before the runner maintains them.
 */
import { and, asc, desc, eq, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { checkpointAliases, checkpoints, evaluations } from './schema.js';

export type CheckpointRow = typeof checkpoints.$inferSelect;
export type EvaluationRow = typeof evaluations.$inferSelect;

/** What the runner writes in `checkpoints.files`: file name → object under s3_prefix. */
export type CheckpointFiles = Record<string, { key: string; bytes: number; sha256: string }>;

export const RESERVED_ALIASES = ['latest', 'best'] as const;
const VERSION_REF = /^v?(\d{1,6})$/;

export function parseVersionRef(ref: string): number | undefined {
  const m = VERSION_REF.exec(ref);
  return m ? Number(m[1]) : undefined;
}

export async function listCheckpoints(db: Db, jobId: string): Promise<CheckpointRow[]> {
  return db.select().from(checkpoints).where(eq(checkpoints.jobId, jobId)).orderBy(asc(checkpoints.version));
}

/** Alias → version for one job, the implicit `latest`/`best` included. */
export async function aliasesOf(db: Db, jobId: string): Promise<Record<string, number>> {
  const rows = await db
    .select({ alias: checkpointAliases.alias, version: checkpoints.version })
    .from(checkpointAliases)
    .innerJoin(checkpoints, eq(checkpoints.id, checkpointAliases.checkpointId))
    .where(eq(checkpointAliases.jobId, jobId));
  const out: Record<string, number> = Object.fromEntries(rows.map((r) => [r.alias, r.version]));
  for (const implicit of RESERVED_ALIASES) {
    if (out[implicit] === undefined) {
      const cp = await implicitAlias(db, jobId, implicit);
      if (cp) out[implicit] = cp.version;
    }
  }
  return out;
}

async function implicitAlias(db: Db, jobId: string, alias: string): Promise<CheckpointRow | undefined> {
  if (alias === 'latest') {
    const [row] = await db.select().from(checkpoints).where(eq(checkpoints.jobId, jobId)).orderBy(desc(checkpoints.version)).limit(1);
    return row;
  }
  if (alias === 'best') {
    const [row] = await db
      .select({ cp: checkpoints })
      .from(evaluations)
      .innerJoin(checkpoints, eq(checkpoints.id, evaluations.checkpointId))
      .where(eq(checkpoints.jobId, jobId))
      .orderBy(desc(evaluations.top1), desc(checkpoints.version))
      .limit(1);
    return row?.cp;
  }
  return undefined;
}

/** A version (`3`, `v3`) or an alias of the job; undefined when it names nothing. */
export async function resolveCheckpoint(db: Db, jobId: string, ref: string): Promise<CheckpointRow | undefined> {
  const version = parseVersionRef(ref);
  if (version !== undefined) {
    const [row] = await db.select().from(checkpoints).where(and(eq(checkpoints.jobId, jobId), eq(checkpoints.version, version)));
    return row;
  }
  const [aliased] = await db
    .select({ cp: checkpoints })
    .from(checkpointAliases)
    .innerJoin(checkpoints, eq(checkpoints.id, checkpointAliases.checkpointId))
    .where(and(eq(checkpointAliases.jobId, jobId), eq(checkpointAliases.alias, ref)));
  if (aliased) return aliased.cp;
  return implicitAlias(db, jobId, ref);
}

export async function setAlias(db: Db, jobId: string, alias: string, checkpointId: string): Promise<void> {
  await db
    .insert(checkpointAliases)
    .values({ jobId, alias, checkpointId })
    .onConflictDoUpdate({ target: [checkpointAliases.jobId, checkpointAliases.alias], set: { checkpointId, updatedAt: sql`now()` } });
}

export async function deleteAlias(db: Db, jobId: string, alias: string): Promise<boolean> {
  const rows = await db
    .delete(checkpointAliases)
    .where(and(eq(checkpointAliases.jobId, jobId), eq(checkpointAliases.alias, alias)))
    .returning({ alias: checkpointAliases.alias });
  return rows.length > 0;
}

export interface EvaluationView {
  evaluation: EvaluationRow;
  checkpointVersion: number;
  checkpointStep: number;
  /** The job whose checkpoint was evaluated (the pretrain job). */
  sourceJobId: string;
  /** The probe job that produced the evaluation. */
  probeJobId: string;
}

/** Evaluations about this job: of its checkpoints (a pretrain job) or produced by it (a probe job). */
export async function evaluationsOfJob(db: Db, jobId: string): Promise<EvaluationView[]> {
  const rows = await db
    .select({ evaluation: evaluations, version: checkpoints.version, step: checkpoints.step, sourceJobId: checkpoints.jobId })
    .from(evaluations)
    .innerJoin(checkpoints, eq(checkpoints.id, evaluations.checkpointId))
    .where(sql`${checkpoints.jobId} = ${jobId} or ${evaluations.jobId} = ${jobId}`)
    .orderBy(asc(checkpoints.version), asc(evaluations.createdAt));
  return rows.map((r) => ({
    evaluation: r.evaluation,
    checkpointVersion: r.version,
    checkpointStep: r.step,
    sourceJobId: r.sourceJobId,
    probeJobId: r.evaluation.jobId,
  }));
}
