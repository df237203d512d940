/**
 * One device slot per concurrent run of a runner: its own GPU and its share of the cores.
 *
 * Why: libtensorflow (tfjs-node-gpu) maps nearly all memory of every GPU it can see in the first
 * process that starts, and trains on one GPU per process. With RUNNER_CONCURRENCY children that
 * all see every GPU, the second run fails or shares GPU 0. So each child sees exactly one GPU
 * (CUDA_VISIBLE_DEVICES), grows its GPU memory as needed instead of mapping it all
 * (TF_FORCE_GPU_ALLOW_GROWTH), and gets cores / concurrency CPU threads (MOCO_CORES: the native
 * BLAS and the wasm pool size themselves from it), so concurrent runs do not fight over cores.
 *
 * A job with `resources.gpus: 0` sees no GPU at all (CUDA_VISIBLE_DEVICES=-1). Slots beyond the
 * GPUs there are (RUNNER_CONCURRENCY > GPUs) run on the CPU, and say so.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';

export interface DeviceSlot {
  /** 0-based slot number within this runner. */
  index: number;
  /** The GPU (its index on this machine) this slot owns, or null: the runner has fewer GPUs than slots. */
  gpu: number | null;
  /** CPU threads a run in this slot may use. */
  cores: number;
}

/** What a run in a slot is given: its child's environment, and the record kept on the job. */
export function slotEnvironment(slot: DeviceSlot, gpusWanted: number): { env: Record<string, string>; device: { slot: number; gpu: number | null; cudaVisibleDevices: string; cores: number } } {
  const gpu = gpusWanted > 0 ? slot.gpu : null;
  // -1 hides every GPU: libtensorflow then computes on the CPU and maps no GPU memory.
  const cudaVisibleDevices = gpu === null ? '-1' : String(gpu);
  return {
    env: { CUDA_VISIBLE_DEVICES: cudaVisibleDevices, TF_FORCE_GPU_ALLOW_GROWTH: 'true', MOCO_CORES: String(slot.cores) },
    device: { slot: slot.index, gpu, cudaVisibleDevices, cores: slot.cores },
  };
}

/** The GPUs on this machine: `nvidia-smi -L` lines ("GPU 0: …"), 0 when there is no nvidia-smi. */
export function detectGpus(run: () => string = () => execFileSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] })): number {
  try {
    return run()
      .split('\n')
      .filter((l) => /^GPU \d+:/.test(l.trim())).length;
  } catch {
    return 0;
  }
}

/** RUNNER_GPUS: a number, or `auto` (detect). */
export function resolveGpuCount(setting: string, detect: () => number = detectGpus): number {
  return setting === 'auto' ? detect() : Number(setting);
}

export class DeviceSlots {
  private readonly free: number[];
  readonly coresPerSlot: number;

  constructor(
    readonly gpus: number,
    readonly slots: number,
    cores = os.availableParallelism(),
  ) {
    this.free = Array.from({ length: slots }, (_, i) => i);
    this.coresPerSlot = Math.max(1, Math.floor(cores / slots));
  }

  /** The lowest free slot. */
  acquire(): DeviceSlot {
    if (this.free.length === 0) throw new Error(`all ${this.slots} device slots are taken (RUNNER_CONCURRENCY)`);
    this.free.sort((p, q) => p - q);
    const index = this.free.shift()!;
    return { index, gpu: index < this.gpus ? index : null, cores: this.coresPerSlot };
  }

  release(slot: DeviceSlot): void {
    if (!this.free.includes(slot.index)) this.free.push(slot.index);
  }
}
