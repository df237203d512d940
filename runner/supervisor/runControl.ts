/**
 * The one place a running job is asked to stop early, whatever asks: a user's cancel, the runner's
 * SIGTERM, the job's max runtime. The first request wins; later ones are ignored, and the run's
 * final state is decided from that reason (and from Postgres, which a cancel also marks).
 */
import type { StopReason } from './protocol.js';

export class RunControl {
  private reason: StopReason | undefined;
  private readonly listeners = new Set<(reason: StopReason) => void>();
  private readonly killers = new Set<() => void>();
  private killed = false;

  /** Asks the run to stop; returns false when another reason came first. */
  request(reason: StopReason): boolean {
    if (this.reason) return false;
    this.reason = reason;
    for (const listener of this.listeners) listener(reason);
    return true;
  }

  get stopReason(): StopReason | undefined {
    return this.reason;
  }

  /** Calls `listener` on the first request (at once if one was already made). Returns an unsubscribe. */
  onStop(listener: (reason: StopReason) => void): () => void {
    if (this.reason) {
      listener(this.reason);
      return () => {};
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Ends the run's work at once, without its checkpoint (the grace period ran out). */
  kill(): void {
    this.killed = true;
    for (const killer of this.killers) killer();
  }

  /** Registers what `kill` must end (a child process). Returns an unsubscribe. */
  onKill(killer: () => void): () => void {
    if (this.killed) killer();
    this.killers.add(killer);
    return () => this.killers.delete(killer);
  }
}
