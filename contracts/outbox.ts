/**
 * Outbox topics: rows written in the same transaction as the change they announce, moved on by the
 * API's dispatcher (to BullMQ, to webhook deliveries). A message is never lost with its transaction.
 */
import type { JobEventName } from './lifecycle.js';

export const OUTBOX_TOPICS = {
  /** Put a job on its queue (jobId = job.id, so dispatching twice is harmless). */
  enqueue: 'job.enqueue',
  /** Something a webhook may be told about. */
  event: 'job.event',
} as const;

export interface EnqueueMessage {
  jobId: string;
  tenantId: string;
  type: 'pretrain' | 'probe' | 'ingest';
}

export interface JobEventMessage {
  jobId: string;
  event: JobEventName;
  at: string;
  data?: Record<string, unknown>;
}

/** Does a job's webhook want this event? No `events` (or an empty list) means every event. */
export function webhookWants(webhook: { url: string; events?: readonly string[] } | null | undefined, event: JobEventName): boolean {
  if (!webhook?.url) return false;
  return !webhook.events?.length || webhook.events.includes(event);
}

/** Postgres NOTIFY channel on which a cancel request reaches the runner holding the job. */
export const CANCEL_CHANNEL = 'momentum_job_cancel';
