/**
 * The version of the code a runner trains with, recorded in every job's runtime and from there in
 * every model version's lineage: the package version, and the git commit when it is known
 * (`MOMENTUM_GIT_COMMIT`, set by an image build, else `git rev-parse HEAD` of a checkout).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface CodeVersion {
  package: string;
  commit: string | null;
}

const REPO = fileURLToPath(new URL('..', import.meta.url));
let cached: CodeVersion | undefined;

export function codeVersion(): CodeVersion {
  if (cached) return cached;
  let version = 'unknown';
  try {
    version = String(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version ?? 'unknown');
  } catch {
    // an image without package.json: the commit alone identifies the code
  }
  let commit = process.env.MOMENTUM_GIT_COMMIT?.trim() || null;
  if (!commit) {
    try {
      const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).toString().trim();
      commit = /^[0-9a-f]{40}$/.test(head) ? head : null;
    } catch {
      // not a checkout, or no git: leave it unknown
    }
  }
  cached = { package: version, commit };
  return cached;
}
