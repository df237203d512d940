/**
 * A sweep: what a user submits in `POST /v1/sweeps`. A base pretrain spec, a grid over any of its
 * fields (dotted paths such as `optim.lr`, `model.posEmbed`, `method`), optional hand-picked
 * variants and seeds; the settings are grid × variants × seeds. Each setting becomes one pretrain
 * job, then one probe job on its `latest` checkpoint.
 */
import { z } from 'zod';
import { pretrainSpec, probeSpec } from './jobSpec.js';

/** How many settings (pretrain jobs) one sweep may hold. */
export const MAX_SWEEP_RUNS = 64;

export const SPEC_PATH = /^[a-zA-Z][a-zA-Z0-9]*(\.[a-zA-Z][a-zA-Z0-9]*){0,4}$/;
const specPath = z.string().max(100).regex(SPEC_PATH, 'must be a dotted path into the pretrain spec, such as "optim.lr"');

export const sweepSpec = z.strictObject({
  /** The pretrain spec every setting starts from (`type` may be left out). */
  base: pretrainSpec.extend({ type: z.literal('pretrain').default('pretrain') }),
  /** Field path → the values to try; every combination is a setting. */
  grid: z.record(specPath, z.array(z.unknown()).min(1).max(MAX_SWEEP_RUNS)).default({}),
  /** Settings picked by hand (path → value each), crossed with the grid: for ablations that are not a grid. */
  variants: z.array(z.record(specPath, z.unknown())).min(1).max(MAX_SWEEP_RUNS).optional(),
  /** Repeat every setting with each seed (sets `seed`). */
  seeds: z.array(z.number().int().min(0).max(2 ** 31 - 1)).min(1).max(16).optional(),
  /** The probe each finished pretrain job gets (probe job fields; `source` is the run's `latest`). */
  probe: probeSpec.omit({ type: true, source: true, labels: true, webhook: true }).prefault({}),
  budget: z
    .strictObject({
      /** Jobs (pretrain and probe) of this sweep queued or running at once. */
      maxConcurrent: z.number().int().min(1).max(64).default(2),
      /** Total running time of the sweep's jobs; past it the sweep stops, canceling what runs. */
      totalMinutes: z.number().positive().max(100_000).optional(),
    })
    .prefault({}),
});

export type SweepSpec = z.infer<typeof sweepSpec>;
export type SweepRequest = z.input<typeof sweepSpec>;
