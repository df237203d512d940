/**
 * `npm run create-key -- --tenant acme [--name ci] [--scopes admin]`: creates the tenant when absent
 * and an API key for it, and prints the key (shown this once; only its hash is stored). This is how
 * the first admin key comes to exist; later keys can be made over the API (POST /v1/keys).
 */
import { config } from '../common/config.js';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain, UserFacingError } from '../common/errors.js';
import { checkDependencies } from '../common/startup.js';
import { connectDatabase } from '../db/client.js';
import { ensureTenant, insertApiKey } from '../db/apiKeys.js';
import { runMigrations } from '../db/migrate.js';
import { generateApiKey } from '../api/auth/keys.js';
import { SCOPES } from '../api/auth/scopes.js';

const USAGE = `npm run create-key -- [--tenant default] [--name admin] [--scopes ${SCOPES.join(',')}] [--json]`;

runMain(async () => {
  const { values } = parseCommandLine(USAGE, {
    tenant: { type: 'string', default: 'default' },
    name: { type: 'string', default: 'admin' },
    scopes: { type: 'string', default: 'admin' },
    json: { type: 'boolean', default: false },
  });
  const scopes = values.scopes!.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = scopes.find((s) => !(SCOPES as readonly string[]).includes(s));
  if (bad || !scopes.length) throw new UserFacingError(`--scopes must be a comma-separated subset of ${SCOPES.join(',')}; got ${JSON.stringify(values.scopes)}`);
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(values.tenant!)) throw new UserFacingError('--tenant: letters, digits, ".", "_", "-", at most 100');

  const c = config();
  await runMigrations(c.DATABASE_URL);
  await checkDependencies(c);
  const database = connectDatabase(c.DATABASE_URL, { max: 1 });
  try {
    const tenant = await ensureTenant(database.db, values.tenant!);
    const material = generateApiKey();
    const key = await insertApiKey(database.db, { tenantId: tenant.id, name: values.name!, prefix: material.prefix, secretHash: material.hash, scopes });
    if (values.json) {
      console.log(JSON.stringify({ key: material.secret, id: key.id, tenant: tenant.name, tenantId: tenant.id, scopes }));
    } else {
      console.error(`created key ${key.prefix} "${key.name}" for tenant ${tenant.name} with scopes ${scopes.join(',')}; it is shown once:`);
      console.log(material.secret);
    }
  } finally {
    await database.close();
  }
});
