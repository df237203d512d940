/**
 * Refusals before work is accepted: a pretrain spec that cannot fit a runner (estimated with
 * contracts/footprint.ts against RUNNER_MEMORY_MB), a tenant with too many jobs waiting or running,
 * a tenant past its storage. Each is a 4xx naming the field or the limit, never an OOM on a runner.
 *
 * The counts are read, then the insert happens: two submissions racing at the limit may both pass
 * (the limit is soft by one request per replica), which is fine for a guard against runaway loops.
 */
import type { AppDeps } from './deps.js';
import { ApiError } from './errors.js';
import { countActiveJobs, storedBytes } from '../db/quotas.js';
import { formatGiB, refuseFootprint } from '../contracts/footprint.js';
import type { PretrainSpec } from '../contracts/jobSpec.js';

/** The smallest image a spec may name (modelSpec.imageSize min): without a declared size, the estimate is a lower bound. */
const SMALLEST_IMAGE = 8;

export function refuseSpecThatCannotFit(deps: AppDeps, spec: PretrainSpec): void {
  const why = refuseFootprint(spec, spec.model.imageSize ?? SMALLEST_IMAGE, deps.config.RUNNER_MEMORY_MB * 1024 * 1024);
  if (!why) return;
  const path = /activations|views/.test(why) ? 'optim.batch' : 'model';
  throw new ApiError(400, 'does_not_fit', `${path}: ${why}`, [{ path, message: why, in: 'body' }]);
}

export async function refuseOverActiveJobLimit(deps: AppDeps, tenantId: string): Promise<void> {
  const limit = deps.config.TENANT_MAX_ACTIVE_JOBS;
  const active = await countActiveJobs(deps.sql, tenantId);
  if (active < limit) return;
  throw new ApiError(429, 'active_job_limit', `this tenant has ${active} jobs queued or running; the limit is ${limit} (TENANT_MAX_ACTIVE_JOBS): wait for some to finish`, [
    { path: 'tenant', message: `${active} active jobs, limit ${limit}`, in: 'body' },
  ]);
}

export async function refuseOverStorageLimit(deps: AppDeps, tenantId: string): Promise<void> {
  const limit = deps.config.TENANT_MAX_STORAGE_GB * 1024 ** 3;
  const used = await storedBytes(deps.sql, tenantId);
  if (used < limit) return;
  throw new ApiError(409, 'storage_limit', `this tenant stores ${formatGiB(used)}; the limit is ${formatGiB(limit)} (TENANT_MAX_STORAGE_GB): delete datasets or jobs first`, [
    { path: 'tenant', message: `${used} bytes stored, limit ${limit}`, in: 'body' },
  ]);
}
