/**
 * Refusals before work is accepted: a pretrain spec that cannot fit a runner (estimated with
 * contracts/footprint.ts against RUNNER_MEMORY_MB), a tenant with too many jobs waiting or running,
 * a tenant past its storage. Each is a 4xx naming the field or the limit, never an OOM on a runner.
 *
 * For a job submission both tenant limits are checked inside the insert's own statement
 * (db/jobQueries.ts insertJob): no extra round-trip, and a job is inserted only when the tenant was
 * under both limits in that statement's snapshot. Two submissions racing at the limit may both
 * pass (the limit is soft by the requests in flight), which is fine for a guard against runaway loops.
 *
 * Counting active jobs is skipped while the tenant is clearly below its limit ({@link ActiveJobCounts}).
 */
import type { AppDeps } from './deps.js';
import { ApiError } from './errors.js';
import { storedBytes } from '../db/quotas.js';
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

export function activeJobLimitError(active: number, limit: number): ApiError {
  return new ApiError(429, 'active_job_limit', `this tenant has ${active} jobs queued or running; the limit is ${limit} (TENANT_MAX_ACTIVE_JOBS): wait for some to finish`, [
    { path: 'tenant', message: `${active} active jobs, limit ${limit}`, in: 'body' },
  ]);
}

export function storageLimitError(used: number, limit: number): ApiError {
  return new ApiError(409, 'storage_limit', `this tenant stores ${formatGiB(used)}; the limit is ${formatGiB(limit)} (TENANT_MAX_STORAGE_GB): delete datasets or jobs first`, [
    { path: 'tenant', message: `${used} bytes stored, limit ${limit}`, in: 'body' },
  ]);
}

export const storageLimitBytes = (deps: AppDeps) => deps.config.TENANT_MAX_STORAGE_GB * 1024 ** 3;

/** Outside a job submission (dataset uploads): one query, then the refusal. */
export async function refuseOverStorageLimit(deps: AppDeps, tenantId: string): Promise<void> {
  const limit = storageLimitBytes(deps);
  const used = await storedBytes(deps.sql, tenantId);
  if (used >= limit) throw storageLimitError(used, limit);
}

/**
 * When a submission may skip counting the tenant's active jobs. After a count, this process adds
 * one for each submission it lets through; while that estimate, read less than `ttlMs` ago, stays
 * more than a tenth of the limit below it, counting again cannot change the answer unless other
 * replicas submitted that tenth within the last `ttlMs`. Otherwise (no recent count, or near the
 * limit) the submission counts in its own statement. So a refusal always rests on a fresh count (a
 * place that came free is seen at once), and a tenant far below its limit (every tenant of a
 * benchmark with a huge limit) pays for one count per `ttlMs`, not one per request: when the
 * estimate has expired, one submission counts and the others arriving while its count is out keep
 * using the estimate (they used to all count at once; at 20,000 active jobs a count is 2 ms of
 * Postgres time). A count that never reports back frees the turn after `ttlMs`.
 */
export class ActiveJobCounts {
  private readonly estimates = new Map<string, { active: number; countedAt: number; countingSince?: number }>();

  constructor(private readonly ttlMs: number) {}

  /** True when this submission need not count; it is then counted into the estimate at once. */
  maySkipCount(tenantId: string, limit: number, now = Date.now()): boolean {
    const e = this.estimates.get(tenantId);
    if (!e) return false;
    if (e.active >= limit - Math.max(1, Math.ceil(limit / 10))) return false;
    if (now - e.countedAt >= this.ttlMs) {
      const counting = e.countingSince !== undefined && now - e.countingSince < this.ttlMs;
      if (!counting) {
        e.countingSince = now; // this submission counts; the next ones wait for its answer
        return false;
      }
    }
    e.active++;
    return true;
  }

  /** A submission counted `active` (before itself) and was let through (`admitted`) or refused. */
  counted(tenantId: string, active: number, admitted: boolean, now = Date.now()): void {
    if (this.ttlMs <= 0) return;
    if (this.estimates.size >= 10_000 && !this.estimates.has(tenantId)) this.estimates.clear();
    this.estimates.set(tenantId, { active: active + (admitted ? 1 : 0), countedAt: now });
  }
}

const countsByApp = new WeakMap<AppDeps, ActiveJobCounts>();

/** One estimate table per app (the routes and the sweep driver of a process share it). */
export function activeJobCounts(deps: AppDeps): ActiveJobCounts {
  let counts = countsByApp.get(deps);
  if (!counts) countsByApp.set(deps, (counts = new ActiveJobCounts(deps.quotaCountMs ?? 1000)));
  return counts;
}
