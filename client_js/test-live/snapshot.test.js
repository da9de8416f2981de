// @ts-check
// A reader behind a gap whose conversation is larger than one frame: the server sends the
// snapshot in parts (`more: true`), the client shows the whole conversation once.
// TOOLPLEX_BIG_URL names a server whose tool returns 300 KB and whose log keeps few
// events (tests/e2e/test_client_live.py starts it and sets it).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import WebSocket from 'ws';

import { ToolplexClient, initialState } from '../toolplex.js';

const BASE = process.env.TOOLPLEX_BIG_URL ?? '';
const SKIP = BASE ? false : 'set TOOLPLEX_BIG_URL to a server with a big tool and a short log';
const RUNS = Number(process.env.TOOLPLEX_BIG_RUNS ?? '12');

/**
 * @param {ToolplexClient} client
 * @param {string} runId
 * @returns {Promise<void>} once the run has finished
 */
function finished(client, runId) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`run ${runId} did not finish`)), 20_000);
    timer.unref();
    const check = () => {
      if (client.state.runs[runId]?.status !== 'finished') return;
      clearTimeout(timer);
      client.removeEventListener('state', check);
      resolve();
    };
    client.addEventListener('state', check);
    check();
  });
}

test('a gap larger than a frame is shown as the whole conversation', { skip: SKIP }, async () => {
  const writer = new ToolplexClient({ baseUrl: BASE, WebSocket });
  await writer.connect();
  for (let i = 1; i <= RUNS; i += 1) await finished(writer, await writer.run(`run ${i}`));
  writer.close();

  // Another page of the same session whose cursor (seq 1) the log no longer has.
  const frames = /** @type {any[]} */ ([]);
  class Recording extends WebSocket {
    /** @param {string} url */
    constructor(url) {
      super(url);
      this.addEventListener('message', (m) => frames.push(JSON.parse(String(m.data))));
    }
  }
  const reader = new ToolplexClient({
    baseUrl: BASE, WebSocket: Recording, sessionId: writer.sessionId, token: writer.token,
    state: { ...initialState(), lastSeq: 1 },
  });
  const states = /** @type {any[]} */ ([]);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no snapshot')), 20_000);
    timer.unref();
    reader.addEventListener('snapshot', (e) => {
      if (/** @type {any} */ (e).frame.more) return;
      clearTimeout(timer);
      resolve(null);
    });
    reader.addEventListener('state', (e) => states.push(/** @type {any} */ (e).state));
    reader.connect().catch(reject);
  });
  reader.close();

  const parts = frames.filter((f) => f.type === 'stream.snapshot');
  assert.ok(frames.some((f) => f.type === 'stream.gap'), 'the cursor was behind the log');
  assert.ok(parts.length >= 2, `the snapshot came in ${parts.length} part(s), not several`);
  assert.deepEqual(parts.map((p) => p.more === true), [...parts.slice(1).map(() => true), false]);
  const shown = reader.state.feed.filter((f) => f.kind === 'message').map((f) => reader.state.messages[f.id])
    .filter((m) => m.snapshot).map((m) => [m.role, m.text, m.tools]);
  const expected = [];
  for (let i = 1; i <= RUNS; i += 1) {
    expected.push(['user', `run ${i}`, []], ['assistant', '', ['big']], ['assistant', 'done', []]);
  }
  assert.deepEqual(shown, expected);
  assert.equal(states.length >= 1, true, 'the snapshot was shown');
});
