/** The one place a run's `method` picks its training step. */
import type { Method } from '../config.js';
import { mocoStep, type StepFunction } from '../step.js';
import { byolStep } from './byol.js';
import { simclrStep } from './simclr.js';

const STEPS: Record<Method, StepFunction> = { mocov3: mocoStep, simclr: simclrStep, byol: byolStep };

export function stepFor(method: Method): StepFunction {
  return STEPS[method];
}
