// @ts-check
// The real client against a real server: TOOLPLEX_URL names it (the pytest wrapper
// tests/e2e/test_client_live.py starts one with the demo agent and sets it).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import WebSocket from 'ws';

import { ToolplexClient, replay } from '../toolplex.js';

const BASE = process.env.TOOLPLEX_URL ?? '';
const SKIP = BASE ? false : 'set TOOLPLEX_URL to a running toolplex server (the demo agent)';
const FAST = { base: 150, max: 150, jitter: /** @type {const} */ (false) };

/** A `ws` WebSocket that records, per connection, the seq range of every frame it received. */
function recordingWebSocket() {
  /** @type {RecordingWS[]} */
  const sockets = [];
  class RecordingWS extends WebSocket {
    /** @param {string} url */
    constructor(url) {
      super(url);
      /** @type {number[]} every seq this connection delivered (a merged frame covers from_seq..seq) */
      this.seqs = [];
      /** @type {any[]} frames without a seq (hello, gap, command.error) */
      this.control = [];
      this.addEventListener('message', (m) => {
        const frame = JSON.parse(String(m.data));
        if (typeof frame.seq !== 'number') { this.control.push(frame); return; }
        for (let s = frame.from_seq ?? frame.seq; s <= frame.seq; s += 1) this.seqs.push(s);
      });
      sockets.push(this);
    }
  }
  return { RecordingWS, sockets };
}

/**
 * Resolve with the first logged event that `predicate` accepts.
 *
 * @param {ToolplexClient} client
 * @param {(e: any) => boolean} predicate
 * @param {string} what for the timeout message
 * @returns {Promise<any>}
 */
function waitFor(client, predicate, what, ms = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    timer.unref(); // a failed test must not hold the process open
    const on = (/** @type {any} */ e) => {
      if (!predicate(e.event)) return;
      clearTimeout(timer);
      client.removeEventListener('event', on);
      resolve(e.event);
    };
    client.addEventListener('event', on);
  });
}

/** @param {number} n @returns {number[]} 1..n */
const upTo = (n) => Array.from({ length: n }, (_, i) => i + 1);

test('an enrichment run survives a dropped connection with every event once', { skip: SKIP }, async (t) => {
  const { RecordingWS, sockets } = recordingWebSocket();
  const client = new ToolplexClient({ baseUrl: BASE, WebSocket: RecordingWS, backoff: FAST });
  t.after(() => client.close());
  /** @type {any[]} */
  const events = [];
  /** @type {string[]} */
  const statuses = [];
  client.addEventListener('event', (e) => events.push(/** @type {any} */ (e).event));
  client.addEventListener('status', (e) => statuses.push(/** @type {any} */ (e).status));
  await client.connect();
  assert.equal(client.transport, 'ws');
  assert.match(client.sessionId, /^s_/, 'connect() created a session');

  const firstTool = waitFor(client, (e) => e.type === 'tool.exec.started', 'the first tool to start');
  const finished = waitFor(client, (e) => e.type === 'run.finished' || e.type === 'run.error', 'the run to end');
  assert.match(await client.run('Enrich acme.com'), /^r_/, 'run() resolves to the run id');
  await firstTool;

  // Drop the connection mid-run, as a network would: the run goes on, the client resumes.
  const dropped = client.lastSeq;
  sockets[0].terminate();
  const end = await finished;
  const head = end.seq;

  assert.equal(sockets.length, 2, 'one reconnect');
  assert.ok(statuses.includes('reconnecting'), `statuses: ${statuses}`);
  const [first, second] = sockets;
  assert.ok(second.seqs.length > 0 && second.seqs.at(-1) === head, 'the end came on the new connection');
  const hello = second.control.find((f) => f.type === 'stream.hello');
  assert.equal(hello?.resume_from, dropped, 'the client resumed from its last seq');
  assert.ok(hello.head_seq > dropped, 'events were logged while it was away, and replayed');
  assert.equal(second.seqs[0], dropped + 1, '[protocol] resume starts at the cursor + 1');
  assert.deepEqual([...first.seqs, ...second.seqs], upTo(head), 'the wire carried each seq once, none lost');
  assert.deepEqual(events.map((e) => e.seq), upTo(head), 'the client saw each seq once, in order');

  const state = client.state;
  const run = state.runs[end.run_id];
  assert.equal(run.outcome, 'success');
  const calls = Object.values(state.calls);
  assert.equal(calls.length, 6, 'apollo, linkedin, clearbit, verify_email, hubspot_upsert, slack_notify');
  assert.deepEqual(calls.map((c) => c.status), Array(6).fill('succeeded'), 'six tool calls ended');
  const ended = events.filter((e) => ['tool.result', 'tool.error', 'tool.cancelled'].includes(e.type));
  assert.equal(ended.length, 6, 'one terminal event per call');
  const final = state.messages[run.messageIds.at(-1)];
  assert.match(final.text, /^Acme \(acme\.com\): .* #sales was notified\.$/);

  // A fresh client replaying the whole log folds to the same view: nothing doubled or missing.
  const fresh = new ToolplexClient({ baseUrl: BASE, sessionId: client.sessionId, token: client.token,
    WebSocket });
  t.after(() => fresh.close());
  const replayed = waitFor(fresh, (e) => e.seq === head, 'the replay');
  await fresh.connect();
  await replayed;
  assert.deepEqual(fresh.state, state, 'the live view equals a replay of the log');
  assert.deepEqual(replay(events), state, 'and a replay of what the client received');
});
