/**
 * The live metrics stream (`GET /v1/jobs/{id}/metrics` with Accept: text/event-stream), as
 * docs/api.md promises it: the points stored so far, then each new point as it arrives, every point
 * exactly once (also a second series at a step already sent), the name filter honoured, and
 * `event: end` with the final state once the job is finished.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHarness, forceState, pretrain, seedReadyDataset, type Harness } from './harness.js';

let h: Harness;
let jobId: string;

before(async () => {
  h = await createHarness();
  await seedReadyDataset(h, h.tenantA, 'metrics');
  jobId = ((await (await h.request('POST', '/v1/jobs', { body: pretrain('metrics@1') })).json()) as any).id;
  await forceState(h, jobId, 'running');
});
after(async () => h.close());

const record = (name: string, step: number, value: number) =>
  h.database.sql`insert into metrics (job_id, name, step, value) values (${jobId}, ${name}, ${step}, ${value})`;

interface SseEvent {
  event: string;
  data: any;
}

/** Reads SSE events off a response body, one at a time. */
function sseReader(res: Response) {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  return async function next(): Promise<SseEvent> {
    for (;;) {
      const end = buffer.indexOf('\n\n');
      if (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) return { event, data: JSON.parse(data) };
        continue;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended; unread: ${JSON.stringify(buffer)}`);
      buffer += value;
    }
  };
}

test('metrics stream: stored points first, then new ones once each, filtered by name, end when the job finishes', { timeout: 60_000 }, async () => {
  await record('loss', 0, 4.5);
  await record('loss', 1, 4.25);
  await record('lr', 0, 1e-4);
  const res = await h.request('GET', `/v1/jobs/${jobId}/metrics?name=loss,knnTop1`, { headers: { accept: 'text/event-stream' } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
  const next = sseReader(res);

  const seen: string[] = [];
  const take = (e: SseEvent) => {
    assert.equal(e.event, 'metrics');
    for (const p of e.data.points) seen.push(`${p.name}@${p.step}=${p.value}`);
  };
  take(await next());
  assert.deepEqual(seen, ['loss@0=4.5', 'loss@1=4.25'], 'what was stored, without the unrequested lr');

  // A new step, and a second series at a step the stream has already passed.
  await record('loss', 2, 4);
  await record('knnTop1', 1, 0.5);
  await record('lr', 2, 2e-4);
  while (seen.length < 4) take(await next());
  assert.deepEqual(seen.slice(2).sort(), ['knnTop1@1=0.5', 'loss@2=4']);

  await record('loss', 3, 3.75);
  await forceState(h, jobId, 'succeeded');
  let last = await next();
  while (last.event === 'metrics') {
    take(last);
    last = await next();
  }
  assert.deepEqual(last, { event: 'end', data: { state: 'succeeded' } });
  assert.deepEqual(seen.slice(4), ['loss@3=3.75'], 'a point stored just before the end is still sent');
  assert.equal(new Set(seen).size, seen.length, 'no point twice');
});
