/**
 * Each decompression or pixel bomb of test/support/bombs.ts ingested in a fresh process: prints the
 * refusal and that process's peak RSS beside a baseline process that only loads the same modules.
 * Usage: npm run bench:bombs
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommandLine } from '../common/commandLine.js';
import { runMain } from '../common/errors.js';
import { BOMBS } from '../test/support/bombs.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
let dir = '';

/** Runs one ingestion (or none, for the baseline) in a child and returns its JSON report. */
function runChild(index: number, path: string): { message: string; peakRssMiB: number } {
  const code = `
    const { convertUpload } = await import(${JSON.stringify(join(repo, 'runner/datasets/convert.ts'))});
    const { BOMBS } = await import(${JSON.stringify(join(repo, 'test/support/bombs.ts'))});
    const { datasetVersionOptions } = await import(${JSON.stringify(join(repo, 'contracts/datasetSpec.ts'))});
    const { createLogger } = await import(${JSON.stringify(join(repo, 'common/logger.ts'))});
    const { mkdtempSync } = await import('node:fs');
    let message = 'baseline (modules loaded, nothing ingested)';
    if (${index} >= 0) {
      const b = BOMBS[${index}];
      try {
        await convertUpload({ path: ${JSON.stringify(path)}, uploadName: b.fileName, options: datasetVersionOptions.parse(b.options), workDir: mkdtempSync(${JSON.stringify(dir)} + '/w-'), log: createLogger('silent'), limits: b.limits });
        message = 'INGESTED (not refused)';
      } catch (e) { message = e.message; }
    }
    console.log(JSON.stringify({ message, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) }));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: repo, encoding: 'utf8' });
  if (r.status !== 0) return { message: `child exited ${r.status}: ${r.stderr.slice(-300)}`, peakRssMiB: -1 };
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
}

runMain(async () => {
  parseCommandLine('npm run bench:bombs   (no options)', {});
  dir = mkdtempSync(join(tmpdir(), 'bench-bombs-'));
  const baseline = runChild(-1, '');
  console.log(`baseline process: peak RSS ${baseline.peakRssMiB} MiB`);
  console.log('| bomb | file size | refusal | peak RSS (MiB) |');
  console.log('|---|---|---|---|');
  for (const [i, bomb] of BOMBS.entries()) {
    const bytes = await bomb.build();
    const path = join(dir, `bomb-${i}`);
    writeFileSync(path, bytes);
    const r = runChild(i, path);
    console.log(`| ${bomb.name} | ${bytes.length} B | ${r.message.replace(/\|/g, '\\|')} | ${r.peakRssMiB} |`);
  }
  rmSync(dir, { recursive: true, force: true });
});
