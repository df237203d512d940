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

/** Postgres NOTIFY channel on which a cancel request reaches the runner holding the job. */
export const CANCEL_CHANNEL = 'momentum_job_cancel';
