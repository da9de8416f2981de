// @ts-check
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { eventRecorder, sampleSession } from '../testing.js';
import { CALL_STATUSES, foldSnapshot, initialState, reduce, replay } from '../toolplex.js';

/** Freeze deeply, so any mutation by the reducer throws (ES modules are strict). */
function deepFreeze(value) {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** @param {any} state @param {any[]} events */
const fold = (state, events) => events.reduce(reduce, state);

describe('runs and steps', () => {
  test('initial state is empty with lastSeq 0', () => {
    const s = initialState();
    assert.equal(s.lastSeq, 0);
    assert.deepEqual(s.feed, []);
    assert.deepEqual(s.calls, {});
  });

  test('run.started creates a running run with its trigger and input', () => {
    const ev = eventRecorder();
    const e = ev('run.started', { run_id: 'r_1', trigger: 'user', input: 'Enrich acme.com' });
    const s = reduce(initialState(), e);
    assert.equal(s.runs.r_1.status, 'running');
    assert.equal(s.runs.r_1.trigger, 'user');
    assert.equal(s.runs.r_1.input, 'Enrich acme.com');
    assert.equal(s.runs.r_1.startedAt, e.ts);
    assert.deepEqual(s.runOrder, ['r_1']);
    assert.deepEqual(s.feed, [{ kind: 'run', id: 'r_1' }]);
    assert.equal(s.origin, e.ts, 'the first event is the timeline origin');
    assert.equal(s.sessionId, 's_1');
  });

  test('step.started and step.finished track each model call', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('run.started', { run_id: 'r_1', trigger: 'user' }),
      ev('step.started', { run_id: 'r_1', step: 1 }),
      ev('step.finished', { run_id: 'r_1', step: 1 }),
      ev('step.started', { run_id: 'r_1', step: 2 }),
    ]);
    assert.equal(s.runs.r_1.step, 2);
    assert.equal(s.runs.r_1.steps.length, 2);
    assert.equal(s.runs.r_1.steps[0].finishedAt, 1_764_000_000_030);
    assert.equal(s.runs.r_1.steps[1].finishedAt, null);
  });

  test('run.finished records the outcome and the finish time', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('run.started', { run_id: 'r_1', trigger: 'user' }),
      ev('run.finished', { run_id: 'r_1', outcome: 'cancelled', usage: { tokens: 3 } }),
    ]);
    assert.equal(s.runs.r_1.status, 'finished');
    assert.equal(s.runs.r_1.outcome, 'cancelled');
    assert.deepEqual(s.runs.r_1.usage, { tokens: 3 });
    assert.equal(s.runs.r_1.finishedAt, 1_764_000_000_020);
  });

  test('run.error records the error', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('run.started', { run_id: 'r_1', trigger: 'job' }),
      ev('run.error', { run_id: 'r_1', error: { code: 'internal', message: 'boom' } }),
    ]);
    assert.equal(s.runs.r_1.status, 'error');
    assert.deepEqual(s.runs.r_1.error, { code: 'internal', message: 'boom' });
  });
});

describe('messages', () => {
  test('text.start, text.delta and text.end stream one message', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('run.started', { run_id: 'r_1', trigger: 'user' }),
      ev('text.start', { run_id: 'r_1', message_id: 'm_1', role: 'assistant' }),
      ev('text.delta', { run_id: 'r_1', message_id: 'm_1', delta: 'Hel' }),
      ev('text.delta', { run_id: 'r_1', message_id: 'm_1', delta: 'lo' }),
    ]);
    assert.equal(s.messages.m_1.text, 'Hello');
    assert.equal(s.messages.m_1.status, 'streaming');
    assert.deepEqual(s.runs.r_1.messageIds, ['m_1']);
    const done = reduce(s, ev('text.end', { run_id: 'r_1', message_id: 'm_1' }));
    assert.equal(done.messages.m_1.status, 'done');
    assert.equal(done.messages.m_1.role, 'assistant');
  });

  test('reasoning.* stream a reasoning message of its own, before the text', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('run.started', { run_id: 'r_1', trigger: 'user' }),
      ev('reasoning.start', { run_id: 'r_1', message_id: 'm_r' }),
      ev('reasoning.delta', { run_id: 'r_1', message_id: 'm_r', delta: 'Two ' }),
      ev('reasoning.delta', { run_id: 'r_1', message_id: 'm_r', delta: 'lookups.' }),
      ev('reasoning.end', { run_id: 'r_1', message_id: 'm_r' }),
      ev('text.start', { run_id: 'r_1', message_id: 'm_1', role: 'assistant' }),
      ev('text.delta', { run_id: 'r_1', message_id: 'm_1', delta: 'Done.' }),
    ]);
    assert.deepEqual(s.messages.m_r, {
      ...s.messages.m_r, role: 'reasoning', text: 'Two lookups.', status: 'done' });
    assert.equal(s.messages.m_1.role, 'assistant', 'the text stays apart');
    assert.deepEqual(s.runs.r_1.messageIds, ['m_r', 'm_1']);
  });

  test('a delta whose start was lost in a gap still creates the message', () => {
    const s = reduce(initialState(), { v: 1, seq: 5, type: 'text.delta', ts: 1, session_id: 's',
      message_id: 'm_9', delta: 'x' });
    assert.equal(s.messages.m_9.text, 'x');
    assert.deepEqual(s.gaps, [{ from_seq: 1, to_seq: 4 }], 'seq 1..4 were never seen');
  });
});

