/**
 * The messages between a runner (the supervisor, parent process) and the child process that does
 * the heavy work of one run (training, a linear probe, a dataset ingestion). Training runs in a
 * child so that the parent's event loop stays free: BullMQ renews the job's lock from it, the
 * cancel listener and the metric writer run there, and a crash of the trainer (OOM, a native abort)
 * takes down only the child. Bulky data never goes through IPC: checkpoint files are written to a
 * local directory and only its path is sent.
 */
import type { DatasetManifest } from '../../contracts/datasetSpec.js';

/** What the child runs. Everything it needs is here or in the environment (service URLs). */
export type ChildTask = PretrainTask | ProbeTask | IngestTask;

export interface PretrainTask {
  kind: 'pretrain';
  jobId: string;
  attempt: number;
  /** The trainer's config (runner/trainConfig.ts maps the user's spec to it). */
  trainConfig: unknown;
  backend: 'auto' | 'tensorflow' | 'wasm' | 'cpu';
  manifest: DatasetManifest;
  /** Directory holding the files of the checkpoint to resume from (full training state). */
  resumeDir?: string;
  /** Retraining: another job's checkpoint (state files) whose weights start this run. */
  initDir?: string;
  /** Where the child writes checkpoint files, one sub-directory per checkpoint. */
  workDir: string;
  cacheDir: string;
}

export interface ProbeTask {
  kind: 'probe';
  jobId: string;
  attempt: number;
  /** Directory holding backbone.safetensors and backbone.json of the probed checkpoint. */
  backboneDir: string;
  manifest: DatasetManifest;
  probeConfig: unknown;
  /** Seed of the pretrain run: the random-init baseline is its initial backbone. */
  initSeed?: number;
  backend: 'auto' | 'tensorflow' | 'wasm' | 'cpu';
  cacheDir: string;
}

export interface IngestTask {
  kind: 'ingest';
  jobId: string;
  attempt: number;
  datasetVersionId: string;
}

/** Why the parent asks a run to stop early; every reason checkpoints first (when training). */
export type StopReason = 'cancel' | 'preempt' | 'max-runtime';

export type ParentMessage =
  | { type: 'start'; task: ChildTask }
  /** Checkpoint now (pretrain) and end the run with `stopped`. */
  | { type: 'stop'; reason: StopReason };

/** Where the run executes, as the trainer's backend selection reports it. */
export interface RuntimeInfo {
  backend: string;
  device?: string;
  versions?: Record<string, string>;
  /** Threads the backend computes with. */
  threads?: number;
  /** Our kernels in use ('blas+native+bmm+gelu', 'bmm+gelu', 'stock', 'off (why)'). */
  kernels?: string;
  /** The native BLAS the products run on ({library, config, threads}), or why none. */
  blas?: unknown;
  /** The native elementwise kernels' library ({library, compiler, built}), or why they did not run. */
  native?: unknown;
  /** The device environment the child process saw (CUDA_VISIBLE_DEVICES, TF_FORCE_GPU_ALLOW_GROWTH, MOCO_CORES). */
  env?: Record<string, string | null>;
}

export interface StepMetrics {
  step: number;
  epoch?: number;
  loss?: number;
  imagesPerSec?: number;
  /** Any other numbers the trainer reports (lr, momentum, grad norms...); nested objects allowed. */
  [name: string]: unknown;
}

export interface CheckpointReady {
  type: 'checkpoint';
  step: number;
  epoch?: number;
  /** `periodic`, `stop`, `final`, or whatever the trainer called it. */
  reason: string;
  /** Absolute directory holding the checkpoint's files (CHECKPOINT_FILES' names). */
  dir: string;
  files: string[];
  /** The run's metrics at this step, kept with the version. */
  metrics?: Record<string, number>;
}

export type ChildMessage =
  | { type: 'ready'; runtime: RuntimeInfo; totalSteps?: number; startStep?: number }
  | { type: 'step'; metrics: StepMetrics; totalSteps?: number }
  | CheckpointReady
  | { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; message: string }
  /** Something to keep with the job as an event row (e.g. `schedule-fixed`: the run's length). */
  | { type: 'event'; kind: string; data: Record<string, unknown> }
  /** The run did all its work. */
  | { type: 'completed'; result: Record<string, unknown> }
  /** The run ended early because the parent sent `stop` (its last checkpoint, if any, was sent before). */
  | { type: 'stopped'; step?: number }
  /** The run cannot go on. `retryable` false means another attempt would fail the same way (bad spec, NaN). */
  | { type: 'failed'; message: string; retryable: boolean };

export function isChildMessage(value: unknown): value is ChildMessage {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}
