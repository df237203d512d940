/**
 * The child's side of a `probe` job: the evaluation protocol (frozen backbone, features once, a
 * linear layer on standardized features with its lr chosen on held-out training images, and a kNN)
 * on the dataset's train split, scored on its val split; with the random-init and raw-pixel
 * baselines under the same protocol unless the spec turned them off.
 */
import { config } from '../../common/config.js';
import { Storage, storageConfigFrom } from '../../common/storage.js';
import { openDatasetSplit } from '../datasets/loader.js';
import { evaluateBackbone, type EvalProtocol } from '../moco/evaluate.js';
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
    const { backend, device, versions, threads, kernels, blas, native } = await selectBackend(task.backend);
    const runtime = { backend, device, versions, threads, kernels, blas, native, env: deviceEnv() };
    const files = await readCheckpointDir(task.backboneDir, BACKBONE_FILES);
    const data = {
      train: yieldingDataset(openDatasetSplit(storage, task.manifest, 'train', { cacheDir: task.cacheDir })),
      val: yieldingDataset(openDatasetSplit(storage, task.manifest, 'val', { cacheDir: task.cacheDir })),
    };
    const protocol = task.probeConfig as EvalProtocol;
    await io.send({ type: 'ready', runtime, totalSteps: protocol.epochs, startStep: 0 });
    io.stop.onRequest(() => io.stop.abort());
    try {
      const report = await evaluateBackbone(files as BackboneFiles, data, protocol, {
        signal: io.stop.abortSignal,
        initSeed: task.initSeed,
        log: (message, fields) => log.info(fields ? `${message} ${JSON.stringify(fields)}` : message),
        onEpoch: (e) => void io.send({ type: 'step', metrics: { step: e.epoch, epoch: e.epoch, loss: e.loss, lr: e.lr }, totalSteps: protocol.epochs }),
      });
      const model = report.subjects.model;
      const result = { top1: model.linear.top1, top5: model.linear.top5, knnTop1: model.knn.top1, evaluation: report, backend: runtime.backend };
      return { stopped: false, result };
    } catch (err) {
      if (io.stop.requested && io.stop.abortSignal.aborted) return { stopped: true };
      throw err;
    }
  } finally {
    storage.destroy();
  }
}
