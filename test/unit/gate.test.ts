/** The gate's grammar and decision (contracts/gate.ts), and model references (contracts/models.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideGate, gateMetricsOf, parseGateRule, probeProtocolOf, sameProtocol, type GateRule } from '../../contracts/gate.js';
import { parseModelRef } from '../../contracts/models.js';
import { CHECKPOINT_REF_PATTERN } from '../../contracts/jobSpec.js';

const rule = (text: string): GateRule => {
  const r = parseGateRule(text);
  assert.ok(r, `${text} parses`);
  return r;
};

test('gate rules: alias with a tolerance or a margin, an absolute floor; anything else is refused', () => {
  assert.deepEqual(rule('linear>=production-0.5'), { text: 'linear>=production-0.5', metric: 'linear', op: '>=', alias: 'production', points: -0.5 });
  assert.deepEqual(rule(' knn > staging + 1 '), { text: 'knn > staging + 1', metric: 'knn', op: '>', alias: 'staging', points: 1 });
  assert.deepEqual(rule('linear>=80'), { text: 'linear>=80', metric: 'linear', op: '>=', alias: null, points: 80 });
  assert.equal(rule('linear>=my-prod').alias, 'my-prod', 'aliases may contain dashes');
  // A dash before a number is the tolerance, never part of the alias (alias parts start with letters).
  assert.deepEqual([rule('linear>=production-1').alias, rule('linear>=production-1').points], ['production', -1]);
  assert.deepEqual([rule('knn>=staging-eu-101').alias, rule('knn>=staging-eu-101').points], ['staging-eu', -101]);
  for (const bad of ['top1>=production', 'linear=>production', 'linear>=production-0.5.1', 'linear>=101', 'linear>=Production', 'linear<=production', '']) {
    assert.equal(parseGateRule(bad), undefined, bad);
  }
});

test('the decision: tolerance, strict margin, absolute floor, first promotion, no comparable number', () => {
  const measured = (linear: number, knn?: number) => ({ kind: 'measured' as const, version: 3, evaluationId: 'e', metrics: { linear, ...(knn === undefined ? {} : { knn }) } });
  const tolerance = [rule('linear>=production-0.5')];
  assert.equal(decideGate(tolerance, { linear: 0.796 }, { production: measured(0.8) }).passed, true, 'within half a point');
  const worse = decideGate(tolerance, { linear: 0.79 }, { production: measured(0.8) });
  assert.equal(worse.passed, false);
  assert.deepEqual([worse.rules[0]!.candidate, worse.rules[0]!.baseline, worse.rules[0]!.baselineVersion], [0.79, 0.8, 3]);
  assert.ok(Math.abs(worse.rules[0]!.threshold! - 0.795) < 1e-12);
  assert.equal(decideGate(tolerance, { linear: 0.795 }, { production: measured(0.8) }).passed, true, 'the threshold itself passes >=');
  assert.equal(decideGate([rule('linear>production')], { linear: 0.8 }, { production: measured(0.8) }).passed, false, 'equal is not > ');
  assert.equal(decideGate([rule('linear>=80')], { linear: 0.81 }, {}).passed, true);
  assert.equal(decideGate([rule('linear>=80')], { linear: 0.79 }, {}).passed, false);
  const first = decideGate(tolerance, { linear: 0.1 }, { production: { kind: 'absent' } });
  assert.equal(first.passed, true, 'no production yet');
  const incomparable = decideGate(tolerance, { linear: 0.99 }, { production: { kind: 'incomparable', version: 2 } });
  assert.equal(incomparable.passed, false);
  assert.match(incomparable.rules[0]!.reason, /probe it first/);
  const knn = decideGate([rule('linear>=production'), rule('knn>=production')], { linear: 0.9 }, { production: measured(0.8, 0.7) });
  assert.deepEqual(knn.rules.map((r) => r.passed), [true, false], 'a kNN rule without a candidate kNN number fails');
  assert.equal(decideGate([], { linear: 0 }, {}).passed, true, 'no rules: promote');
});

test('metrics and protocol of an evaluation', () => {
  assert.deepEqual(gateMetricsOf({ kind: 'linear', top1: 0.8, details: { knn: { top1: 0.7 } } }), { linear: 0.8, knn: 0.7 });
  assert.deepEqual(gateMetricsOf({ kind: 'linear', top1: 0.8, details: { knnTop1: 0.6 } }), { linear: 0.8, knn: 0.6 });
  assert.deepEqual(gateMetricsOf({ kind: 'knn', top1: 0.5, details: null }), { knn: 0.5 });
  const legacy = probeProtocolOf({ kind: 'linear', top1: 0, details: {} }, { epochs: 10, lr: 0.1, batch: 256, seed: 4 });
  assert.deepEqual(legacy, { kind: 'linear', epochs: 10, lr: 0.1, batch: 256 });
  const stored = probeProtocolOf({ kind: 'linear', top1: 0, details: { protocol: { b: 1, a: { y: 2, x: 1 } } } }, {});
  assert.ok(sameProtocol(stored, { a: { x: 1, y: 2 }, b: 1 }), 'key order does not matter');
  assert.ok(!sameProtocol(stored, { a: { x: 1, y: 3 }, b: 1 }));
});

test('model references are the forms with an @; checkpoint references never have one', () => {
  assert.deepEqual(parseModelRef('fmnist-backbone@production'), { name: 'fmnist-backbone', selector: { alias: 'production' } });
  assert.deepEqual(parseModelRef('fmnist-backbone@v3'), { name: 'fmnist-backbone', selector: { version: 3 } });
  assert.deepEqual(parseModelRef('m.1@12'), { name: 'm.1', selector: { version: 12 } });
  for (const bad of ['fmnist-backbone', '@production', 'Fm@prod', 'm@Prod', 'm@prod@x', 'm@prod-1', '0b5c4f8e-5d5a-4c53-9d1e-0d6f6a8e2b11']) assert.equal(parseModelRef(bad), undefined, bad);
  for (const ref of ['latest', 'best', 'v3', '3', 'production']) assert.ok(CHECKPOINT_REF_PATTERN.test(ref) && !parseModelRef(ref), ref);
});
