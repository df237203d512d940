/**
 * "optim.bacth: unknown field; did you mean batch?": the nearest known field for a misspelt one.
 *
 * zod reports an unknown key with the keys only, not the fields the object knows. Its error map,
 * though, sees the object schema that refused them: `rememberKnownFields` (installed once as zod's
 * customError) records that schema's fields against the issue's `keys` array, which zod passes on
 * unchanged into the final issue, and `suggestField` reads them back when the error is answered.
 */
import { z } from 'zod';

const knownFieldsOf = new WeakMap<readonly string[], string[]>();

/** Optimal string alignment distance: edits, with a swap of two neighbours counting as one. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest of `known` to `key` (case-insensitive), if it is close enough to be a slip; else undefined. */
export function nearest(key: string, known: readonly string[]): string | undefined {
  const budget = Math.max(1, Math.floor(key.length / 3));
  let best: { name: string; distance: number } | undefined;
  for (const name of known) {
    const distance = editDistance(key.toLowerCase(), name.toLowerCase());
    if (distance <= budget && (!best || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

/** The message for one unknown key: "unknown field", plus the nearest known field when there is one. */
export function unknownFieldMessage(keys: readonly string[], key: string): string {
  const known = knownFieldsOf.get(keys);
  const guess = known ? nearest(key, known.filter((k) => !keys.includes(k))) : undefined;
  return guess ? `unknown field; did you mean ${guess}?` : 'unknown field';
}

let installed = false;
/** Installs the error map that records known fields (idempotent; messages are left as zod writes them). */
export function rememberKnownFields(): void {
  if (installed) return;
  installed = true;
  z.config({
    customError: (issue) => {
      if (issue.code === 'unrecognized_keys') {
        const shape = (issue.inst as { _zod?: { def?: { shape?: Record<string, unknown> } } } | undefined)?._zod?.def?.shape;
        if (shape) knownFieldsOf.set(issue.keys, Object.keys(shape));
      }
      return undefined;
    },
  });
}
