// @ts-check
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { eventRecorder, sampleSession } from '../testing.js';
import { initialState, reduce, replay } from '../toolplex.js';

/** A state with one run r_1 and one call c_1 whose arguments are complete. */
function withCall(name = 'lookup') {
  const ev = eventRecorder();
  const events = [
    ev('run.started', { run_id: 'r_1', trigger: 'user', input: 'hi' }),
    ev('tool.call.start', { run_id: 'r_1', call_id: 'c_1', name, message_id: 'm_1' }),
    ev('tool.call.end', { run_id: 'r_1', call_id: 'c_1', args: { domain: 'acme.com' } }),
  ];
  return { ev, state: replay(events) };
}

/** @param {any} state @param {any[]} events */
const fold = (state, events) => events.reduce(reduce, state);

describe('tool calls', () => {
  test('tool.call.start creates a call streaming its arguments', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('run.started', { run_id: 'r_1', trigger: 'user' }),
      ev('tool.call.start', { run_id: 'r_1', call_id: 'c_1', name: 'lookup', message_id: 'm_1' }),
    ]);
    const c = s.calls.c_1;
    assert.equal(c.status, 'streaming_args');
    assert.equal(c.name, 'lookup');
    assert.equal(c.messageId, 'm_1');
    assert.equal(c.runId, 'r_1');
    assert.deepEqual(s.runs.r_1.callIds, ['c_1']);
    assert.deepEqual(s.feed.at(-1), { kind: 'call', id: 'c_1' });
  });

  test('tool.call.delta appends argument fragments as the model writes them', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('tool.call.start', { call_id: 'c_1', name: 'lookup', message_id: 'm_1' }),
      ev('tool.call.delta', { call_id: 'c_1', delta: '{"dom' }),
      ev('tool.call.delta', { call_id: 'c_1', delta: 'ain":"a"}' }),
    ]);
    assert.equal(s.calls.c_1.argsText, '{"domain":"a"}');
    assert.equal(s.calls.c_1.args, undefined);
  });

  test('tool.call.end sets the parsed args and queues the call', () => {
    const { state } = withCall();
    assert.deepEqual(state.calls.c_1.args, { domain: 'acme.com' });
    assert.equal(state.calls.c_1.status, 'queued');
    assert.equal(state.calls.c_1.timings.queuedAt, state.calls.c_1.timings.argsEndedAt);
  });

  test('tool.queued (extension) marks the call queued behind its upstream', () => {
    const { ev, state } = withCall();
    const s = reduce(state, ev('tool.queued', { call_id: 'c_1', upstream: 'apollo' }));
    assert.equal(s.calls.c_1.status, 'queued');
    assert.equal(s.calls.c_1.upstream, 'apollo');
  });

  test('tool.cached (extension) marks the call cached', () => {
    const { ev, state } = withCall();
    assert.equal(reduce(state, ev('tool.cached', { call_id: 'c_1' })).calls.c_1.cached, true);
  });

  test('tool.exec.started starts an attempt and sets startedAt once', () => {
    const { ev, state } = withCall();
    const first = ev('tool.exec.started', { call_id: 'c_1', attempt: 1, timeout_ms: 10000 });
    const s = fold(state, [first, ev('tool.exec.started', { call_id: 'c_1', attempt: 2, timeout_ms: 10000 })]);
    assert.equal(s.calls.c_1.status, 'running');
    assert.deepEqual(s.calls.c_1.attempts.map((a) => a.attempt), [1, 2]);
    assert.equal(s.calls.c_1.attempts[0].timeoutMs, 10000);
    assert.equal(s.calls.c_1.timings.startedAt, first.ts, 'startedAt is the first attempt');
  });

  test('tool.output.delta keeps chunks ordered by index, each once', () => {
    const { ev, state } = withCall();
    const chunk = (index) => ev('tool.output.delta', { call_id: 'c_1', attempt: 1, index, data: `d${index}` });
    const s = fold(state, [
      ev('tool.exec.started', { call_id: 'c_1', attempt: 1, timeout_ms: 10000 }),
      chunk(1), chunk(0), chunk(2),
    ]);
    assert.deepEqual(s.calls.c_1.chunks.map((c) => c.data), ['d0', 'd1', 'd2']);
    assert.equal(s.calls.c_1.attempts[0].chunks, s.calls.c_1.chunks, 'current view is the attempt');
    assert.equal(s.calls.c_1.timings.chunkTs.length, 3);
    const again = reduce(s, { ...chunk(0), index: 0 });
    assert.equal(again.calls.c_1.chunks.length, 3, 'an index seen before is not added again');
  });

  test('tool.timeout records the timeout and whether a retry follows', () => {
    const { ev, state } = withCall();
    const s = fold(state, [
      ev('tool.exec.started', { call_id: 'c_1', attempt: 1, timeout_ms: 500 }),
      ev('tool.timeout', { call_id: 'c_1', attempt: 1, timeout_ms: 500, will_retry: true }),
    ]);
    assert.equal(s.calls.c_1.status, 'timed_out');
    assert.equal(s.calls.c_1.timeout?.timeout_ms, 500);
    assert.equal(s.calls.c_1.timeout?.will_retry, true);
    assert.equal(s.calls.c_1.attempts[0].status, 'timed_out');
  });

  test('a retry drops the attempt output from the current view but keeps it in history', () => {
    const { ev, state } = withCall();
    const s = fold(state, [
      ev('tool.exec.started', { call_id: 'c_1', attempt: 1, timeout_ms: 10000 }),
      ev('tool.output.delta', { call_id: 'c_1', attempt: 1, index: 0, data: 'stale' }),
      ev('tool.retrying', { call_id: 'c_1', attempt: 1, delay_ms: 1000, reason: 'rate_limited',
        error: { code: 'upstream', message: '429' } }),
    ]);
    const c = s.calls.c_1;
    assert.equal(c.status, 'retrying');
    assert.deepEqual(c.chunks, [], "[protocol] a client drops that attempt's partial output");
    assert.equal(c.attempts[0].chunks[0].data, 'stale', 'the attempt history keeps it');
    assert.equal(c.attempts[0].dropped, true);
    assert.deepEqual(c.retries.map((r) => [r.attempt, r.delay_ms, r.reason, r.error?.code]),
      [[1, 1000, 'rate_limited', 'upstream']]);
    const next = fold(s, [
      ev('tool.exec.started', { call_id: 'c_1', attempt: 2, timeout_ms: 10000 }),
      ev('tool.output.delta', { call_id: 'c_1', attempt: 2, index: 0, data: 'fresh' }),
    ]);
    assert.deepEqual(next.calls.c_1.chunks.map((ch) => ch.data), ['fresh']);
  });

  test('tool.result ends the call: succeeded, or partial when cut short', () => {
    const { ev, state } = withCall();
    const ok = reduce(state, ev('tool.result', { call_id: 'c_1', output: { n: 1 }, partial: false }));
    assert.equal(ok.calls.c_1.status, 'succeeded');
    assert.deepEqual(ok.calls.c_1.output, { n: 1 });
    assert.ok(ok.calls.c_1.timings.endedAt);
    const cut = reduce(state, ev('tool.result', { call_id: 'c_1', output: [1], partial: true, cached: true }));
    assert.equal(cut.calls.c_1.status, 'partial');
    assert.equal(cut.calls.c_1.partial, true);
    assert.equal(cut.calls.c_1.cached, true, 'the server may also flag cached on the result');
  });

  test('tool.error fails the call, or marks it circuit_open for that code', () => {
    const { ev, state } = withCall();
    const failed = reduce(state, ev('tool.error', { call_id: 'c_1', error: { code: 'invalid_args', message: 'x' } }));
    assert.equal(failed.calls.c_1.status, 'failed');
    assert.deepEqual(failed.calls.c_1.error, { code: 'invalid_args', message: 'x' });
    const open = reduce(state, ev('tool.error', { call_id: 'c_1', error: { code: 'circuit_open', message: 'off' } }));
    assert.equal(open.calls.c_1.status, 'circuit_open');
  });

  test('tool.cancelled keeps the reason, the decisive call and the partial output', () => {
    const { ev, state } = withCall();
    const s = reduce(state, ev('tool.cancelled', { call_id: 'c_1', reason: 'short_circuit', by_call_id: 'c_2',
      partial_output: [1] }));
    assert.equal(s.calls.c_1.status, 'cancelled');
    assert.equal(s.calls.c_1.cancel?.reason, 'short_circuit');
    assert.equal(s.calls.c_1.cancelledBy, 'c_2');
    assert.deepEqual(s.calls.c_1.cancel?.partial_output, [1]);
  });

  test('a late non-terminal event never reopens an ended call', () => {
    const { ev, state } = withCall();
    const s = fold(state, [
      ev('tool.cancelled', { call_id: 'c_1', reason: 'user' }),
      ev('tool.exec.started', { call_id: 'c_1', attempt: 1, timeout_ms: 1 }),
    ]);
    assert.equal(s.calls.c_1.status, 'cancelled');
  });
});

