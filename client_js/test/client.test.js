// @ts-check
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { fakeFetch, fakeWebSocket, sampleSession } from '../testing.js';
import { ToolplexClient, backoff, createSession } from '../toolplex.js';

const NO_JITTER = { base: 1, max: 8, jitter: /** @type {const} */ (false) };

/** Resolve once `predicate()` holds; fail after `ms`. Reconnects run on real 1 ms timers. */
async function until(predicate, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${predicate}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** A client on a fake WebSocket, its first socket open. */
async function connected(options = {}) {
  const WS = fakeWebSocket();
  const client = new ToolplexClient({
    baseUrl: 'http://127.0.0.1:8000', sessionId: 's_1', token: 't 1', WebSocket: WS, backoff: NO_JITTER, ...options,
  });
  const seen = /** @type {any[]} */ ([]);
  client.addEventListener('event', (e) => seen.push(/** @type {any} */ (e).event));
  const opened = client.connect();
  WS.instances[0].serverOpen();
  await opened;
  return { WS, client, seen, ws: WS.instances[0] };
}

describe('backoff', () => {
  test('doubles from base and stops at max', () => {
    const delays = [0, 1, 2, 3, 4, 5].map((n) => backoff(n, { base: 500, max: 8000, jitter: false }));
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 8000]);
  });

  test('equal jitter stays between half and all of the ceiling', () => {
    assert.equal(backoff(2, { base: 500, jitter: () => 0 }), 1000);
    assert.equal(backoff(2, { base: 500, jitter: () => 0.5 }), 1500);
    for (let i = 0; i < 50; i += 1) {
      const d = backoff(3, { base: 100, max: 10_000 });
      assert.ok(d >= 400 && d <= 800, `${d} outside [400, 800]`);
    }
  });

  test('a huge attempt number does not overflow', () => {
    assert.equal(backoff(10_000, { base: 500, max: 15_000, jitter: false }), 15_000);
  });
});

