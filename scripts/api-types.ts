/** `npm run api:types [-- --check]`: writes (or checks) contracts/api.gen.ts from the routes' OpenAPI document. */
import { readFile, writeFile } from 'node:fs/promises';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain, UserFacingError } from '../common/errors.js';
import { apiDocument, generateApiTypes, GENERATED_PATH } from './apiTypes.js';

runMain(async () => {
  const { values } = parseCommandLine(`npm run api:types [-- --check]   (writes ${GENERATED_PATH}; --check: exit 1 when it is stale)`, { check: { type: 'boolean', default: false } });
  const generated = generateApiTypes(await apiDocument());
  if (values.check) {
    const current = await readFile(GENERATED_PATH, 'utf8').catch(() => '');
    if (current !== generated) throw new UserFacingError(`${GENERATED_PATH} is stale: run \`npm run api:types\``);
    console.log(`${GENERATED_PATH} is up to date`);
    return;
  }
  await writeFile(GENERATED_PATH, generated);
  console.log(`wrote ${GENERATED_PATH}`);
});
