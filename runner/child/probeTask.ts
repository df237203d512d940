/**
 * The child's side of a `probe` job: the trainer's linear probe (frozen backbone, features once,
 * a linear layer trained with SGD) on the dataset's train split, evaluated on its val split.
 */
import { config } from '../../common/config.js';
import { Storage, storageConfigFrom } from '../../common/storage.js';
import { openDatasetSplit } from '../datasets/index.js';
import { linearProbe, type ProbeConfig } from '../moco/probe.js';
import type { BackboneFiles } from '../moco/checkpoint.js';
import { readCheckpointDir, BACKBONE_FILES } from '../supervisor/checkpointStore.js';
import type { ProbeTask } from '../supervisor/protocol.js';
import { selectBackend } from '../moco/backend.js';
import { yieldingDataset } from './yieldingDataset.js';
import { deviceEnv, ipcLogger, TaskFailure, type TaskIO, type TaskResult } from './taskSupport.js';

export async function runProbeTask(task: ProbeTask, io: TaskIO): Promise<TaskResult> {
  if (!task.manifest.splits.val) {
    throw new TaskFailure('the probe dataset has no val split to measure accuracy on (ingest it with valFraction > 0)', false);
  }
  const log = ipcLogger(io);
  const storage = new Storage(storageConfigFrom(config()));
  try {
    const { backend, device, versions, threads, kernels, blas } = await selectBackend(task.backend);
    const runtime = { backend, device, versions, threads, kernels, blas, env: deviceEnv() };
    const files = await readCheckpointDir(task.backboneDir, BACKBONE_FILES);
    const data = {
      train: yieldingDataset(openDatasetSplit(storage, task.manifest, 'train', { cacheDir: task.cacheDir })),
      val: yieldingDataset(openDatasetSplit(storage, task.manifest, 'val', { cacheDir: task.cacheDir })),
    };
    const probeConfig = task.probeConfig as { epochs: number };
    await io.send({ type: 'ready', runtime, totalSteps: probeConfig.epochs, startStep: 0 });
    io.stop.onRequest(() => io.stop.abort());
    try {
      const result = await linearProbe(files as BackboneFiles, data, task.probeConfig as Partial<ProbeConfig>, {
        signal: io.stop.abortSignal,
        log: (message, fields) => log.info(fields ? `${message} ${JSON.stringify(fields)}` : message),
        onEpoch: (e) => void io.send({ type: 'step', metrics: { step: e.epoch, epoch: e.epoch, loss: e.loss, lr: e.lr }, totalSteps: probeConfig.epochs }),
      });
      return { stopped: false, result: { ...result, backend: runtime.backend } };
    } catch (err) {
      if (io.stop.requested && io.stop.abortSignal.aborted) return { stopped: true };
      throw err;
    }
  } finally {
    storage.destroy();
  }
}