describe('short-circuit and circuit breaker', () => {
  test('tool.short_circuit marks the decisive call and its cancelled siblings', () => {
    const s = replay(sampleSession());
    assert.equal(s.calls.c_2.decisive, true);
    assert.deepEqual(s.calls.c_2.cancelledCallIds, ['c_3']);
    assert.equal(s.calls.c_3.cancelledBy, 'c_2');
    assert.equal(s.calls.c_3.status, 'cancelled');
    assert.deepEqual(s.shortCircuits.map((x) => x.call_id), ['c_2']);
  });

  test('tool.circuit_open lists the tool as disabled, once', () => {
    const ev = eventRecorder();
    const s = fold(initialState(), [
      ev('tool.circuit_open', { tool: 'apollo', failures: 3 }),
      ev('tool.circuit_open', { tool: 'apollo', failures: 4 }),
    ]);
    assert.deepEqual(s.disabledTools.map((d) => [d.tool, d.failures]), [['apollo', 4]]);
  });
});

describe('jobs', () => {
  test('a job goes pending, reports progress, completes, and its run starts', () => {
    const events = sampleSession();
    const at = (type) => events.findIndex((e) => e.type === type);
    const pending = replay(events.slice(0, at('run.finished') + 1));
    const c = pending.calls.c_4;
    assert.equal(c.status, 'job_pending', 'the call ended with {job_id, status: pending}');
    assert.deepEqual(c.job && [c.job.job_id, c.job.via, c.job.status], ['j_1', 'human', 'pending']);
    assert.equal(pending.jobs.j_1, 'c_4');
    const progressed = reduce(pending, events[at('job.progress')]);
    assert.deepEqual([progressed.calls.c_4.job?.progress, progressed.calls.c_4.job?.total], [1, 2]);
    assert.equal(progressed.calls.c_4.job?.message, 'seen by a manager');
    const done = replay(events);
    assert.equal(done.calls.c_4.status, 'job_done');
    assert.equal(done.calls.c_4.job?.status, 'succeeded');
    assert.deepEqual(done.calls.c_4.job?.output, { approved: true });
    assert.equal(done.runs.r_2.trigger, 'job');
  });

  test('job events for an unknown job change nothing but the cursor', () => {
    const ev = eventRecorder();
    const s = reduce(initialState(), ev('job.progress', { job_id: 'nope', progress: 1 }));
    assert.equal(s.lastSeq, 1);
    assert.deepEqual(s.calls, {});
  });
});
