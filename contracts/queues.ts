/**
 * Queue names and payloads, shared by the API (which enqueues) and the runners (which consume).
 * Payloads carry ids only: the job's spec and state live in Postgres, the source of truth.
 */
import type { JobType } from './jobSpec.js';

export const QUEUES = {
  /** pretrain and probe: GPU work. */
  train: 'train',
  /** dataset ingestion: CPU work, any runner. */
  ingest: 'ingest',
  /** webhook deliveries, with retries and backoff. */
  webhooks: 'webhooks',
} as const;
export type QueueName = (typeof QUEUES)[keyof typeof QUEUES];

export interface RunJobPayload {
  jobId: string;
  tenantId: string;
  type: JobType;
}

export interface WebhookPayload {
  deliveryId: string;
}

export function queueForJobType(type: JobType): QueueName {
  return type === 'ingest' ? QUEUES.ingest : QUEUES.train;
}

/** BullMQ needs this on every connection it blocks on; without it a worker throws at start. */
export const BULLMQ_CONNECTION_OPTIONS = { maxRetriesPerRequest: null } as const;
