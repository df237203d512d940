/** What a job leaves behind while it runs: events, metrics, logs, webhook deliveries. */
import { and, asc, eq, gt, gte, inArray, lte, type SQL } from 'drizzle-orm';
import type { Db } from './client.js';
import { jobEvents, jobLogs, metrics, webhookDeliveries } from './schema.js';

export type JobEventRow = typeof jobEvents.$inferSelect;
export type JobLogRow = typeof jobLogs.$inferSelect;
export type WebhookDeliveryRow = typeof webhookDeliveries.$inferSelect;

export async function eventsAfter(db: Db, jobId: string, afterId: number, limit: number): Promise<JobEventRow[]> {
  return db
    .select()
    .from(jobEvents)
    .where(and(eq(jobEvents.jobId, jobId), gt(jobEvents.id, afterId)))
    .orderBy(asc(jobEvents.id))
    .limit(limit);
}

export interface MetricQuery {
  names?: string[];
  fromStep?: number;
  toStep?: number;
  limit: number;
}

export async function metricPoints(db: Db, jobId: string, q: MetricQuery) {
  const where: (SQL | undefined)[] = [eq(metrics.jobId, jobId)];
  if (q.names?.length) where.push(inArray(metrics.name, q.names));
  if (q.fromStep !== undefined) where.push(gte(metrics.step, q.fromStep));
  if (q.toStep !== undefined) where.push(lte(metrics.step, q.toStep));
  return db
    .select({ name: metrics.name, step: metrics.step, value: metrics.value, at: metrics.at })
    .from(metrics)
    .where(and(...where))
    .orderBy(asc(metrics.step), asc(metrics.name))
    .limit(q.limit);
}

export async function logsAfter(db: Db, jobId: string, q: { afterId: number; attempt?: number; limit: number }): Promise<JobLogRow[]> {
  const where: (SQL | undefined)[] = [eq(jobLogs.jobId, jobId), gt(jobLogs.id, q.afterId)];
  if (q.attempt !== undefined) where.push(eq(jobLogs.attempt, q.attempt));
  return db.select().from(jobLogs).where(and(...where)).orderBy(asc(jobLogs.id)).limit(q.limit);
}

export async function deliveriesOf(db: Db, jobId: string): Promise<WebhookDeliveryRow[]> {
  return db.select().from(webhookDeliveries).where(eq(webhookDeliveries.jobId, jobId)).orderBy(asc(webhookDeliveries.createdAt));
}