describe('cursor and idempotence', () => {
  test('unknown event types are ignored but advance lastSeq', () => {
    const ev = eventRecorder();
    const s = reduce(initialState(), ev('tool.future_thing', { call_id: 'c_1' }));
    assert.equal(s.lastSeq, 1);
    assert.deepEqual(s.calls, {}, 'forward compatible: no call appears');
  });

  test('events without a seq are ignored', () => {
    const s0 = initialState();
    assert.equal(reduce(s0, /** @type {any} */ ({ type: 'stream.hello', head_seq: 3 })), s0);
  });

  test('replaying the whole log again changes nothing', () => {
    const events = sampleSession();
    const once = replay(events);
    const twice = replay(events, once);
    assert.equal(twice, once, 'every seq <= lastSeq is ignored');
    assert.deepEqual(twice, replay(events));
  });

  test('a replay from seq 1 and from the middle never doubles text or chunks', () => {
    const events = sampleSession();
    const mid = Math.floor(events.length / 2);
    const reference = replay(events);
    const reconnected = replay([...events.slice(0, mid), ...events, ...events.slice(mid - 5)]);
    assert.deepEqual(reconnected, reference);
    assert.equal(reconnected.messages.m_1.text, 'Looking up acme.com', 'text not doubled');
    assert.deepEqual(reconnected.calls.c_1.chunks.map((c) => c.index), [0, 1], 'chunks not doubled');
  });

  test('the reducer never mutates its input and shares untouched branches', () => {
    const events = sampleSession().map(deepFreeze);
    let s = deepFreeze(initialState());
    for (const e of events) {
      const next = reduce(s, e);
      deepFreeze(next);
      s = next;
    }
    const ev = eventRecorder({ t0: 0 });
    const bumped = reduce(s, { ...ev('text.delta', { message_id: 'm_4', delta: '!' }), seq: s.lastSeq + 1 });
    assert.equal(bumped.calls, s.calls, 'a text event leaves the calls object shared');
    assert.notEqual(bumped.messages, s.messages);
  });

  test('every call status the reducer produces is a documented one', () => {
    const s = replay(sampleSession());
    for (const c of Object.values(s.calls)) assert.ok(CALL_STATUSES.includes(c.status), c.status);
  });
});

describe('a run that ends leaves nothing running', () => {
  test('run.error interrupted fails the calls and ends the messages it left open', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('run.started', { run_id: 'r_1', trigger: 'user', input: 'Enrich acme.com' }),
      ev('text.start', { run_id: 'r_1', message_id: 'm_1', role: 'assistant' }),
      ev('text.delta', { run_id: 'r_1', message_id: 'm_1', delta: 'Looking' }),
      ev('tool.call.start', { run_id: 'r_1', call_id: 'c_1', name: 'apollo', message_id: 'm_1' }),
      ev('tool.exec.started', { run_id: 'r_1', call_id: 'c_1', attempt: 1, timeout_ms: 5000 }),
      ev('run.error', { run_id: 'r_1', error: { code: 'interrupted', message: 'the server restarted' } }),
    ]);
    assert.equal(s.runs.r_1.status, 'error');
    assert.equal(s.calls.c_1.status, 'failed', 'no call stays running once its run ended');
    assert.equal(s.calls.c_1.error?.code, 'interrupted');
    assert.notEqual(s.calls.c_1.timings.endedAt, null, 'its timeline bar stops');
    assert.equal(s.messages.m_1.status, 'done');
  });

  test('a call that ended on its own keeps its outcome', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('run.started', { run_id: 'r_1', trigger: 'user' }),
      ev('tool.call.start', { run_id: 'r_1', call_id: 'c_1', name: 'a' }),
      ev('tool.result', { run_id: 'r_1', call_id: 'c_1', output: 1, partial: false }),
      ev('run.finished', { run_id: 'r_1', outcome: 'success' }),
    ]);
    assert.equal(s.calls.c_1.status, 'succeeded');
  });
});

describe('snapshot messages', () => {
  const history = [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: 'Enrich acme.com' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'x', function: { name: 'apollo', arguments: '{}' } }] },
    { role: 'tool', tool_call_id: 'x', content: '{}' },
    { role: 'assistant', content: [{ type: 'text', text: 'Acme: ' }, { type: 'text', text: '120 people.' }] },
  ];

  test('user and assistant messages become done messages in the feed, in order', () => {
    const s = foldSnapshot(initialState(), { messages: history });
    const shown = s.feed.map((f) => s.messages[f.id]);
    assert.deepEqual(shown.map((m) => [m.role, m.text, m.tools, m.status, m.snapshot, m.runId]), [
      ['user', 'Enrich acme.com', [], 'done', true, null],
      ['assistant', '', ['apollo'], 'done', true, null],
      ['assistant', 'Acme: 120 people.', [], 'done', true, null],
    ]);
  });

  test('what the view already shows is not added twice, and a repeated snapshot adds nothing', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [ev('run.started', { run_id: 'r_1', trigger: 'user', input: 'Enrich acme.com' })]);
    const once = foldSnapshot(s, { messages: history });
    assert.equal(once.feed.filter((f) => f.kind === 'message').length, 2, "the run's input is not repeated");
    assert.equal(foldSnapshot(once, { messages: history }), once, 'the same object: nothing new');
    assert.equal(foldSnapshot(s, { messages: 'nope' }), s);
  });
});
