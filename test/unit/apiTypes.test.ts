/**
 * contracts/api.gen.ts is what the routes produce today (the CLI's client is typed by it, so a stale
 * file would hide a route change that breaks the CLI); and the converter writes what the schema says.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { apiDocument, generateApiTypes, GENERATED_PATH, schemaType } from '../../scripts/apiTypes.js';

const REPO = join(import.meta.dirname, '..', '..');

test(`${GENERATED_PATH} is up to date with the routes (else: npm run api:types)`, async () => {
  const expected = generateApiTypes(await apiDocument());
  const current = await readFile(join(REPO, GENERATED_PATH), 'utf8');
  assert.ok(current === expected, `${GENERATED_PATH} is stale: run \`npm run api:types\``);
  assert.match(current, /submitJob: \{\n {4}method: "POST";\n {4}path: "\/v1\/jobs";/);
});

test('JSON Schema to TypeScript: objects, optional fields, nullables, enums, refs, records, unions', () => {
  assert.equal(
    schemaType({
      type: 'object',
      properties: {
        id: { type: 'string' },
        n: { type: ['integer', 'null'] },
        state: { enum: ['a', 'b'] },
        job: { $ref: '#/components/schemas/Job' },
        tags: { type: 'array', items: { type: 'string' } },
        labels: { type: 'object', additionalProperties: { type: 'string' } },
        any: {},
        either: { anyOf: [{ type: 'string' }, { type: 'number' }] },
      },
      required: ['id', 'state'],
    }),
    '{\n  id: string;\n  n?: number | null;\n  state: "a" | "b";\n  job?: Schemas["Job"];\n  tags?: string[];\n  labels?: {\n    [key: string]: string;\n  };\n  any?: unknown;\n  either?: string | number;\n}',
  );
});
