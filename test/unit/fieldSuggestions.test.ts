/** The nearest-field suggestion for unknown keys, and that zod's issues carry what it needs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { editDistance, nearest } from '../../api/fieldSuggestions.js';
import { issuesToDetails } from '../../api/errors.js';
import { jobSpec } from '../../contracts/jobSpec.js';

test('edit distance counts a swap of neighbours as one edit', () => {
  assert.equal(editDistance('bacth', 'batch'), 1);
  assert.equal(editDistance('lr', 'lr'), 0);
  assert.equal(editDistance('epoch', 'epochs'), 1);
  assert.equal(editDistance('abc', 'xyz'), 3);
});

test('nearest: a slip finds its field; something unrelated finds none', () => {
  assert.equal(nearest('bacth', ['lr', 'batch', 'weightDecay']), 'batch');
  assert.equal(nearest('Batch', ['lr', 'batch']), 'batch');
  assert.equal(nearest('learningRate', ['lr', 'batch']), undefined);
  assert.equal(nearest('x', ['lr', 'batch']), undefined);
});

test('an unknown field in a job spec names the nearest known one, at any depth', () => {
  const parsed = jobSpec.safeParse({ type: 'pretrain', dataset: 'fmnist', optim: { bacth: 64 }, epohcs: 2, model: { arch: 'vit_tiny', pathc: 4 }, zzzzzz: 1 });
  assert.ok(!parsed.success);
  const byPath = Object.fromEntries(issuesToDetails(parsed.error.issues).map((d) => [d.path, d.message]));
  assert.equal(byPath['optim.bacth'], 'unknown field; did you mean batch?');
  assert.equal(byPath['epohcs'], 'unknown field; did you mean epochs?');
  assert.equal(byPath['model.pathc'], 'unknown field; did you mean patch?');
  assert.equal(byPath['zzzzzz'], 'unknown field');
});

test('a plain strict object too', () => {
  const parsed = z.strictObject({ name: z.string(), description: z.string().optional() }).safeParse({ name: 'a', descripton: 'b' });
  assert.ok(!parsed.success);
  assert.deepEqual(issuesToDetails(parsed.error.issues), [{ path: 'descripton', message: 'unknown field; did you mean description?', in: 'body' }]);
});
