/**
 * The parent's handle on one run's child process: starts it (node + tsx, IPC channel), forwards its
 * messages, sends it commands, and turns its end into one outcome. A child that exits without
 * saying how it ended (a crash, an OOM kill, a native abort) is a `crashed` outcome whose reason
 * carries its exit status and the last lines it wrote to stderr.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { childEnvironment } from './childEnv.js';
import { isChildMessage, type ChildMessage, type ChildTask, type CheckpointReady, type StopReason } from './protocol.js';

const CHILD_ENTRY = fileURLToPath(new URL('../child/main.ts', import.meta.url));
/** tsx's loader by absolute URL, so the child starts the same way whatever the parent's cwd or flags. */
const TSX_LOADER = import.meta.resolve('tsx');
/** Bytes of stderr kept to explain a crash. */
const STDERR_TAIL_BYTES = 4096;
/** After its last message, a child has this long to exit before it is killed. */
const EXIT_WAIT_MS = 15_000;

export type ChildOutcome =
  | { kind: 'completed'; result: Record<string, unknown> }
  | { kind: 'stopped'; step?: number }
  | { kind: 'failed'; message: string; retryable: boolean }
  | { kind: 'crashed'; message: string };

export interface ChildEvents {
  onReady?(msg: Extract<ChildMessage, { type: 'ready' }>): void;
  onStep?(msg: Extract<ChildMessage, { type: 'step' }>): void;
  onCheckpoint?(msg: CheckpointReady): void;
  onLog?(msg: Extract<ChildMessage, { type: 'log' }>): void;
  onEvent?(msg: Extract<ChildMessage, { type: 'event' }>): void;
}

export interface StartChildOptions {
  /** The environment to choose from (default: this process's); the child gets only its allowlisted part (childEnv.ts). */
  env?: NodeJS.ProcessEnv;
  /** Mirror the child's stderr to ours (on by default: a crash's stack trace belongs in the runner's log). */
  mirrorStderr?: boolean;
}

export class RunChild {
  readonly outcome: Promise<ChildOutcome>;
  private readonly proc: ChildProcess;
  private stderrTail = '';
  private stopSent: StopReason | undefined;

  private constructor(task: ChildTask, events: ChildEvents, opts: StartChildOptions) {
    this.proc = fork(CHILD_ENTRY, [], {
      execArgv: ['--import', TSX_LOADER],
      env: childEnvironment(task.kind, opts.env ?? process.env),
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      serialization: 'json',
    });
    this.proc.stderr!.on('data', (chunk: Buffer) => {
      if (opts.mirrorStderr !== false) process.stderr.write(chunk);
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES);
    });
    this.outcome = new Promise<ChildOutcome>((resolve) => {
      let final: ChildOutcome | undefined;
      let exitTimer: NodeJS.Timeout | undefined;
      this.proc.on('message', (raw: unknown) => {
        if (!isChildMessage(raw)) return;
        switch (raw.type) {
          case 'ready':
            events.onReady?.(raw);
            break;
          case 'step':
            events.onStep?.(raw);
            break;
          case 'checkpoint':
            events.onCheckpoint?.(raw);
            break;
          case 'log':
            events.onLog?.(raw);
            break;
          case 'event':
            events.onEvent?.(raw);
            break;
          case 'completed':
            final = { kind: 'completed', result: raw.result };
            break;
          case 'stopped':
            final = { kind: 'stopped', step: raw.step };
            break;
          case 'failed':
            final = { kind: 'failed', message: raw.message, retryable: raw.retryable };
            break;
        }
        if (final && !exitTimer) {
          // It said how it ended; it should now exit by itself. Do not wait on a wedged child forever.
          exitTimer = setTimeout(() => this.proc.kill('SIGKILL'), EXIT_WAIT_MS);
          exitTimer.unref();
        }
      });
      this.proc.on('error', (err) => {
        // Could not start (or signal) the process: nothing ran, or it is gone.
        if (!final) final = { kind: 'crashed', message: `training process error: ${err.message}` };
      });
      this.proc.on('exit', (code, signal) => {
        if (exitTimer) clearTimeout(exitTimer);
        // Let the IPC messages that were already read be delivered before judging.
        setImmediate(() => resolve(final ?? { kind: 'crashed', message: this.describeExit(code, signal) }));
      });
    });
    this.proc.send({ type: 'start', task });
  }

  static start(task: ChildTask, events: ChildEvents, opts: StartChildOptions = {}): RunChild {
    return new RunChild(task, events, opts);
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** The reason of the first stop sent, if any. */
  get stopReason(): StopReason | undefined {
    return this.stopSent;
  }

  /** Asks the run to checkpoint now and stop. Only the first request counts. */
  stop(reason: StopReason): void {
    if (this.stopSent) return;
    this.stopSent = reason;
    if (this.proc.connected) this.proc.send({ type: 'stop', reason });
  }

  /** Ends the child at once (grace period over, or the runner is going down hard). */
  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }

  private describeExit(code: number | null, signal: NodeJS.Signals | null): string {
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const lastLines = this.stderrTail
      .trim()
      .split('\n')
      .filter((l) => l.trim())
      .slice(-3)
      .join(' | ');
    return `training process ${how} without a result${lastLines ? `: ${lastLines.slice(-600)}` : ''}`;
  }
}