describe('WebSocket client', () => {
  test('connects to the ws URL with the token and its cursor', async () => {
    const { ws, client } = await connected();
    assert.equal(ws.url, 'ws://127.0.0.1:8000/v1/sessions/s_1/ws?token=t%201&after=0');
    assert.deepEqual(ws.sent, [], 'the cursor is in the URL: no subscribe frame needed');
    assert.equal(client.status, 'open');
    client.close();
  });

  test('dispatches each logged event and the reduced state', async () => {
    const { ws, client, seen } = await connected();
    const states = /** @type {any[]} */ ([]);
    client.addEventListener('state', (e) => states.push(/** @type {any} */ (e).state));
    for (const e of sampleSession().slice(0, 5)) ws.serverSend(e);
    assert.deepEqual(seen.map((e) => e.seq), [1, 2, 3, 4, 5]);
    assert.equal(states.at(-1).messages.m_1.text, 'Looking up acme.com');
    assert.equal(client.lastSeq, 5);
    client.close();
  });

  test('reconnects after a slow-reader close and resumes after lastSeq', async () => {
    const { WS, ws, client } = await connected();
    for (const e of sampleSession().slice(0, 7)) ws.serverSend(e);
    ws.serverClose(4008, 'too slow');
    await until(() => WS.instances.length === 2);
    WS.instances[1].serverOpen();
    assert.match(WS.instances[1].url, /&after=7$/, 'resume from the last seq seen');
    client.close();
  });

  test('duplicates from a replay are not dispatched again', async () => {
    const { WS, ws, client, seen } = await connected();
    const events = sampleSession();
    for (const e of events.slice(0, 10)) ws.serverSend(e);
    ws.serverClose(1006);
    await until(() => WS.instances.length === 2);
    WS.instances[1].serverOpen();
    for (const e of events.slice(0, 12)) WS.instances[1].serverSend(e);
    assert.deepEqual(seen.map((e) => e.seq), [...Array(12).keys()].map((i) => i + 1), 'each seq once');
    assert.equal(client.state.messages.m_1.text, 'Looking up acme.com');
    client.close();
  });

  test('commands sent while disconnected are queued and flushed once open', async () => {
    const { WS, ws, client } = await connected();
    ws.serverClose(1006);
    client.run('Search race');
    assert.equal(client.cancelCall('c_9'), 'queued');
    await until(() => WS.instances.length === 2);
    WS.instances[1].serverOpen();
    assert.deepEqual(WS.instances[1].sent, [
      { type: 'run.start', input: 'Search race', ref: 'run-1' },
      { type: 'tool.cancel', call_id: 'c_9' },
    ]);
    assert.equal(client.cancel('r_1'), 'sent');
    client.close();
  });

  test('each command method sends its PROTOCOL.md frame', async () => {
    const { ws, client } = await connected();
    client.run('hi');
    client.cancel('r_1');
    client.cancelCall('c_1');
    client.completeJob('j_1', { approved: true });
    assert.deepEqual(ws.sent, [
      { type: 'run.start', input: 'hi', ref: 'run-1' },
      { type: 'run.cancel', run_id: 'r_1' },
      { type: 'tool.cancel', call_id: 'c_1' },
      { type: 'job.complete', job_id: 'j_1', output: { approved: true } },
    ]);
    client.close();
  });

  test('close code 1008 (auth refused) is fatal: no reconnect', async () => {
    const { WS, ws, client } = await connected();
    const errors = /** @type {any[]} */ ([]);
    client.addEventListener('error', (e) => errors.push(e));
    ws.serverClose(1008, 'bad token');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(WS.instances.length, 1, 'no second socket');
    assert.equal(client.status, 'closed');
    assert.deepEqual([errors[0].error.code, errors[0].fatal], ['auth_refused', true]);
  });

  test('connect() rejects when the first connection is refused', async () => {
    const WS = fakeWebSocket();
    const client = new ToolplexClient({ baseUrl: 'http://x', sessionId: 's', token: 't', WebSocket: WS });
    const opening = client.connect();
    WS.instances[0].serverClose(1008);
    await assert.rejects(opening, { code: 'auth_refused' });
  });

  test('close() before the first open rejects connect()', async () => {
    const WS = fakeWebSocket();
    const client = new ToolplexClient({ baseUrl: 'http://x', sessionId: 's', token: 't', WebSocket: WS });
    const opening = client.connect();
    client.close();
    await assert.rejects(opening, { code: 'closed' });
    assert.equal(WS.instances[0].closedWith, 1000, 'the socket is closed normally');
  });

  test('events carry their payload on detail too, like CustomEvent', async () => {
    const { ws, client } = await connected();
    const details = /** @type {any[]} */ ([]);
    client.addEventListener('event', (e) => details.push(/** @type {any} */ (e).detail.seq));
    client.addEventListener('state', (e) => details.push(/** @type {any} */ (e).detail.lastSeq));
    ws.serverSend(sampleSession()[0]);
    assert.deepEqual(details, [1, 1]);
    client.close();
  });

  test('close code 1009 (oversize) reports an error and reconnects', async () => {
    const { WS, ws, client } = await connected();
    const errors = /** @type {any[]} */ ([]);
    client.addEventListener('error', (e) => errors.push(e));
    ws.serverClose(1009);
    await until(() => WS.instances.length === 2);
    assert.deepEqual([errors[0].error.code, errors[0].fatal], ['oversize', false]);
    client.close();
  });

  test('hello, gap, snapshot and command.error frames are dispatched, not logged', async () => {
    const { ws, client, seen } = await connected();
    const frames = /** @type {string[]} */ ([]);
    for (const t of ['hello', 'gap', 'snapshot', 'command-error']) client.addEventListener(t, () => frames.push(t));
    const later = sampleSession().slice(40, 42);
    ws.serverSend({ type: 'stream.hello', session_id: 's_1', head_seq: 42, resume_from: 1 });
    ws.serverSend({ type: 'stream.gap', from_seq: 1, to_seq: 40 });
    ws.serverSend({ type: 'stream.snapshot', events: later });
    ws.serverSend({ type: 'command.error', error: { code: 'unknown_command', message: 'no' }, ref: 'x' });
    ws.serverSend('not json');
    assert.deepEqual(frames, ['hello', 'gap', 'snapshot', 'command-error']);
    assert.deepEqual(seen.map((e) => e.seq), [41, 42], 'snapshot events are folded like logged ones');
    assert.deepEqual(client.state.gaps, [{ from_seq: 1, to_seq: 40 }]);
    client.close();
  });

  test('run() resolves to the run id the server accepted (command.ok)', async () => {
    const { ws, client } = await connected();
    const started = client.run('Enrich acme.com');
    const frame = ws.sent.at(-1);
    assert.equal(frame.type, 'run.start');
    ws.serverSend({ type: 'command.ok', ref: frame.ref, run_id: 'r_42' });
    assert.equal(await started, 'r_42');
    client.close();
  });

  test('run() rejects with the refusal, which is also a command-error', async () => {
    const { ws, client } = await connected();
    const errors = /** @type {any[]} */ ([]);
    client.addEventListener('command-error', (e) => errors.push(/** @type {any} */ (e).frame.error.code));
    const started = client.run('again');
    ws.serverSend({ type: 'command.error', ref: ws.sent.at(-1).ref,
      error: { code: 'run_active', message: 'a run is already active' } });
    await assert.rejects(started, { code: 'run_active' });
    assert.deepEqual(errors, ['run_active']);
    client.close();
  });

  test('a run() queued while offline resolves after the reconnect', async () => {
    const { WS, ws, client } = await connected();
    ws.serverClose(1006);
    const started = client.run('later');
    await until(() => WS.instances.length === 2);
    WS.instances[1].serverOpen();
    const frame = WS.instances[1].sent.find((f) => f.type === 'run.start');
    WS.instances[1].serverSend({ type: 'command.ok', ref: frame.ref, run_id: 'r_7' });
    assert.equal(await started, 'r_7');
    client.close();
  });

  test('a run() sent but unanswered when the socket drops rejects, not hangs', async () => {
    const { ws, client } = await connected();
    const started = client.run('lost');
    ws.serverClose(1006);
    await assert.rejects(started, { code: 'disconnected' });
    client.close();
  });

  test("transport 'ws' with no WebSocket implementation rejects connect() clearly", async () => {
    const saved = globalThis.WebSocket;
    // @ts-ignore: Node 20 has no global WebSocket; Node 22 has one, hidden here.
    delete globalThis.WebSocket;
    try {
      const client = new ToolplexClient({ baseUrl: 'http://x', sessionId: 's', token: 't', transport: 'ws' });
      const errors = /** @type {any[]} */ ([]);
      client.addEventListener('error', (e) => errors.push(e));
      await assert.rejects(client.connect(), (err) => {
        assert.equal(/** @type {any} */ (err).code, 'no_websocket');
        assert.match(String(/** @type {any} */ (err).message), /WebSocket implementation/);
        return true;
      });
      assert.deepEqual([errors[0].error.code, errors[0].fatal], ['no_websocket', true]);
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });

  test('a snapshot\'s messages are folded into the view model', async () => {
    const { ws, client } = await connected();
    const states = /** @type {any[]} */ ([]);
    client.addEventListener('state', (e) => states.push(/** @type {any} */ (e).state));
    ws.serverSend({ type: 'stream.gap', from_seq: 1, to_seq: 30 });
    ws.serverSend({ type: 'stream.snapshot', session_id: 's_1', messages: [
      { role: 'user', content: 'Enrich acme.com' },
      { role: 'assistant', content: 'Researching.', tool_calls: [{ id: 'x', type: 'function', function: { name: 'apollo', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'x', content: '{"company": "Acme"}' },
      { role: 'assistant', content: 'Acme is a Lyon company.' },
    ] });
    const shown = client.state.feed.map((f) => client.state.messages[f.id]).map((m) => [m.role, m.text, m.tools]);
    assert.deepEqual(shown, [
      ['user', 'Enrich acme.com', []], ['assistant', 'Researching.', ['apollo']],
      ['assistant', 'Acme is a Lyon company.', []],
    ]);
    assert.equal(states.length, 1, 'one state event for the snapshot');
    client.close();
  });

  test('a snapshot in parts (more: true) is folded once, as one history', async () => {
    const { ws, client } = await connected();
    const states = /** @type {any[]} */ ([]);
    client.addEventListener('state', (e) => states.push(/** @type {any} */ (e).state));
    ws.serverSend({ type: 'stream.gap', from_seq: 1, to_seq: 90 });
    // The server cuts a history over max_event_bytes into parts; repeated texts are
    // separate messages, whichever part they are in.
    ws.serverSend({ type: 'stream.snapshot', session_id: 's_1', more: true, messages: [
      { role: 'user', content: 'first' }, { role: 'assistant', content: 'ok' }] });
    ws.serverSend({ type: 'stream.snapshot', session_id: 's_1', more: true, messages: [
      { role: 'user', content: 'second' }, { role: 'assistant', content: 'ok' }] });
    assert.equal(states.length, 0, 'nothing shown before the last part');
    ws.serverSend({ type: 'stream.snapshot', session_id: 's_1', messages: [
      { role: 'user', content: 'third' }, { role: 'assistant', content: 'ok' }] });
    const shown = client.state.feed.map((f) => client.state.messages[f.id]).map((m) => [m.role, m.text]);
    assert.deepEqual(shown, [['user', 'first'], ['assistant', 'ok'], ['user', 'second'],
      ['assistant', 'ok'], ['user', 'third'], ['assistant', 'ok']]);
    assert.equal(states.length, 1, 'one state event for the whole snapshot');
    client.close();
  });

  test('connect() without a session creates one first', async () => {
    const WS = fakeWebSocket();
    const f = fakeFetch(() => Response.json({ session_id: 's_new', token: 'tok' }));
    const client = new ToolplexClient({ baseUrl: 'http://h:1/', WebSocket: WS, fetch: f });
    const opening = client.connect();
    await until(() => WS.instances.length === 1);
    WS.instances[0].serverOpen();
    await opening;
    assert.equal(f.calls[0].url, 'http://h:1/v1/sessions');
    assert.equal(f.calls[0].init.method, 'POST');
    assert.equal(WS.instances[0].url, 'ws://h:1/v1/sessions/s_new/ws?token=tok&after=0');
    assert.deepEqual([client.sessionId, client.token], ['s_new', 'tok']);
    client.close();
  });

  test('createSession returns the session id and token', async () => {
    const f = fakeFetch(() => Response.json({ session_id: 's_2', token: 'k' }, { status: 201 }));
    assert.deepEqual(await createSession('https://a.b', { fetch: f }), { session_id: 's_2', token: 'k' });
  });
});
