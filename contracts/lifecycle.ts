/** Job lifecycle: queued → running → succeeded | failed | canceled, with canceling and requeued between. */
export const JOB_STATES = ['queued', 'running', 'canceling', 'requeued', 'succeeded', 'failed', 'canceled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const TERMINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'canceled'];

/** The transitions a job may make; anything else is a bug or a race, and is refused. */
export const ALLOWED_TRANSITIONS: Record<JobState, readonly JobState[]> = {
  queued: ['running', 'canceled', 'failed'],
  requeued: ['running', 'canceled', 'failed', 'queued'],
  running: ['succeeded', 'failed', 'canceling', 'canceled', 'requeued', 'running'],
  canceling: ['canceled', 'failed', 'succeeded'],
  succeeded: [],
  failed: ['queued'],
  canceled: ['queued'],
};

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.includes(state);
}

/** Events a webhook may subscribe to. */
export const JOB_EVENTS = [
  'job.queued',
  'job.running',
  'job.requeued',
  'job.succeeded',
  'job.failed',
  'job.canceled',
  'checkpoint.created',
  'evaluation.completed',
  // Named models (on the job they concern: the promoting probe, or the job whose checkpoint it is).
  'model.version.created',
  'model.alias.moved',
  'gate.failed',
] as const;
export type JobEventName = (typeof JOB_EVENTS)[number];
