/** Small pieces every child task shares: the stop request, failures, the IPC sink, a logger. */
import { pino, type Logger } from 'pino';
import type { ChildMessage, StopReason } from '../supervisor/protocol.js';

/** The parent's request to stop early (cancel, SIGTERM, max runtime), as the trainer consumes it. */
export class StopSignal {
  private readonly controller = new AbortController();
  private why: StopReason | undefined;
  private readonly listeners: (() => void)[] = [];

  request(reason: StopReason): void {
    if (this.why) return;
    this.why = reason;
    for (const l of this.listeners) l();
  }

  get requested(): boolean {
    return this.why !== undefined;
  }

  get reason(): StopReason | undefined {
    return this.why;
  }

  /** Aborted once the task has done what it must before stopping (its final checkpoint). */
  get abortSignal(): AbortSignal {
    return this.controller.signal;
  }

  abort(): void {
    if (!this.controller.signal.aborted) this.controller.abort(new Error(`stopped: ${this.why ?? 'requested'}`));
  }

  onRequest(listener: () => void): void {
    if (this.why) listener();
    else this.listeners.push(listener);
  }
}

/** How a task failed; `retryable` false when another attempt would fail the same way. */
export class TaskFailure extends Error {
  override name = 'TaskFailure';
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }

  /**
   * Classifies an error thrown by the trainer or the datasets code. Bad configuration and bad data
   * are the user's to fix (RangeError, TypeError from validation, DatasetIngestError); anything else
   * (a lost service, an out-of-memory) might go away on another attempt.
   */
  static from(err: unknown): TaskFailure {
    if (err instanceof TaskFailure) return err;
    const e = err as { name?: string; message?: string };
    const message = e?.message ?? String(err);
    const permanent = ['RangeError', 'DatasetIngestError', 'NonFiniteLossError', 'ConfigError', 'ValidationError'].includes(e?.name ?? '');
    return new TaskFailure(message, !permanent);
  }
}

export interface TaskIO {
  send(message: ChildMessage): Promise<void>;
  stop: StopSignal;
}

export interface TaskResult {
  /** True when the task ended early because the parent asked it to. */
  stopped: boolean;
  step?: number;
  result?: Record<string, unknown>;
}

/** A logger whose lines go to the parent (and from there to pino and job_logs). */
export function ipcLogger(io: TaskIO) {
  const line = (level: 'debug' | 'info' | 'warn' | 'error') => (message: string) => void io.send({ type: 'log', level, message });
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
}

const PINO_LEVELS: Record<number, 'debug' | 'info' | 'warn' | 'error'> = { 10: 'debug', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'error' };

/**
 * A pino logger for code that wants one (the datasets module): its lines go to the parent like
 * every other log line of the run, with the message and any `err`/`reason` fields kept.
 */
export function ipcPinoLogger(io: TaskIO, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  const destination = {
    write(line: string) {
      try {
        const entry = JSON.parse(line) as { level: number; msg?: string; err?: { message?: string }; reason?: string };
        const extra = entry.reason ?? entry.err?.message;
        const message = `${entry.msg ?? ''}${extra ? `: ${extra}` : ''}`;
        void io.send({ type: 'log', level: PINO_LEVELS[entry.level] ?? 'info', message });
      } catch {
        void io.send({ type: 'log', level: 'info', message: line.trim() });
      }
    },
  };
  return pino({ level: level === 'silent' ? 'silent' : level, base: undefined }, destination);
}

/**
 * The device environment this child was started with (its runner's device slot): recorded with the
 * run, so the job shows which GPU it could see and how many cores it was given.
 */
export function deviceEnv(): Record<string, string | null> {
  const keys = ['CUDA_VISIBLE_DEVICES', 'TF_FORCE_GPU_ALLOW_GROWTH', 'MOCO_CORES'];
  return Object.fromEntries(keys.map((k) => [k, process.env[k] ?? null]));
}
