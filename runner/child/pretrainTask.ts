/**
 * The child's side of a `pretrain` job: open the dataset, run the trainer (resuming from a
 * checkpoint's files when given), and report. Checkpoint files go to a fresh local directory per
 * checkpoint; the parent uploads it and deletes it. Stopping (cancel, SIGTERM, max runtime) is the
 * trainer's AbortSignal: it checkpoints between two steps and returns.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { config } from '../../common/config.js';
import { Storage, storageConfigFrom } from '../../common/storage.js';
import { openDatasetSplit } from '../datasets/loader.js';
import { train, type StepMetrics as TrainerStepMetrics, type TrainHooks } from '../moco/train.js';
import { planRun, type TrainConfig } from '../moco/config.js';
import { readCheckpointDir, STATE_FILES } from '../supervisor/checkpointStore.js';
import type { PretrainTask } from '../supervisor/protocol.js';
import { selectBackend } from '../moco/backend.js';
import { yieldingDataset } from './yieldingDataset.js';
import { deviceEnv, ipcLogger, type TaskIO, type TaskResult } from './taskSupport.js';

export async function runPretrainTask(task: PretrainTask, io: TaskIO): Promise<TaskResult> {
  const trainConfig = task.trainConfig as TrainConfig;
  const log = ipcLogger(io);
  const storage = new Storage(storageConfigFrom(config()));
  try {
    const { backend, device, versions, threads, kernels, blas, native } = await selectBackend(task.backend);
    const runtime = { backend, device, versions, threads, kernels, blas, native, env: deviceEnv() };
    const data = yieldingDataset(openDatasetSplit(storage, task.manifest, 'train', { cacheDir: task.cacheDir }));
    const resumeFrom = task.resumeDir ? await readCheckpointDir(task.resumeDir) : undefined;
    const initFrom = !resumeFrom && task.initDir ? await readCheckpointDir(task.initDir, STATE_FILES) : undefined;
    const startStep = resumeFrom ? (JSON.parse(new TextDecoder().decode(resumeFrom['state.json'])) as { step: number }).step : 0;
    // The length before a time budget is measured; onPlan brings the fixed one.
    let total = planRun(trainConfig, data.size).totalSteps;
    await io.send({ type: 'ready', runtime, totalSteps: total, startStep });
    io.stop.onRequest(() => io.stop.abort());

    let last: TrainerStepMetrics | undefined;
    const result = await train(trainConfig, { train: data }, {
      signal: io.stop.abortSignal,
      resumeFrom: resumeFrom as TrainHooks['resumeFrom'],
      initFrom: initFrom as TrainHooks['initFrom'],
      async onPlan(p) {
        total = p.totalSteps;
        // A resumed attempt keeps the length the first one fixed: no new event for it.
        if (!p.resumed) await io.send({ type: 'event', kind: 'schedule-fixed', data: { ...p } });
      },
      onMonitor(m) {
        void io.send({ type: 'step', metrics: { step: m.step, knnTop1: m.knnTop1 }, totalSteps: total });
      },
      onStep(m) {
        last = m;
        void io.send({ type: 'step', metrics: { ...m }, totalSteps: total });
      },
      async onCheckpoint(ck) {
        // Nothing new since the checkpoint this attempt started from (a stop right at the start).
        if (ck.step === startStep && ck.reason !== 'final') return;
        const dir = join(task.workDir, `step-${ck.step}-${ck.reason}`);
        await mkdir(dir, { recursive: true });
        for (const [name, bytes] of Object.entries(ck.files)) await writeFile(join(dir, name), bytes);
        const metrics = last && last.step === ck.step ? numericMetrics(last) : undefined;
        await io.send({ type: 'checkpoint', step: ck.step, epoch: ck.epoch, reason: ck.reason, dir, files: Object.keys(ck.files), metrics });
      },
      log: (message, fields) => log.info(fields ? `${message} ${JSON.stringify(fields)}` : message),
    });
    if (result.stopped === 'aborted') return { stopped: true, step: result.steps };
    return {
      stopped: false,
      step: result.steps,
      result: {
        steps: result.steps,
        epochs: result.epochs,
        finalLoss: result.finalLoss,
        imagesPerSec: result.imagesPerSec,
        backend: result.backend,
        parameters: result.parameters,
        // The resolved settings (defaults filled in): what a sweep's table shows per run.
        config: result.config,
      },
    };
  } finally {
    storage.destroy();
  }
}

function numericMetrics(m: TrainerStepMetrics): Record<string, number> {
  return Object.fromEntries(Object.entries(m).filter((e): e is [string, number] => typeof e[1] === 'number' && Number.isFinite(e[1])));
}
