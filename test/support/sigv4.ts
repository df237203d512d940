/**
 * An independent check of AWS Signature Version 4 presigned URLs, written from AWS's description of
 * query-string authentication (not the AWS SDK that signs them), so a test can tell whether a URL
 * the API issued is valid for exactly its bucket, key, expiry and response headers. The local S3
 * server accepts any signature, so without this nothing would notice a URL signed for the wrong thing.
 * Its own correctness is pinned by AWS's published example (test/unit/sigv4.test.ts).
 */
import { createHash, createHmac } from 'node:crypto';

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export type PresignCheck = { ok: true; expiresAt: Date } | { ok: false; reason: string };

const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
const encodeRfc3986 = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());

/** `20130524T000000Z` → a Date. */
export function parseAmzDate(amzDate: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!m) throw new Error(`not an X-Amz-Date: ${amzDate}`);
  return new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`);
}

/**
 * The signature a presigned URL must carry for a request with `method` and these header values (the
 * names listed in X-Amz-SignedHeaders; `host` is taken from the URL), payload unsigned. S3 computes
 * it from the request it receives: a request whose signed headers differ fails to match.
 */
export function expectedSignature(url: URL, credentials: Credentials, method = 'GET', headers: Record<string, string> = {}): string {
  const q = url.searchParams;
  const [, date, region, service] = (q.get('X-Amz-Credential') ?? '').split('/');
  const query = [...q.entries()]
    .filter(([k]) => k !== 'X-Amz-Signature')
    .map(([k, v]) => [encodeRfc3986(k), encodeRfc3986(v)] as const)
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const signed = (q.get('X-Amz-SignedHeaders') ?? 'host').split(';');
  const values: Record<string, string> = { ...Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v.trim()])), host: url.host };
  const canonicalHeaders = signed.map((name) => `${name}:${values[name] ?? ''}\n`).join('');
  const canonicalRequest = [method, url.pathname, query, canonicalHeaders, signed.join(';'), 'UNSIGNED-PAYLOAD'].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', q.get('X-Amz-Date'), scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${credentials.secretAccessKey}`, date!), region!), service!), 'aws4_request');
  return createHmac('sha256', key).update(stringToSign).digest('hex');
}

/** Whether `url` is a valid presigned GET under `credentials` at time `now`, and why not. */
export function checkPresignedGet(url: URL, credentials: Credentials, now = new Date()): PresignCheck {
  const q = url.searchParams;
  if (q.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256') return { ok: false, reason: 'algorithm' };
  if (q.get('X-Amz-SignedHeaders') !== 'host') return { ok: false, reason: 'signed headers' };
  if (!(q.get('X-Amz-Credential') ?? '').startsWith(`${credentials.accessKeyId}/`)) return { ok: false, reason: 'credential' };
  if (q.get('X-Amz-Signature') !== expectedSignature(url, credentials)) return { ok: false, reason: 'signature does not match' };
  const expiresAt = new Date(parseAmzDate(q.get('X-Amz-Date')!).getTime() + Number(q.get('X-Amz-Expires')) * 1000);
  if (now.getTime() > expiresAt.getTime()) return { ok: false, reason: 'expired' };
  return { ok: true, expiresAt };
}

/**
 * Whether S3 would accept a PUT to the presigned `url` carrying these headers (content-length
 * among them when the URL signed it), and why not.
 */
export function checkPresignedPut(url: URL, credentials: Credentials, headers: Record<string, string>, now = new Date()): PresignCheck {
  const q = url.searchParams;
  if (q.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256') return { ok: false, reason: 'algorithm' };
  if (q.get('X-Amz-Signature') !== expectedSignature(url, credentials, 'PUT', headers)) return { ok: false, reason: 'signature does not match' };
  const expiresAt = new Date(parseAmzDate(q.get('X-Amz-Date')!).getTime() + Number(q.get('X-Amz-Expires')) * 1000);
  if (now.getTime() > expiresAt.getTime()) return { ok: false, reason: 'expired' };
  return { ok: true, expiresAt };
}
