import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkPresignedGet, expectedSignature } from '../support/sigv4.js';

// AWS's published example of a presigned GET (Amazon S3 API reference, "Authenticating Requests:
// Using Query Parameters (AWS Signature Version 4)"): this pins the checker the signed-URL tests use.
const example = new URL(
  'https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256' +
    '&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request' +
    '&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host' +
    '&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404',
);
const credentials = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };

test('the SigV4 checker reproduces AWS\'s published presigned-URL example', () => {
  assert.equal(expectedSignature(example, credentials), example.searchParams.get('X-Amz-Signature'));
  const check = checkPresignedGet(example, credentials, new Date('2013-05-24T12:00:00Z'));
  assert.deepEqual(check, { ok: true, expiresAt: new Date('2013-05-25T00:00:00Z') });
});

test('the SigV4 checker refuses a changed key, expiry, date or secret, and an expired URL', () => {
  const at = new Date('2013-05-24T12:00:00Z');
  const changed = (f: (u: URL) => void) => {
    const u = new URL(example);
    f(u);
    return u;
  };
  assert.deepEqual(checkPresignedGet(changed((u) => (u.pathname = '/other.txt')), credentials, at), { ok: false, reason: 'signature does not match' });
  assert.deepEqual(checkPresignedGet(changed((u) => u.searchParams.set('X-Amz-Expires', '86401')), credentials, at), { ok: false, reason: 'signature does not match' });
  assert.deepEqual(checkPresignedGet(changed((u) => u.searchParams.set('X-Amz-Date', '20130524T000001Z')), credentials, at), { ok: false, reason: 'signature does not match' });
  assert.deepEqual(checkPresignedGet(example, { ...credentials, secretAccessKey: 'x' }, at), { ok: false, reason: 'signature does not match' });
  assert.deepEqual(checkPresignedGet(example, credentials, new Date('2013-05-25T00:00:01Z')), { ok: false, reason: 'expired' });
});
