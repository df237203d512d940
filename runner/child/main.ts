/**
 * The child process of one run (started by runner/supervisor/childProcess.ts). It receives its task
 * over IPC, does the heavy work (training, a linear probe, an ingestion), and reports back: step
 * metrics, checkpoints (files on local disk, the path over IPC), log lines, and how it ended. It
 * exits when its parent goes away, so a killed runner never leaves a trainer burning a GPU.
 */
import type { ChildMessage, ChildTask, ParentMessage, StopReason } from '../supervisor/protocol.js';
import { StopSignal, TaskFailure } from './taskSupport.js';

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected || !process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

const stop = new StopSignal();

process.on('disconnect', () => {
  // The runner is gone (killed, crashed): nobody will upload what we make.
  process.exit(0);
});

process.on('message', (raw: ParentMessage) => {
  if (raw?.type === 'start') void run(raw.task);
  else if (raw?.type === 'stop') stop.request(raw.reason as StopReason);
});

async function run(task: ChildTask): Promise<void> {
  let final: ChildMessage;
  try {
    const io = { send, stop };
    // Each kind's code is loaded when it is asked for: an ingestion does not load TensorFlow.js, a
    // training run not the image and archive libraries (start-up is paid by every job).
    const result =
      task.kind === 'pretrain'
        ? await (await import('./pretrainTask.js')).runPretrainTask(task, io)
        : task.kind === 'probe'
          ? await (await import('./probeTask.js')).runProbeTask(task, io)
          : await (await import('./ingestTask.js')).runIngestTask(task, io);
    final = result.stopped ? { type: 'stopped', step: result.step } : { type: 'completed', result: result.result ?? {} };
  } catch (err) {
    const failure = err instanceof TaskFailure ? err : TaskFailure.from(err);
    final = { type: 'failed', message: failure.message, retryable: failure.retryable };
    if (!(err instanceof TaskFailure)) process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
  }
  await send(final);
  process.exit(0);
}
