import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sign, tenantWebhookSecret, verify } from '../../api/webhooks/signing.js';
import { specSignature } from '../support/standardWebhooks.js';

// The example the Standard Webhooks reference libraries test their `sign` against
// (standard-webhooks/standard-webhooks, libraries/javascript/src/webhook.test.ts, "sign function works").
const vector = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};
const headers = { id: vector.id, timestamp: String(vector.timestamp), signature: vector.signature };

test('sign() gives the Standard Webhooks published signature, with and without the whsec_ prefix', () => {
  assert.equal(sign(vector.secret, vector.id, vector.timestamp, vector.body), vector.signature);
  assert.equal(sign(vector.secret.slice('whsec_'.length), vector.id, vector.timestamp, vector.body), vector.signature);
  assert.equal(specSignature(vector.secret, vector.id, String(vector.timestamp), vector.body), vector.signature, 'the tests\' own check agrees');
});

test('verify() accepts the published example within the tolerance and refuses every change', () => {
  const at = vector.timestamp;
  assert.equal(verify(vector.secret, headers, vector.body, at), true);
  assert.equal(verify(vector.secret, headers, vector.body, at + 300), true, 'five minutes later');
  assert.equal(verify(vector.secret, headers, vector.body, at + 301), false, 'too old: a replay');
  assert.equal(verify(vector.secret, headers, vector.body, at - 301), false, 'too far in the future');
  assert.equal(verify(vector.secret, headers, vector.body + ' ', at), false, 'a changed body');
  assert.equal(verify(vector.secret, { ...headers, id: 'msg_other' }, vector.body, at), false, 'another message id');
  assert.equal(verify(vector.secret, { ...headers, timestamp: String(at + 1) }, vector.body, at), false, 'another timestamp');
  assert.equal(verify('whsec_' + Buffer.from('another secret').toString('base64'), headers, vector.body, at), false, 'another secret');
  assert.equal(verify(vector.secret, { ...headers, timestamp: 'hello' }, vector.body, at), false, 'a timestamp that is not a number');
  assert.equal(verify(vector.secret, { ...headers, signature: 'v1,dawfeoifkpqwoekfpqoekf' }, vector.body, at), false, 'a bogus signature');
  assert.equal(verify(vector.secret, { ...headers, signature: vector.signature.slice(0, 8) }, vector.body, at), false, 'a partial signature');
  assert.equal(verify(vector.secret, { ...headers, signature: 'v2' + vector.signature.slice(2) }, vector.body, at), false, 'another version');
  // Several signatures (secret rotation): any valid v1 one is enough.
  const several = ['v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=', 'v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=', vector.signature].join(' ');
  assert.equal(verify(vector.secret, { ...headers, signature: several }, vector.body, at), true);
});

test('each tenant gets its own whsec_ secret of 32 bytes, stable for a signing root', () => {
  const a = tenantWebhookSecret('root-key', 'tenant-a');
  assert.match(a, /^whsec_[A-Za-z0-9+/]{43}=$/);
  assert.equal(Buffer.from(a.slice(6), 'base64').length, 32);
  assert.equal(tenantWebhookSecret('root-key', 'tenant-a'), a);
  assert.notEqual(tenantWebhookSecret('root-key', 'tenant-b'), a);
  assert.notEqual(tenantWebhookSecret('other-root', 'tenant-a'), a);
});
