/**
 * The Standard Webhooks signature written from the specification (standardwebhooks.com), apart from
 * the project's api/webhooks/signing.ts, so that tests of deliveries do not check `sign()` with
 * itself. Pinned by the specification's published example in test/unit/webhookSigning.test.ts.
 */
import { createHmac } from 'node:crypto';

/** `v1,<base64 HMAC-SHA256 over "id.timestamp.body" keyed by the base64-decoded secret>`. */
export function specSignature(secret: string, id: string, timestamp: string, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return 'v1,' + createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
}

/** Whether one of the space-separated signatures of a `webhook-signature` header is the expected one. */
export function carriesSignature(header: string, expected: string): boolean {
  return header.split(' ').includes(expected);
}
