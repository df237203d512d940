/** How a child's end and the reason it was asked to stop become an attempt's outcome. */
import type { ChildOutcome } from './childProcess.js';
import type { RunOutcome } from './context.js';
import type { StopReason } from './protocol.js';

export function describeStop(checkpoint: { version: number; step: number } | null): string {
  return checkpoint ? `last checkpoint v${checkpoint.version} at step ${checkpoint.step}` : 'no checkpoint';
}

/**
 * Everything but a completed run. A run that was asked to stop ends as the request said, even when
 * the child died on the way out (the grace period ran out, say): a preempted job is continued
 * elsewhere from its newest checkpoint either way, a canceled one stays canceled.
 */
export function outcomeOfChild(outcome: ChildOutcome, stopReason: StopReason | undefined, detail: string): RunOutcome {
  if (outcome.kind === 'completed') return { kind: 'succeeded', result: outcome.result };
  if (outcome.kind === 'failed') return { kind: 'failed', reason: outcome.message, retryable: outcome.retryable };
  const crashed = outcome.kind === 'crashed' ? ` (${outcome.message})` : '';
  switch (stopReason) {
    case 'cancel':
      return { kind: 'canceled', reason: `canceled on request; ${detail}${crashed}` };
    case 'preempt':
      return { kind: 'preempted', reason: `runner shutting down; ${detail}${crashed}` };
    case 'max-runtime':
      return { kind: 'failed', reason: `exceeded the job's maxRuntimeSeconds; ${detail}${crashed}`, retryable: false };
    default:
      return outcome.kind === 'crashed'
        ? { kind: 'failed', reason: outcome.message, retryable: true }
        : { kind: 'failed', reason: 'the run stopped without being asked to', retryable: true };
  }
}
