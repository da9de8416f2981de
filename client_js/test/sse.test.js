// @ts-check
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { fakeFetch, sampleSession, sseResponse } from '../testing.js';
import { SSEParser, SSEReader, ToolplexClient } from '../toolplex.js';

const NO_JITTER = { base: 1, max: 8, jitter: /** @type {const} */ (false) };

/** Resolve once `predicate()` holds; fail after `ms`. Reconnects run on real 1 ms timers. */
async function until(predicate, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${predicate}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('SSE parser', () => {
  test('messages split mid-line across chunks come out whole', () => {
    const p = new SSEParser();
    assert.deepEqual(p.push('id: 1\nev'), []);
    assert.deepEqual(p.push('ent: run.started\nda'), []);
    assert.deepEqual(p.push('ta: {"seq":1}\n'), []);
    assert.deepEqual(p.push('\nid: 2\ndata: x\n\n'), [
      { id: '1', event: 'run.started', data: '{"seq":1}' },
      { id: '2', event: 'message', data: 'x' },
    ]);
    assert.equal(p.lastEventId, '2');
  });

  test('a multi-byte character split between chunks survives', () => {
    const p = new SSEParser();
    const bytes = new TextEncoder().encode('data: café\n\n');
    assert.deepEqual(p.push(bytes.slice(0, 10)), []);
    assert.deepEqual(p.push(bytes.slice(10)), [{ id: undefined, event: 'message', data: 'café' }]);
  });

  test('comment lines (heartbeats) are ignored', () => {
    const p = new SSEParser();
    assert.deepEqual(p.push(': ping\n\n:\n\nid: 3\n: in the middle\ndata: y\n\n'), [
      { id: '3', event: 'message', data: 'y' },
    ]);
  });

  test('multi-line data is joined with LF; CRLF endings are tolerated', () => {
    const p = new SSEParser();
    assert.deepEqual(p.push('data: a\ndata:b\r\ndata:  c\n\n'), [{ id: undefined, event: 'message', data: 'a\nb\n c' }]);
  });
});

describe('SSE transport', () => {
  const body = (events) => events.map((e) => `id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`).join('');

  test('the reader resumes with Last-Event-ID after the stream ends', async () => {
    const text = body(sampleSession().slice(0, 3));
    const f = fakeFetch((url, init, n) => (n === 1
      ? sseResponse([text.slice(0, 50), text.slice(50)])
      : sseResponse([], { keepOpen: true, signal: init.signal })));
    const reader = new SSEReader('http://x/v1/sessions/s/events', {
      fetch: f, headers: { Authorization: 'Bearer t' }, backoff: NO_JITTER,
    });
    const ids = /** @type {any[]} */ ([]);
    reader.addEventListener('message', (e) => ids.push(/** @type {any} */ (e).id));
    reader.start();
    await until(() => f.calls.length === 2);
    assert.deepEqual(ids, ['1', '2', '3']);
    assert.equal(f.calls[0].init.headers['Last-Event-ID'], undefined, 'first request starts from the beginning');
    assert.equal(f.calls[1].init.headers['Last-Event-ID'], '3');
    assert.equal(f.calls[1].init.headers.Authorization, 'Bearer t');
    reader.close();
  });

  test('an HTTP 401 is fatal for the reader', async () => {
    const f = fakeFetch(() => new Response('no', { status: 401 }));
    const reader = new SSEReader('http://x/e', { fetch: f, backoff: NO_JITTER });
    const errors = /** @type {any[]} */ ([]);
    reader.addEventListener('error', (e) => errors.push(e));
    reader.start();
    await until(() => errors.length === 1);
    assert.equal(errors[0].fatal, true);
    assert.equal(f.calls.length, 1);
  });

  test('the client streams over SSE and sends commands over HTTP', async () => {
    const events = sampleSession();
    const posts = /** @type {any[]} */ ([]);
    const f = fakeFetch((url, init, n) => {
      if (init.method === 'POST') {
        posts.push([url, JSON.parse(init.body), init.headers.Authorization]);
        return Response.json({ run_id: 'r_9' }, { status: 202 });
      }
      if (n === 1) return sseResponse([`: hi\n\n${body(events.slice(0, 4))}`]);
      return sseResponse([body(events.slice(2, 6))], { keepOpen: true, signal: init.signal });
    });
    const client = new ToolplexClient({ baseUrl: 'http://x', sessionId: 's 1', token: 't', transport: 'sse',
      fetch: f, backoff: NO_JITTER });
    const seen = /** @type {number[]} */ ([]);
    client.addEventListener('event', (e) => seen.push(/** @type {any} */ (e).event.seq));
    await client.connect();
    await until(() => seen.length === 6);
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6], 'the resumed stream overlapped; each seq once');
    assert.equal(f.calls[0].url, 'http://x/v1/sessions/s%201/events');
    assert.equal(f.calls[1].init.headers['Last-Event-ID'], '4');
    const runId = client.run('Batch job');
    client.cancel('r_1');
    client.cancelCall('c_1');
    client.completeJob('j_1', { approved: false });
    await until(() => posts.length === 4);
    assert.deepEqual(posts, [
      ['http://x/v1/sessions/s%201/runs', { input: 'Batch job' }, 'Bearer t'],
      ['http://x/v1/sessions/s%201/runs/r_1/cancel', {}, 'Bearer t'],
      ['http://x/v1/sessions/s%201/calls/c_1/cancel', {}, 'Bearer t'],
      ['http://x/v1/jobs/j_1/complete', { output: { approved: false } }, 'Bearer t'],
    ]);
    assert.equal(await runId, 'r_9', "run() resolves to the 202's run_id");
    client.close();
  });

  test('without a WebSocket the client falls back to SSE', () => {
    const client = new ToolplexClient({ WebSocket: null, transport: 'auto' });
    assert.equal(client.transport, typeof globalThis.WebSocket === 'function' ? 'ws' : 'sse');
    assert.equal(new ToolplexClient({ transport: 'sse' }).transport, 'sse');
  });

  test('an HTTP command error is dispatched as command-error', async () => {
    const f = fakeFetch((url, init) => (init.method === 'POST'
      ? Response.json({ error: { code: 'busy', message: 'a run is active' } }, { status: 409 })
      : sseResponse([], { keepOpen: true, signal: init.signal })));
    const client = new ToolplexClient({ baseUrl: 'http://x', sessionId: 's', token: 't', transport: 'sse', fetch: f });
    const errors = /** @type {any[]} */ ([]);
    client.addEventListener('command-error', (e) => errors.push(/** @type {any} */ (e).frame));
    await client.connect();
    client.run('x');
    await until(() => errors.length === 1);
    assert.deepEqual(errors[0], { type: 'command.error', error: { code: 'busy', message: 'a run is active' },
      ref: 'run-1' });
    client.close();
  });

  test('subscribe has no HTTP route, so the SSE client refuses it', () => {
    const client = new ToolplexClient({ transport: 'sse' });
    assert.throws(() => client.send({ type: 'subscribe', after: 0 }), TypeError);
  });
});
