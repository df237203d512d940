/**
 * A gated promotion, decided once per probe job in one transaction with the model's row locked:
 * read where the gate's aliases point now, find each one's evaluation under the same protocol on the
 * same dataset version as the candidate's, decide (contracts/gate.ts), and on a pass register the
 * candidate as a version and move the alias. Two promotions of one model racing take turns on the
 * lock, and the second decides against what the first left: the alias moves once per winning
 * decision, never from a stale read. A retried probe finds its recorded decision and returns it.
 */
import { and, desc, eq, ne, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import type { JobRow } from './jobs.js';
import { checkpoints, evaluations, jobs, modelGateResults, modelVersions } from './schema.js';
import {
  announce,
  ensureModel,
  lockModel,
  moveModelAlias,
  registerModelVersion,
  resolveModelVersion,
  type LineageRecord,
  type ModelVersionRow,
} from './models.js';
import { decideGate, gateMetricsOf, parseGateRule, probeProtocolOf, sameProtocol, type Baseline, type GateRule, type RuleOutcome } from '../contracts/gate.js';
import type { PromoteSpec } from '../contracts/jobSpec.js';

type EvaluationRow = typeof evaluations.$inferSelect;
type CheckpointRow = typeof checkpoints.$inferSelect;
export type GateResultRow = typeof modelGateResults.$inferSelect;

export interface PromotionInput {
  tenantId: string;
  /** The probe job: its spec carries `promote`, its dataset version is the comparison's. */
  probeJob: Pick<JobRow, 'id' | 'spec' | 'datasetVersionId'>;
  evaluation: EvaluationRow;
  /** The probed checkpoint: the candidate. */
  checkpoint: CheckpointRow;
  promote: PromoteSpec;
  /** The candidate's lineage, gathered before the transaction (it reads S3). */
  lineage: LineageRecord;
}

export interface PromotionResult {
  model: string;
  alias: string;
  passed: boolean;
  moved: boolean;
  /** The candidate's model version (registered on a pass). */
  version: number | null;
  previousVersion: number | null;
  rules: RuleOutcome[];
  /** True when this probe's decision had been recorded by an earlier attempt. */
  replayed: boolean;
}

export async function decidePromotion(db: Db, input: PromotionInput): Promise<PromotionResult> {
  const { promote, probeJob, evaluation, checkpoint } = input;
  const rules = promote.gate.map((text) => parseGateRule(text)).filter((r): r is GateRule => r !== undefined);
  return db.transaction(async (tx) => {
    const { model } = await ensureModel(tx, input.tenantId, promote.model);
    await lockModel(tx, model.id);
    const [recorded] = await tx.select().from(modelGateResults).where(eq(modelGateResults.probeJobId, probeJob.id));
    if (recorded) return await resultOf(tx, promote, recorded, true);

    const protocol = probeProtocolOf(evaluation, probeJob.spec);
    const current = (await resolveModelVersion(tx, model.id, { alias: promote.alias })) ?? null;
    let decision: { passed: boolean; rules: RuleOutcome[] };
    if (current?.checkpointId === checkpoint.id) {
      // Already there: nothing to decide, nothing to move.
      decision = { passed: true, rules: [] };
    } else {
      const baselines: Record<string, Baseline> = {};
      for (const alias of new Set(rules.map((r) => r.alias).filter((a): a is string => a !== null))) {
        baselines[alias] = await baselineOf(tx, model.id, alias, probeJob, protocol);
      }
      decision = decideGate(rules, gateMetricsOf(evaluation), baselines);
    }

    let version: ModelVersionRow | null = null;
    let moved = false;
    if (decision.passed) {
      ({ version } = await registerModelVersion(tx, { model, checkpoint, lineage: input.lineage, createdByJobId: probeJob.id, announceOn: probeJob.id }));
      ({ moved } = await moveModelAlias(tx, model, promote.alias, version, probeJob.id));
    } else {
      await announce(tx, probeJob.id, 'gate.failed', {
        model: model.name,
        alias: promote.alias,
        aliasVersion: current?.version ?? null,
        sourceJobId: checkpoint.jobId,
        checkpointVersion: checkpoint.version,
        rules: decision.rules,
      });
    }
    const [row] = await tx
      .insert(modelGateResults)
      .values({
        modelId: model.id,
        probeJobId: probeJob.id,
        alias: promote.alias,
        checkpointId: checkpoint.id,
        evaluationId: evaluation.id,
        passed: decision.passed,
        moved,
        versionId: version?.id ?? null,
        previousVersionId: current?.id ?? null,
        rules: decision.rules,
        datasetVersionId: probeJob.datasetVersionId,
        protocol,
        // The decision's own time (now() would be the transaction's start, before the lock was ours).
        createdAt: sql`clock_timestamp()`,
      })
      .returning();
    return await resultOf(tx, promote, row!, false);
  });
}

/**
 * Where `alias` points now, and that version's newest evaluation made by another probe on the same
 * dataset version under the same protocol.
 */
async function baselineOf(
  tx: Parameters<Parameters<Db['transaction']>[0]>[0],
  modelId: string,
  alias: string,
  probeJob: PromotionInput['probeJob'],
  protocol: Record<string, unknown>,
): Promise<Baseline> {
  const version = await resolveModelVersion(tx, modelId, { alias });
  if (!version) return { kind: 'absent' };
  if (!probeJob.datasetVersionId) return { kind: 'incomparable', version: version.version };
  const candidates = await tx
    .select({ evaluation: evaluations, spec: jobs.spec })
    .from(evaluations)
    .innerJoin(jobs, eq(jobs.id, evaluations.jobId))
    .where(and(eq(evaluations.checkpointId, version.checkpointId), eq(jobs.datasetVersionId, probeJob.datasetVersionId), ne(evaluations.jobId, probeJob.id)))
    .orderBy(desc(evaluations.createdAt));
  const match = candidates.find((c) => sameProtocol(probeProtocolOf(c.evaluation, c.spec), protocol));
  if (!match) return { kind: 'incomparable', version: version.version };
  return { kind: 'measured', version: version.version, metrics: gateMetricsOf(match.evaluation), evaluationId: match.evaluation.id };
}

async function resultOf(
  tx: Parameters<Parameters<Db['transaction']>[0]>[0],
  promote: PromoteSpec,
  row: GateResultRow,
  replayed: boolean,
): Promise<PromotionResult> {
  const versionNumber = async (id: string | null) => {
    if (!id) return null;
    const [v] = await tx.select({ version: modelVersions.version }).from(modelVersions).where(eq(modelVersions.id, id));
    return v?.version ?? null;
  };
  return {
    model: promote.model,
    alias: row.alias,
    passed: row.passed,
    moved: row.moved,
    version: await versionNumber(row.versionId),
    previousVersion: await versionNumber(row.previousVersionId),
    rules: row.rules as RuleOutcome[],
    replayed,
  };
}

/** Gate decisions of a model, newest first. */
export async function gateResultsOf(db: Db, modelId: string, limit = 100): Promise<GateResultRow[]> {
  return db.select().from(modelGateResults).where(eq(modelGateResults.modelId, modelId)).orderBy(desc(modelGateResults.createdAt)).limit(limit);
}
