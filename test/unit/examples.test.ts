import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { jobSpec } from '../../contracts/jobSpec.js';

// The README points users at these files: they must stay valid job specs.
for (const file of readdirSync('examples').filter((f) => f.endsWith('.json'))) {
  test(`examples/${file} is a valid job spec`, () => {
    const parsed = jobSpec.safeParse(JSON.parse(readFileSync(`examples/${file}`, 'utf8')));
    assert.ok(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues));
  });
}
