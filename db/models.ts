/**
 * Named models: models, their versions (each a checkpoint of a pretrain job, with the lineage it had
 * when registered), aliases, and the events they announce. Every write that numbers a version or
 * moves an alias runs with the model's row locked (`lockModel`), so concurrent registrations and
 * promotions of one model take turns: versions are numbered without gaps and an alias moves once
 * per decision, from the state the previous decision left.
 */
import { and, asc, desc, eq, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { recordJobEvent, type DbOrTx, type JobRow } from './jobs.js';
import { checkpoints, datasetVersions, jobs, modelAliases, models, modelVersions, outbox } from './schema.js';
import { OUTBOX_TOPICS, type JobEventMessage } from '../contracts/outbox.js';
import type { JobEventName } from '../contracts/lifecycle.js';
import { parseModelRef, parseModelSelector, type ModelVersionSelector } from '../contracts/models.js';
import { sha256Hex, type Storage } from '../common/storage.js';

export type ModelRow = typeof models.$inferSelect;
export type ModelVersionRow = typeof modelVersions.$inferSelect;
type CheckpointRow = typeof checkpoints.$inferSelect;

// --- models ----------------------------------------------------------------------------------------

export async function findModel(db: DbOrTx, tenantId: string, name: string): Promise<ModelRow | undefined> {
  const [row] = await db.select().from(models).where(and(eq(models.tenantId, tenantId), eq(models.name, name)));
  return row;
}

/** Creates the model unless it exists; `created` says which. */
export async function ensureModel(db: DbOrTx, tenantId: string, name: string, description: string | null = null): Promise<{ model: ModelRow; created: boolean }> {
  const [inserted] = await db.insert(models).values({ tenantId, name, description }).onConflictDoNothing().returning();
  if (inserted) return { model: inserted, created: true };
  return { model: (await findModel(db, tenantId, name))!, created: false };
}

/** Takes the model's row lock for the rest of the transaction: registrations and alias moves of one model serialise on it. */
export async function lockModel(tx: DbOrTx, modelId: string): Promise<void> {
  await tx.select({ id: models.id }).from(models).where(eq(models.id, modelId)).for('update');
}

export interface ModelSummary extends ModelRow {
  versions: number;
  aliases: Record<string, number>;
}

export async function listModels(db: Db, tenantId: string): Promise<ModelSummary[]> {
  const rows = await db
    .select({ model: models, versions: sql<number>`(select count(*)::int from ${modelVersions} v where v.model_id = ${models.id})` })
    .from(models)
    .where(eq(models.tenantId, tenantId))
    .orderBy(asc(models.name));
  return Promise.all(rows.map(async (r) => ({ ...r.model, versions: Number(r.versions), aliases: await modelAliasesOf(db, r.model.id) })));
}

// --- versions and aliases --------------------------------------------------------------------------

export async function listModelVersions(db: DbOrTx, modelId: string): Promise<ModelVersionRow[]> {
  return db.select().from(modelVersions).where(eq(modelVersions.modelId, modelId)).orderBy(asc(modelVersions.version));
}

/** Alias → version number, `latest` (the newest version) included. */
export async function modelAliasesOf(db: DbOrTx, modelId: string): Promise<Record<string, number>> {
  const rows = await db
    .select({ alias: modelAliases.alias, version: modelVersions.version })
    .from(modelAliases)
    .innerJoin(modelVersions, eq(modelVersions.id, modelAliases.versionId))
    .where(eq(modelAliases.modelId, modelId))
    .orderBy(asc(modelAliases.alias));
  const out: Record<string, number> = Object.fromEntries(rows.map((r) => [r.alias, r.version]));
  const [newest] = await db.select({ version: modelVersions.version }).from(modelVersions).where(eq(modelVersions.modelId, modelId)).orderBy(desc(modelVersions.version)).limit(1);
  if (newest) out.latest = newest.version;
  return out;
}

export async function resolveModelVersion(db: DbOrTx, modelId: string, selector: ModelVersionSelector): Promise<ModelVersionRow | undefined> {
  if ('version' in selector) {
    const [row] = await db.select().from(modelVersions).where(and(eq(modelVersions.modelId, modelId), eq(modelVersions.version, selector.version)));
    return row;
  }
  if (selector.alias === 'latest') {
    const [row] = await db.select().from(modelVersions).where(eq(modelVersions.modelId, modelId)).orderBy(desc(modelVersions.version)).limit(1);
    return row;
  }
  const [row] = await db
    .select({ v: modelVersions })
    .from(modelAliases)
    .innerJoin(modelVersions, eq(modelVersions.id, modelAliases.versionId))
    .where(and(eq(modelAliases.modelId, modelId), eq(modelAliases.alias, selector.alias)));
  return row?.v;
}

export type ResolvedModelRef =
  | { ok: true; model: ModelRow; version: ModelVersionRow; checkpoint: CheckpointRow }
  | { ok: false; reason: 'model_not_found' | 'version_not_found' };

/** `name@alias` / `name@N` within a tenant → the model, the version and its checkpoint. */
export async function resolveModelRef(db: DbOrTx, tenantId: string, ref: string): Promise<ResolvedModelRef> {
  const parsed = parseModelRef(ref);
  if (!parsed) return { ok: false, reason: 'version_not_found' };
  return resolveModelSelector(db, tenantId, parsed.name, parsed.selector);
}

export async function resolveModelSelector(db: DbOrTx, tenantId: string, name: string, selector: ModelVersionSelector | string): Promise<ResolvedModelRef> {
  const model = await findModel(db, tenantId, name);
  if (!model) return { ok: false, reason: 'model_not_found' };
  const version = await resolveModelVersion(db, model.id, typeof selector === 'string' ? parseModelSelector(selector) : selector);
  if (!version) return { ok: false, reason: 'version_not_found' };
  const [checkpoint] = await db.select().from(checkpoints).where(eq(checkpoints.id, version.checkpointId));
  return { ok: true, model, version, checkpoint: checkpoint! };
}

/** The version of `modelId` that points at this checkpoint, if any. */
export async function versionOfCheckpoint(db: DbOrTx, modelId: string, checkpointId: string): Promise<ModelVersionRow | undefined> {
  const [row] = await db.select().from(modelVersions).where(and(eq(modelVersions.modelId, modelId), eq(modelVersions.checkpointId, checkpointId)));
  return row;
}

// --- lineage as recorded at registration --------------------------------------------------------------

/** What a version records about where it came from; gathered before the registering transaction. */
export interface LineageRecord {
  parentVersionId: string | null;
  parentJobId: string | null;
  parentCheckpointVersion: number | null;
  datasetVersionId: string | null;
  datasetRef: string | null;
  manifestSha256: string | null;
  spec: unknown;
  codeVersion: unknown;
}

/** sha256 of the dataset version's manifest as stored beside its shards; null when it is gone. */
export async function manifestDigest(db: DbOrTx, storage: Storage, datasetVersionId: string | null): Promise<string | null> {
  if (!datasetVersionId) return null;
  const [row] = await db.select({ key: datasetVersions.manifestKey }).from(datasetVersions).where(eq(datasetVersions.id, datasetVersionId));
  if (!row?.key) return null;
  try {
    return sha256Hex(await storage.get(row.key));
  } catch {
    return null;
  }
}

/**
 * The lineage of a pretrain job's weights: its parent is what it was initialised from (`initFrom`,
 * pinned by the API to a version of the parent job's checkpoints), and the parent's model version is
 * the one the spec named, else any version (this model's first) that points at that checkpoint.
 */
export async function lineageOfJob(db: DbOrTx, storage: Storage, job: JobRow, modelId: string | null): Promise<LineageRecord> {
  const spec = job.spec as { dataset?: string; initFrom?: { job?: string; checkpoint?: string; model?: string } };
  const from = spec.initFrom;
  let parentVersionId: string | null = null;
  let parentCheckpointVersion: number | null = null;
  if (from?.job && from.checkpoint) {
    const v = /^v?(\d+)$/.exec(from.checkpoint);
    parentCheckpointVersion = v ? Number(v[1]) : null;
    if (from.model) {
      const named = await resolveModelRef(db, job.tenantId, from.model);
      if (named.ok) parentVersionId = named.version.id;
    }
    if (!parentVersionId && parentCheckpointVersion !== null) {
      const rows = await db
        .select({ id: modelVersions.id, modelId: modelVersions.modelId })
        .from(modelVersions)
        .innerJoin(models, eq(models.id, modelVersions.modelId))
        .where(and(eq(models.tenantId, job.tenantId), eq(modelVersions.jobId, from.job), eq(modelVersions.checkpointVersion, parentCheckpointVersion)))
        .orderBy(asc(modelVersions.createdAt));
      parentVersionId = (rows.find((r) => r.modelId === modelId) ?? rows[0])?.id ?? null;
    }
  }
  const runtime = (job.runtime ?? {}) as { code?: unknown };
  return {
    parentVersionId,
    parentJobId: from?.job ?? null,
    parentCheckpointVersion,
    datasetVersionId: job.datasetVersionId,
    datasetRef: spec.dataset ?? null,
    manifestSha256: await manifestDigest(db, storage, job.datasetVersionId),
    spec: job.spec,
    codeVersion: runtime.code ?? null,
  };
}

// --- writes (caller holds the model lock) ----------------------------------------------------------

export interface NewModelVersion {
  model: ModelRow;
  checkpoint: CheckpointRow;
  lineage: LineageRecord;
  createdByJobId: string | null;
  /** The job whose event stream and webhook hear about it. */
  announceOn: string;
}

/** Registers the checkpoint as the model's next version; an existing version of that checkpoint is returned as is. */
export async function registerModelVersion(tx: DbOrTx, v: NewModelVersion): Promise<{ version: ModelVersionRow; created: boolean }> {
  const existing = await versionOfCheckpoint(tx, v.model.id, v.checkpoint.id);
  if (existing) return { version: existing, created: false };
  const [next] = await tx
    .select({ n: sql<number>`coalesce(max(${modelVersions.version}), 0) + 1` })
    .from(modelVersions)
    .where(eq(modelVersions.modelId, v.model.id));
  const [row] = await tx
    .insert(modelVersions)
    .values({
      modelId: v.model.id,
      version: Number(next!.n),
      checkpointId: v.checkpoint.id,
      jobId: v.checkpoint.jobId,
      checkpointVersion: v.checkpoint.version,
      ...v.lineage,
      spec: v.lineage.spec ?? {},
      createdByJobId: v.createdByJobId,
    })
    .returning();
  await announce(tx, v.announceOn, 'model.version.created', {
    model: v.model.name,
    version: row!.version,
    ref: `${v.model.name}@${row!.version}`,
    versionId: row!.id,
    sourceJobId: row!.jobId,
    checkpointVersion: row!.checkpointVersion,
    datasetRef: row!.datasetRef,
  });
  return { version: row!, created: true };
}

/** Points the alias at `version`; returns the version it pointed at before (null: new alias). No-op when already there. */
export async function moveModelAlias(
  tx: DbOrTx,
  model: ModelRow,
  alias: string,
  version: ModelVersionRow,
  announceOn: string,
): Promise<{ moved: boolean; previous: ModelVersionRow | null }> {
  const previous = (await resolveModelVersion(tx, model.id, { alias })) ?? null;
  if (previous?.id === version.id) return { moved: false, previous };
  await tx
    .insert(modelAliases)
    .values({ modelId: model.id, alias, versionId: version.id })
    .onConflictDoUpdate({ target: [modelAliases.modelId, modelAliases.alias], set: { versionId: version.id, updatedAt: sql`now()` } });
  await announce(tx, announceOn, 'model.alias.moved', {
    model: model.name,
    alias,
    version: version.version,
    previousVersion: previous?.version ?? null,
    ref: `${model.name}@${alias}`,
  });
  return { moved: true, previous };
}

export async function deleteModelAlias(tx: DbOrTx, modelId: string, alias: string): Promise<boolean> {
  const rows = await tx.delete(modelAliases).where(and(eq(modelAliases.modelId, modelId), eq(modelAliases.alias, alias))).returning({ alias: modelAliases.alias });
  return rows.length > 0;
}

/**
 * A model event: a row in the job's event stream (SSE) and an outbox message (webhooks, signed like
 * every other), in the caller's transaction. Model events ride on the job they concern: the probe
 * that promoted, or the job whose checkpoint was registered or aliased.
 */
export async function announce(tx: DbOrTx, jobId: string, event: Extract<JobEventName, `model.${string}` | `gate.${string}`>, data: Record<string, unknown>): Promise<void> {
  await recordJobEvent(tx, jobId, event, { data });
  const message: JobEventMessage = { jobId, event, at: new Date().toISOString(), data };
  await tx.insert(outbox).values({ topic: OUTBOX_TOPICS.event, payload: message });
}

// --- lineage chains ------------------------------------------------------------------------------------

export interface LineageEntry {
  /** How this entry relates to the one before it: the start, or the weights it was initialised from. */
  relation: 'self' | 'initFrom';
  jobId: string;
  checkpointVersion: number | null;
  modelVersion: { model: string; version: number; id: string } | null;
  datasetRef: string | null;
  datasetVersionId: string | null;
  manifestSha256: string | null;
  codeVersion: unknown;
  spec: unknown;
  jobState: string | null;
  createdAt: string | null;
}

const MAX_LINEAGE_DEPTH = 100;

/**
 * The chain from a model version back to the first training: each step follows the weights a job
 * started from. Registered versions answer from what they recorded; an ancestor that was never
 * registered answers from its job row. Stops at a job trained from scratch (or after 100 steps).
 */
export async function lineageChain(db: Db, storage: Storage, tenantId: string, start: ModelVersionRow): Promise<LineageEntry[]> {
  const modelNames = new Map<string, string>();
  const modelName = async (id: string) => {
    if (!modelNames.has(id)) {
      const [m] = await db.select({ name: models.name }).from(models).where(eq(models.id, id));
      modelNames.set(id, m?.name ?? '');
    }
    return modelNames.get(id)!;
  };
  const jobOf = async (id: string) => {
    const [j] = await db.select().from(jobs).where(and(eq(jobs.id, id), eq(jobs.tenantId, tenantId)));
    return j;
  };
  const entries: LineageEntry[] = [];
  const seen = new Set<string>();
  let next: { version: ModelVersionRow } | { jobId: string; checkpointVersion: number | null } | null = { version: start };
  while (next && entries.length < MAX_LINEAGE_DEPTH) {
    const relation = entries.length === 0 ? 'self' : 'initFrom';
    if ('version' in next) {
      const v: ModelVersionRow = next.version;
      if (seen.has(v.id)) break;
      seen.add(v.id);
      const job = await jobOf(v.jobId);
      entries.push({
        relation,
        jobId: v.jobId,
        checkpointVersion: v.checkpointVersion,
        modelVersion: { model: await modelName(v.modelId), version: v.version, id: v.id },
        datasetRef: v.datasetRef,
        datasetVersionId: v.datasetVersionId,
        manifestSha256: v.manifestSha256,
        codeVersion: v.codeVersion,
        spec: v.spec,
        jobState: job?.state ?? null,
        createdAt: job?.createdAt.toISOString() ?? null,
      });
      if (v.parentVersionId) {
        const [parent] = await db.select().from(modelVersions).where(eq(modelVersions.id, v.parentVersionId));
        next = parent ? { version: parent } : v.parentJobId ? { jobId: v.parentJobId, checkpointVersion: v.parentCheckpointVersion } : null;
      } else {
        next = v.parentJobId ? { jobId: v.parentJobId, checkpointVersion: v.parentCheckpointVersion } : null;
      }
      continue;
    }
    // An ancestor reached through a job may still be a registered version: its record is the better answer.
    if (next.checkpointVersion !== null) {
      const [registered] = await db
        .select({ v: modelVersions })
        .from(modelVersions)
        .innerJoin(models, eq(models.id, modelVersions.modelId))
        .where(and(eq(models.tenantId, tenantId), eq(modelVersions.jobId, next.jobId), eq(modelVersions.checkpointVersion, next.checkpointVersion)))
        .orderBy(asc(modelVersions.createdAt))
        .limit(1);
      if (registered && !seen.has(registered.v.id)) {
        next = { version: registered.v };
        continue;
      }
    }
    const job = await jobOf(next.jobId);
    if (!job || seen.has(job.id)) break;
    seen.add(job.id);
    const spec = job.spec as { dataset?: string; initFrom?: { job?: string; checkpoint?: string } };
    entries.push({
      relation,
      jobId: job.id,
      checkpointVersion: next.checkpointVersion,
      modelVersion: null,
      datasetRef: spec.dataset ?? null,
      datasetVersionId: job.datasetVersionId,
      manifestSha256: await manifestDigest(db, storage, job.datasetVersionId),
      codeVersion: (job.runtime as { code?: unknown } | null)?.code ?? null,
      spec: job.spec,
      jobState: job.state,
      createdAt: job.createdAt.toISOString(),
    });
    const from = spec.initFrom;
    const cv = from?.checkpoint ? /^v?(\d+)$/.exec(from.checkpoint) : null;
    next = from?.job ? { jobId: from.job, checkpointVersion: cv ? Number(cv[1]) : null } : null;
  }
  return entries;
}
