/**
 * Named models: a tenant-scoped name (`fmnist-backbone`) whose numbered versions each point to one
 * checkpoint version of a pretrain job, with aliases (`production`, `staging`, your own) that move
 * across jobs. A model reference is always `name@version` or `name@alias`: the `@` is what tells it
 * apart from the forms that name a checkpoint of a job (`v3`, `3`, `latest`, `best`, a job alias),
 * which never contain one, and from a job id (a UUID). `name@latest` is the newest version.
 */
import { z } from 'zod';

/** Like a dataset name: lowercase letter or digit first, then letters, digits, `.`, `_`, `-`. */
export const MODEL_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const modelName = z.string().regex(MODEL_NAME_PATTERN, 'lowercase letters, digits, ".", "_" or "-", at most 63, starting with a letter or digit');

/**
 * A user alias of a model: words of lowercase letters, digits and `_`, each starting with a letter,
 * joined by `-` (`production`, `staging-eu`), at most 32; not `latest`. Every part starting with a
 * letter is what keeps a gate rule unambiguous: in `linear>=production-1` the `-1` is the tolerance.
 */
export const MODEL_ALIAS_SOURCE = '[a-z][a-z0-9_]*(?:-[a-z][a-z0-9_]*)*';
export const MODEL_ALIAS_PATTERN = new RegExp(`^(?=.{1,32}$)${MODEL_ALIAS_SOURCE}$`);
export const MODEL_ALIAS_MESSAGE = 'lowercase words of letters, digits and _ (each starting with a letter) joined by -, at most 32';
export const RESERVED_MODEL_ALIASES = ['latest'] as const;
export const modelAlias = z
  .string()
  .regex(MODEL_ALIAS_PATTERN, MODEL_ALIAS_MESSAGE)
  .refine((a) => !(RESERVED_MODEL_ALIASES as readonly string[]).includes(a), '`latest` is maintained by Momentum (the newest version)');

export const MODEL_REF_PATTERN = new RegExp(`^([a-z0-9][a-z0-9._-]{0,62})@(v?\\d{1,6}|(?=.{1,32}$)${MODEL_ALIAS_SOURCE})$`);
export const MODEL_REF_MESSAGE = 'must be "model@N" (a version) or "model@alias" (e.g. "fmnist-backbone@production")';
export const modelRef = z.string().regex(MODEL_REF_PATTERN, MODEL_REF_MESSAGE);

/** A version of a model (`3`, `v3`) or one of its aliases (`production`, `latest`). */
export type ModelVersionSelector = { version: number } | { alias: string };

export function parseModelSelector(ref: string): ModelVersionSelector {
  const m = /^v?(\d{1,6})$/.exec(ref);
  return m ? { version: Number(m[1]) } : { alias: ref };
}

/** `fmnist-backbone@production` → name and selector; undefined when it is not a model reference. */
export function parseModelRef(ref: string): { name: string; selector: ModelVersionSelector } | undefined {
  const m = MODEL_REF_PATTERN.exec(ref);
  return m ? { name: m[1]!, selector: parseModelSelector(m[2]!) } : undefined;
}

export const isModelRef = (ref: string): boolean => MODEL_REF_PATTERN.test(ref);
