/**
 * API key material. A key is `mom_<id8>_<secret>`: 32 random bytes of secret, so a plain sha256 is
 * the right hash (no need for a slow password hash: the input cannot be guessed). Only the hash is
 * stored; the first characters (`prefix`) identify a key in lists without revealing it.
 */
import { createHash, randomBytes } from 'node:crypto';

export interface NewKeyMaterial {
  /** Shown to the user once, never stored. */
  secret: string;
  prefix: string;
  hash: string;
}

export function generateApiKey(): NewKeyMaterial {
  const id = randomBytes(6).toString('base64url').slice(0, 8);
  const secret = `mom_${id}_${randomBytes(32).toString('base64url')}`;
  return { secret, prefix: `mom_${id}`, hash: hashApiKey(secret) };
}

export function hashApiKey(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
