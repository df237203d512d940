/**
 * The linear-probe protocol's settings and their defaults (runner/moco/evaluate.ts runs it). Apart
 * from the evaluation so that the runner's supervisor, which only builds a probe's settings, does not
 * load TensorFlow.js (~0.7 s of start-up per process).
 */
export const PROTOCOL_NAME = 'momentum.linear-probe/2';

export interface EvalProtocol {
  name: typeof PROTOCOL_NAME;
  /** Features are standardized (mean 0, std 1 per dimension) with training-split statistics. */
  standardize: true;
  epochs: number;
  batch: number;
  seed: number;
  /** Base learning rates tried (SGD momentum 0.9, no weight decay, cosine; × batch / 256). */
  lrCandidates: number[];
  /** Share of the training split held out to choose the lr (never the evaluation split). */
  heldOutFraction: number;
  /** Class tokens of the last n blocks, concatenated (DINO's readout uses n = 4). */
  readout: { lastBlocks: number };
  knn: { k: number; temperature: number };
  /** Subjects evaluated besides the model. */
  baselines: boolean;
}

export const DEFAULT_PROTOCOL: Omit<EvalProtocol, 'seed'> = {
  name: PROTOCOL_NAME,
  standardize: true,
  epochs: 10,
  batch: 256,
  lrCandidates: [0.01, 0.1, 1],
  heldOutFraction: 0.1,
  readout: { lastBlocks: 1 },
  knn: { k: 20, temperature: 0.07 },
  baselines: true,
};
