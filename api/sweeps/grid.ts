/**
 * From a sweep request to its settings: grid × variants × seeds, each applied to the base spec by
 * dotted path and validated as a whole pretrain spec, so a bad value is a 400 naming where it came
 * from (`grid.optim.lr[1]`, `variants[2].model.posEmbed`), never a job that fails later.
 */
import { MAX_SWEEP_RUNS, type SweepSpec } from '../../contracts/sweepSpec.js';
import { pretrainSpec, type PretrainSpec } from '../../contracts/jobSpec.js';
import { ApiError, issuesToDetails } from '../errors.js';

export interface Setting {
  index: number;
  /** Path → value, for every field this setting sets (grid, variant, seed). */
  values: Record<string, unknown>;
  /** Where each value came from, for error messages. */
  origins: Record<string, string>;
}

export interface ExpandedRun {
  index: number;
  setting: Record<string, unknown>;
  spec: PretrainSpec;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A copy of `obj` with `value` at the dotted `path` (intermediate objects created as needed). */
export function setPath(obj: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> {
  const [head, ...rest] = path.split('.');
  const out = { ...obj };
  if (!rest.length) out[head] = value;
  else {
    const inner = out[head] ?? {};
    if (!isPlainObject(inner)) throw new RangeError(`${head} is not an object`);
    out[head] = setPath(inner, rest.join('.'), value);
  }
  return out;
}

export function getPath(obj: unknown, path: string): unknown {
  let at: unknown = obj;
  for (const key of path.split('.')) {
    if (!isPlainObject(at)) return undefined;
    at = at[key];
  }
  return at;
}

const bad = (path: string, message: string) => new ApiError(400, 'validation_failed', `${path}: ${message}`, [{ path, message, in: 'body' }]);

/** Every setting of the sweep, in order: grid axes (in the order given) vary slowest, seeds fastest. */
export function settingsOf(spec: SweepSpec): Setting[] {
  for (const path of [...Object.keys(spec.grid), ...(spec.variants ?? []).flatMap((v) => Object.keys(v))]) {
    if (path === 'type') throw bad('grid', '"type" cannot vary: a sweep runs pretrain jobs');
  }
  if (spec.seeds && (Object.hasOwn(spec.grid, 'seed') || spec.variants?.some((v) => Object.hasOwn(v, 'seed')))) {
    throw bad('seeds', 'give seeds either in "seeds" or as a grid/variant field "seed", not both');
  }
  let settings: Omit<Setting, 'index'>[] = [{ values: {}, origins: {} }];
  for (const [path, values] of Object.entries(spec.grid)) {
    settings = settings.flatMap((s) => values.map((v, i) => ({ values: { ...s.values, [path]: v }, origins: { ...s.origins, [path]: `grid.${path}[${i}]` } })));
  }
  if (spec.variants) {
    const variants = spec.variants;
    settings = settings.flatMap((s) =>
      variants.map((variant, i) => {
        const values = { ...s.values };
        const origins = { ...s.origins };
        for (const [path, v] of Object.entries(variant)) {
          values[path] = v;
          origins[path] = `variants[${i}].${path}`;
        }
        return { values, origins };
      }),
    );
  }
  if (spec.seeds) {
    const seeds = spec.seeds;
    settings = settings.flatMap((s) => seeds.map((seed, i) => ({ values: { ...s.values, seed }, origins: { ...s.origins, seed: `seeds[${i}]` } })));
  }
  if (settings.length > MAX_SWEEP_RUNS) {
    throw bad('grid', `the sweep has ${settings.length} settings; at most ${MAX_SWEEP_RUNS}`);
  }
  return settings.map((s, index) => ({ index, ...s }));
}

/** Applies each setting to the base spec and validates the result; labels each with the sweep's id. */
export function expandSweep(spec: SweepSpec, sweepId: string): ExpandedRun[] {
  return settingsOf(spec).map((s) => {
    let raw: Record<string, unknown> = { ...spec.base };
    for (const [path, value] of Object.entries(s.values)) {
      try {
        raw = setPath(raw, path, value);
      } catch (err) {
        throw bad(s.origins[path]!, (err as Error).message);
      }
    }
    raw.labels = { ...(spec.base.labels ?? {}), sweep: sweepId, sweepRun: String(s.index) };
    const parsed = pretrainSpec.safeParse(raw);
    if (!parsed.success) {
      // Name the grid/variant field the value came from when the problem is in it, else the base.
      const details = issuesToDetails(parsed.error.issues).map((d) => {
        const from = Object.keys(s.values).find((p) => d.path === p || d.path.startsWith(p + '.'));
        return { ...d, path: from ? s.origins[from]! + d.path.slice(from.length) : `base.${d.path}` };
      });
      throw new ApiError(400, 'validation_failed', `${details[0]!.path}: ${details[0]!.message}`, details);
    }
    return { index: s.index, setting: s.values, spec: parsed.data };
  });
}
